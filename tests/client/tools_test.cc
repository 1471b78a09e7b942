// The shipped command-line tools against real servers on 127.0.0.1:0:
// segkvctl (every command, table and JSON output, exit codes), segkv-bench
// (a short load against segkvd and against segkv-noop-server).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "server/server.h"

namespace segkv {
namespace {

using ::testing::ElementsAre;
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

// The unsigned values of every "field":N of a JSON output, in order.
std::vector<uint64_t> JsonUints(const std::string& json, const std::string& field) {
  std::vector<uint64_t> values;
  const std::string needle = absl::StrCat("\"", field, "\":");
  for (size_t at = json.find(needle); at != std::string::npos; at = json.find(needle, at + 1)) {
    size_t i = at + needle.size();
    uint64_t v = 0;
    const size_t start = i;
    while (i < json.size() && absl::ascii_isdigit(json[i])) v = v * 10 + (json[i++] - '0');
    EXPECT_GT(i, start) << "not an unsigned number: " << json.substr(at, 40);
    values.push_back(v);
  }
  return values;
}

// The lines of a table output split into cells, header first.
std::vector<std::vector<std::string>> TableRows(const std::string& out) {
  std::vector<std::vector<std::string>> rows;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    rows.push_back(absl::StrSplit(line, ' ', absl::SkipEmpty()));
  }
  return rows;
}

// Puts every pair in one BatchWrite.
void PutAll(client::Client& c, const std::vector<std::pair<std::string, std::string>>& kvs) {
  v1::BatchWriteRequest req;
  for (const auto& [k, v] : kvs) {
    auto* put = req.add_ops()->mutable_put();
    put->set_key(k);
    put->set_value(v);
  }
  auto resp = c.BatchWrite(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  for (const auto& r : resp->results()) ASSERT_EQ(r.status().code(), 0) << r.status().message();
}

// A value of 4000 bytes that names its key and round.
std::string RoundValue(absl::string_view key, int round) {
  std::string v = absl::StrCat(key, "@", round, ":");
  v.resize(4000, 'x');
  return v;
}

class ToolsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = std::string(tmp != nullptr ? tmp : "/tmp") + "/segkv-tools-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_.data()), nullptr);
    options_.listen = "127.0.0.1:0";
    options_.data_dir = dir_;
    options_.workers = 2;
    options_.partition.segment_size = 1 << 20;
    options_.partition.max_value_size = 64 << 10;
    options_.limits.max_value_size = 64 << 10;
    StartServer();
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
    std::filesystem::remove_all(dir_);
  }
  void StartServer() {
    auto s = server::Server::Start(options_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
  }
  // Restarts on the same data; with `wipe`, on a new data directory (to
  // change the segment size).
  void Restart(bool wipe) {
    server_->Shutdown(absl::Seconds(5));
    server_.reset();
    if (wipe) std::filesystem::remove_all(dir_);
    StartServer();
  }
  std::unique_ptr<client::Client> NewClient() {
    client::ClientOptions co;
    co.endpoint = server_->address();
    return std::make_unique<client::Client>(co);
  }
  Result Ctl(const std::string& args) {
    return Exec(absl::StrCat(Runfile("client/segkvctl"), " --endpoint=", server_->address(),
                             " ", args));
  }

  std::string dir_;
  server::ServerOptions options_;
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

// Arguments that start with '-' are flags unless they follow "--".
TEST_F(ToolsTest, SegkvctlKeysAndValuesStartingWithADash) {
  Result bad = Ctl("put -dash -value");
  EXPECT_EQ(bad.exit_code, 2) << bad.out;
  Result put = Ctl("put -- -dash -value");
  ASSERT_EQ(put.exit_code, 0) << put.out;
  Result get = Ctl("-w json get -- -dash");
  EXPECT_EQ(get.exit_code, 0) << get.out;
  EXPECT_THAT(get.out, HasSubstr("\"-value\""));
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
  // Every field of PartitionStatus, by its proto name; an unset optional
  // one (no compaction running) is left out.
  const google::protobuf::Descriptor* d = segkv::v1::PartitionStatus::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const std::string name = d->field(i)->name();
    if (name == "compacting_segment") {
      EXPECT_THAT(status_json.out, Not(HasSubstr("\"" + name + "\"")));
    } else {
      EXPECT_THAT(status_json.out, HasSubstr("\"" + name + "\"")) << name;
    }
  }
  Result segments = Ctl("segments");
  EXPECT_EQ(segments.exit_code, 0) << segments.out;
  EXPECT_EQ(Ctl("sync").exit_code, 0);
}

TEST_F(ToolsTest, SegkvctlCheckpoint) {
  std::unique_ptr<client::Client> c = NewClient();
  std::vector<std::pair<std::string, std::string>> kvs;
  for (int i = 0; i < 100; ++i) kvs.emplace_back(absl::StrCat("k", i), absl::StrCat("v", i));
  PutAll(*c, kvs);
  auto before = c->Status();
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->partitions_size(), 2);

