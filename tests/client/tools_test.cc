// The shipped command-line tools against real servers on 127.0.0.1:0:
// segkvctl (every command, table and JSON output, exit codes), segkv-bench
// (a short load against segkvd and against segkv-noop-server).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"

namespace segkv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return std::string(srcdir != nullptr ? srcdir : ".") + "/segkv/" + path;
}

struct Result {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

Result Exec(const std::string& cmd) {
  Result r;
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) r.out.append(buf, n);
  const int status = ::pclose(f);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class ToolsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = std::string(tmp != nullptr ? tmp : "/tmp") + "/segkv-tools-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_.data()), nullptr);
    server::ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.data_dir = dir_;
    o.workers = 2;
    o.partition.segment_size = 1 << 20;
    o.partition.max_value_size = 64 << 10;
    o.limits.max_value_size = 64 << 10;
    auto s = server::Server::Start(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
  }
  void TearDown() override {
    server_->Shutdown(absl::Seconds(5));
    std::filesystem::remove_all(dir_);
  }
  Result Ctl(const std::string& args) {
    return Exec(absl::StrCat(Runfile("client/segkvctl"), " --endpoint=", server_->address(),
                             " ", args));
  }

  std::string dir_;
  std::unique_ptr<server::Server> server_;
};

TEST_F(ToolsTest, SegkvctlPutGetDelete) {
  Result put = Ctl("put greeting hello");
  ASSERT_EQ(put.exit_code, 0) << put.out;
  Result get = Ctl("get greeting");
  EXPECT_EQ(get.exit_code, 0) << get.out;
  EXPECT_THAT(get.out, HasSubstr("hello"));
  Result json = Ctl("-w json get greeting");
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_THAT(json.out, HasSubstr("\"found\":true"));
  EXPECT_THAT(json.out, HasSubstr("\"hello\""));
  Result del = Ctl("del greeting");
  EXPECT_EQ(del.exit_code, 0) << del.out;
  Result missing = Ctl("get greeting");
  EXPECT_EQ(missing.exit_code, 0);
  EXPECT_THAT(missing.out, HasSubstr("(not found)"));
  Result missing_json = Ctl("-w json get greeting");
  EXPECT_THAT(missing_json.out, HasSubstr("{\"found\":false}"));
}

TEST_F(ToolsTest, SegkvctlCompareAndSetFailureExitsOne) {
  ASSERT_EQ(Ctl("put k v1").exit_code, 0);
  Result cas = Ctl("put k v2 --expected_version=0");
  EXPECT_EQ(cas.exit_code, 1);
  EXPECT_THAT(cas.out, HasSubstr("FAILED_PRECONDITION"));
  Result get = Ctl("get k");
  EXPECT_THAT(get.out, HasSubstr("v1"));
}

TEST_F(ToolsTest, SegkvctlScanStatusSegmentsSync) {
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(Ctl(absl::StrCat("put user/", i, " v", i)).exit_code, 0);
  }
  ASSERT_EQ(Ctl("put other x").exit_code, 0);
  Result scan = Ctl("-w json scan --prefix=user/");
  ASSERT_EQ(scan.exit_code, 0) << scan.out;
  for (int i = 0; i < 20; ++i) EXPECT_THAT(scan.out, HasSubstr(absl::StrCat("\"user/", i, "\"")));
  EXPECT_THAT(scan.out, Not(HasSubstr("other")));
  Result status = Ctl("status");
  ASSERT_EQ(status.exit_code, 0) << status.out;
  EXPECT_THAT(status.out, HasSubstr("always"));
  Result status_json = Ctl("-w json status");
  EXPECT_THAT(status_json.out, HasSubstr("\"keys\""));
  Result segments = Ctl("segments");
  EXPECT_EQ(segments.exit_code, 0) << segments.out;
  EXPECT_EQ(Ctl("sync").exit_code, 0);
}

TEST_F(ToolsTest, SegkvctlErrorsAndUsage) {
  Result empty_key = Ctl("put '' v");
  EXPECT_EQ(empty_key.exit_code, 1);
  EXPECT_THAT(empty_key.out, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_EQ(Ctl("frobnicate").exit_code, 2);
  EXPECT_EQ(Ctl("get").exit_code, 2);
  EXPECT_EQ(Ctl("-w yaml get k").exit_code, 2);
  Result down = Exec(Runfile("client/segkvctl") + " --endpoint=127.0.0.1:1 --timeout=1s get k");
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_THAT(down.out, HasSubstr("UNAVAILABLE"));
}

TEST_F(ToolsTest, SegkvBenchDrivesSegkvd) {
  Result r = Exec(absl::StrCat(Runfile("bench/segkv-bench"), " --target=segkv --endpoint=",
                            server_->address(),
                            " --mix=put:50,get:40,batch_put:10 --batch=10 --keys=1000"
                            " --inflight=8 --channels=2 --threads=1 --duration=1s"
                            " --warmup=100ms --preload --json"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("segkv-bench target=segkv"));
  EXPECT_THAT(r.out, HasSubstr("\"errors\":0"));
  EXPECT_THAT(r.out, Not(HasSubstr("\"ops\":0,")));
}

TEST(NoopServerTest, ServesSegkvBenchAndStopsOnSigterm) {
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const std::string bin = Runfile("bench/segkv-noop-server");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    execl(bin.c_str(), bin.c_str(), "--listen=127.0.0.1:0", static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  ::close(out[1]);
  FILE* f = ::fdopen(out[0], "r");
  char line[256] = {0};
  ASSERT_NE(std::fgets(line, sizeof(line), f), nullptr);
  std::fclose(f);
  std::string s = line;
  const std::string prefix = "segkv-noop-server listening on ";
  ASSERT_TRUE(absl::StartsWith(s, prefix)) << s;
  const std::string address = s.substr(prefix.size(), s.find('\n') - prefix.size());
  Result r = Exec(absl::StrCat(Runfile("bench/segkv-bench"), " --target=noop --endpoint=", address,
                            " --mix=get:100 --inflight=4 --threads=1 --channels=1"
                            " --duration=500ms --warmup=100ms"));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("errors=0"));
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace segkv