  Result table = Ctl("checkpoint");
  ASSERT_EQ(table.exit_code, 0) << table.out;
  auto st = c->Status();
  ASSERT_TRUE(st.ok()) << st.status();
  std::vector<std::vector<std::string>> rows = TableRows(table.out);
  ASSERT_EQ(rows.size(), 3u) << table.out;
  EXPECT_THAT(rows[0], ElementsAre("PARTITION", "CHECKPOINT", "COVERED_ADDRESS", "BYTES",
                                   "SYNC_MS", "COPY_MS", "WRITE_SECONDS"));
  for (int p = 0; p < 2; ++p) {
    const v1::PartitionStatus& s = st->partitions(p);
    ASSERT_EQ(rows[p + 1].size(), 7u) << table.out;
    EXPECT_EQ(rows[p + 1][0], absl::StrCat(p));
    EXPECT_EQ(rows[p + 1][1], "1");
    EXPECT_EQ(rows[p + 1][2], absl::StrCat(before->partitions(p).tail_address()));
    EXPECT_EQ(rows[p + 1][3], absl::StrCat(s.last_checkpoint_bytes()));
    EXPECT_EQ(s.last_checkpoint_id(), 1u);
    EXPECT_EQ(s.checkpoints_taken(), 1u);
  }

  // No writes since: a second checkpoint of the same log.
  Result json = Ctl("-w json checkpoint");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  st = c->Status();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(absl::StartsWith(json.out, "[{\"partition\":0,\"id\":2,")) << json.out;
  EXPECT_THAT(JsonUints(json.out, "partition"), ElementsAre(0, 1));
  EXPECT_THAT(JsonUints(json.out, "id"), ElementsAre(2, 2));
  EXPECT_THAT(JsonUints(json.out, "covered_address"),
              ElementsAre(before->partitions(0).tail_address(),
                          before->partitions(1).tail_address()));
  EXPECT_THAT(JsonUints(json.out, "bytes"),
              ElementsAre(st->partitions(0).last_checkpoint_bytes(),
                          st->partitions(1).last_checkpoint_bytes()));
  EXPECT_THAT(json.out, HasSubstr("\"copy_ms\":"));
  EXPECT_THAT(json.out, HasSubstr("\"sync_ms\":"));
  EXPECT_THAT(json.out, HasSubstr("\"write_seconds\":"));

  Result status_json = Ctl("-w json status");
  ASSERT_EQ(status_json.exit_code, 0) << status_json.out;
  EXPECT_THAT(JsonUints(status_json.out, "last_checkpoint_id"), ElementsAre(2, 2));
  EXPECT_THAT(JsonUints(status_json.out, "checkpoints_taken"), ElementsAre(2, 2));
  Result status = Ctl("status");
  ASSERT_EQ(status.exit_code, 0) << status.out;
  rows = TableRows(status.out);
  ASSERT_EQ(rows.size(), 3u) << status.out;
  ASSERT_GE(rows[0].size(), 9u);
  EXPECT_EQ(rows[0][7], "CHECKPOINT");
  EXPECT_EQ(rows[0][8], "RECOVERED_FROM");
  for (int p = 1; p <= 2; ++p) {
    ASSERT_GE(rows[p].size(), 9u) << status.out;
    EXPECT_EQ(rows[p][7], "2");
    EXPECT_EQ(rows[p][8], "replay");  // a new data directory
  }

  // After a restart, status says which checkpoint each partition came from.
  c.reset();
  Restart(/*wipe=*/false);
  Result restarted = Ctl("-w json status");
  ASSERT_EQ(restarted.exit_code, 0) << restarted.out;
  EXPECT_THAT(JsonUints(restarted.out, "recovered_from_checkpoint"), ElementsAre(2, 2));
  EXPECT_THAT(JsonUints(restarted.out, "recovered_records"), ElementsAre(0, 0));
  Result restarted_table = Ctl("status");
  EXPECT_THAT(restarted_table.out, HasSubstr("checkpoint 2"));
  EXPECT_THAT(restarted_table.out, Not(HasSubstr("replay")));
}

TEST_F(ToolsTest, SegkvctlCompact) {
  options_.partition.segment_size = 256 << 10;
  options_.partition.compaction_dead_ratio = 0.5;
  options_.partition.checkpoint_interval = absl::ZeroDuration();
  Restart(/*wipe=*/true);
  std::unique_ptr<client::Client> c = NewClient();
  // 150 cold keys fill segment 0 of each partition, a tenth of them
  // overwritten (under the threshold); 10 hot keys overwritten 40 times
  // leave whole segments dead.
  std::vector<std::pair<std::string, std::string>> cold, rewrite;
  for (int i = 0; i < 150; ++i) {
    const std::string k = absl::StrCat("cold/", i);
    cold.emplace_back(k, RoundValue(k, 0));
    if (i % 10 == 0) rewrite.emplace_back(k, RoundValue(k, 1));
  }
  PutAll(*c, cold);
  PutAll(*c, rewrite);
  for (int round = 0; round < 40; ++round) {
    std::vector<std::pair<std::string, std::string>> hot;
    for (int j = 0; j < 10; ++j) {
      const std::string k = absl::StrCat("hot/", j);
      hot.emplace_back(k, RoundValue(k, round));
    }
    PutAll(*c, hot);
  }

  Result bad = Ctl("compact --min_dead_ratio=1.5");
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_THAT(bad.out, HasSubstr("INVALID_ARGUMENT"));
  Result junk = Ctl("compact --min_dead_ratio=lots");
  EXPECT_EQ(junk.exit_code, 2) << junk.out;
  EXPECT_EQ(Ctl("compact extra").exit_code, 2);

  // Without --min_dead_ratio: the server's threshold (0.5).
  Result table = Ctl("compact");
  ASSERT_EQ(table.exit_code, 0) << table.out;
  std::vector<std::vector<std::string>> rows = TableRows(table.out);
  ASSERT_EQ(rows.size(), 3u) << table.out;
  EXPECT_THAT(rows[0], ElementsAre("PARTITION", "SEGMENTS_COMPACTED", "BYTES_RECLAIMED",
                                   "RECORDS_RELOCATED"));
  EXPECT_EQ(rows[1][0], "0");
  EXPECT_EQ(rows[2][0], "1");
  auto st = c->Status();
  ASSERT_TRUE(st.ok()) << st.status();
  for (const v1::PartitionStatus& s : st->partitions()) {
    EXPECT_GT(s.segments_compacted(), 0u);
    EXPECT_LT(s.max_segment_dead_ratio(), 0.5);
    EXPECT_GT(s.max_segment_dead_ratio(), 0.0);  // segment 0: dead, but under 0.5
  }
  // Nothing is left at the threshold.
  Result json = Ctl("-w json compact");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  EXPECT_THAT(JsonUints(json.out, "partition"), ElementsAre(0, 1));
  EXPECT_THAT(JsonUints(json.out, "segments_compacted"), ElementsAre(0, 0));
  EXPECT_THAT(JsonUints(json.out, "bytes_reclaimed"), ElementsAre(0, 0));
  EXPECT_THAT(JsonUints(json.out, "records_relocated"), ElementsAre(0, 0));

  // --min_dead_ratio=0: any dead byte.
  Result zero = Ctl("-w json compact --min_dead_ratio=0");
  ASSERT_EQ(zero.exit_code, 0) << zero.out;
  auto after = c->Status();
  ASSERT_TRUE(after.ok()) << after.status();
  const std::vector<uint64_t> compacted = JsonUints(zero.out, "segments_compacted");
  const std::vector<uint64_t> reclaimed = JsonUints(zero.out, "bytes_reclaimed");
  const std::vector<uint64_t> relocated = JsonUints(zero.out, "records_relocated");
  ASSERT_EQ(compacted.size(), 2u) << zero.out;
  ASSERT_EQ(reclaimed.size(), 2u) << zero.out;
  ASSERT_EQ(relocated.size(), 2u) << zero.out;
  for (int p = 0; p < 2; ++p) {
    const v1::PartitionStatus& a = after->partitions(p);
    const v1::PartitionStatus& b = st->partitions(p);
    EXPECT_GT(compacted[p], 0u);
    EXPECT_GT(relocated[p], 0u);
    EXPECT_EQ(compacted[p], a.segments_compacted() - b.segments_compacted());
    EXPECT_EQ(reclaimed[p], a.bytes_reclaimed() - b.bytes_reclaimed());
    EXPECT_EQ(relocated[p], a.records_relocated() - b.records_relocated());
    EXPECT_EQ(a.max_segment_dead_ratio(), 0.0);
  }
  Result zero_table = Ctl("compact --min_dead_ratio=0");
  ASSERT_EQ(zero_table.exit_code, 0) << zero_table.out;
  rows = TableRows(zero_table.out);
  ASSERT_EQ(rows.size(), 3u) << zero_table.out;
  EXPECT_THAT(rows[1], ElementsAre("0", "0", "0", "0"));
  EXPECT_THAT(rows[2], ElementsAre("1", "0", "0", "0"));

  // Every key still reads its latest value.
  for (int i = 0; i < 150; ++i) {
    const std::string k = absl::StrCat("cold/", i);
    auto get = c->Get(k);
    ASSERT_TRUE(get.ok()) << get.status();
    EXPECT_EQ(get->value(), RoundValue(k, i % 10 == 0 ? 1 : 0)) << k;
  }
  for (int j = 0; j < 10; ++j) {
    const std::string k = absl::StrCat("hot/", j);
    auto get = c->Get(k);
    ASSERT_TRUE(get.ok()) << get.status();
    EXPECT_EQ(get->value(), RoundValue(k, 39)) << k;
  }
}

// An infinite (or huge) timeout means no deadline, not one in the past.
TEST_F(ToolsTest, SegkvctlInfiniteTimeoutIsNoDeadline) {
  for (const char* timeout : {"inf", "1000000000h"}) {
    Result r = Ctl(absl::StrCat("--timeout=", timeout, " status"));
    EXPECT_EQ(r.exit_code, 0) << timeout << ": " << r.out;
  }
}

TEST_F(ToolsTest, SegkvctlErrorsAndUsage) {
  Result empty_key = Ctl("put '' v");
  EXPECT_EQ(empty_key.exit_code, 1);
  EXPECT_THAT(empty_key.out, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_EQ(Ctl("frobnicate").exit_code, 2);
  EXPECT_EQ(Ctl("get").exit_code, 2);
  EXPECT_EQ(Ctl("-w yaml get k").exit_code, 2);
  // A deadline already past would fail every call as DEADLINE_EXCEEDED.
  Result no_time = Ctl("--timeout=0s get k");
  EXPECT_EQ(no_time.exit_code, 2) << no_time.out;
  EXPECT_THAT(no_time.out, HasSubstr("--timeout"));
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

// Loads the client cannot generate are usage errors, not a crash, an
// out-of-memory or a run where every call fails.
TEST_F(ToolsTest, SegkvBenchRejectsLoadsItCannotSend) {
  const std::string bench = absl::StrCat(Runfile("bench/segkv-bench"),
                                         " --target=segkv --endpoint=", server_->address(),
                                         " --duration=100ms --warmup=0s ");
  for (const char* flags : {"--value_size=2000000000", "--value_size=0",
                            "--inflight=2000000000", "--channels=0", "--batch=10001",
                            "--mix=batch_put:100 --batch=10000 --value_size=10000"}) {
    Result r = Exec(bench + flags);
    EXPECT_EQ(r.exit_code, 2) << flags << ": " << r.out;
  }
}

TEST(NoopServerTest, RejectsBadFlags) {
  const std::string bin = Runfile("bench/segkv-noop-server");
  for (const char* flags : {"--value_size=-1", "--value_size=40000000",
                            "--max_message_bytes=100"}) {
    Result r = Exec(absl::StrCat(bin, " --listen=127.0.0.1:0 ", flags));
    EXPECT_EQ(r.exit_code, 2) << flags << ": " << r.out;
  }
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
  // A failed assertion below must not leave the server running.
  bool reaped = false;
  absl::Cleanup reap = [&] {
    if (!reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  };
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
                            " --duration=500ms --warmup=100ms --server_pid=", pid));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("errors=0"));
  // --server_pid: the server's and the client's CPU time per key, both
  // measured (a serving process uses some).
  for (const char* field : {"server_cpu_us_per_key=", "client_cpu_us_per_key="}) {
    const size_t at = r.out.find(field);
    ASSERT_NE(at, std::string::npos) << r.out;
    EXPECT_GT(std::strtod(r.out.c_str() + at + std::strlen(field), nullptr), 0.0) << r.out;
  }
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  reaped = true;
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace segkv
