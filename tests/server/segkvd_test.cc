// The real segkvd process under a write load (--durability=always): SIGTERM
// (graceful, exit 0) or SIGKILL (crash) loses no acknowledged write, and a
// restarted segkvd serves every acknowledged value.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "gtest/gtest.h"

namespace segkv {
namespace {

std::string SegkvdPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return std::string(srcdir != nullptr ? srcdir : ".") + "/segkv/server/segkvd";
}

// A segkvd child process on 127.0.0.1:0.
class Segkvd {
 public:
  explicit Segkvd(const std::string& data_dir, const std::string& grace = "5s",
                  const std::string& lame_duck = "0s") {
    int out[2];
    EXPECT_EQ(::pipe(out), 0);
    // Built before fork(): the child only execs.
    const std::string bin = SegkvdPath();
    const std::string dir = "--data_dir=" + data_dir;
    const std::string grace_flag = "--shutdown_grace=" + grace;
    const std::string lame_duck_flag = "--lame_duck=" + lame_duck;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      execl(bin.c_str(), bin.c_str(), "--listen=127.0.0.1:0", dir.c_str(), "--workers=2",
            "--durability=always", "--segment_size=1048576", "--max_value_size=65536",
            grace_flag.c_str(), lame_duck_flag.c_str(), static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    ::close(out[1]);
    // The first stdout line says where it listens: that is the readiness
    // signal (partitions recovered, port bound). Bounded: a segkvd that
    // hangs at start fails the test instead of hanging it.
    std::string s;
    const absl::Time limit = absl::Now() + absl::Seconds(60);
    while (s.find('\n') == std::string::npos && absl::Now() < limit) {
      pollfd p{.fd = out[0], .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(out[0], buf, sizeof(buf));
      if (n <= 0) break;  // exited
      s.append(buf, static_cast<size_t>(n));
    }
    ::close(out[0]);
    const std::string prefix = "segkvd listening on ";
    if (absl::StartsWith(s, prefix) && s.find('\n') != std::string::npos) {
      address_ = s.substr(prefix.size(), s.find('\n') - prefix.size());
    }
  }
  ~Segkvd() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Sends `sig` (SIGTERM by default) and returns the wait status.
  int Terminate(int sig = SIGTERM) {
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::string address_;
};

// Writes from 4 threads until `sig` stops the server, then restarts it and
// checks every acknowledged write. Returns the first server's wait status.
int LoadKillRestartCheck(int sig) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/segkvd-sigterm-XXXXXX";
  EXPECT_NE(::mkdtemp(dir.data()), nullptr);

  std::map<std::string, std::string> acked;
  absl::Mutex mu;
  int status = -1;
  {
    Segkvd server(dir);
    EXPECT_FALSE(server.address().empty()) << "segkvd did not start";
    if (server.address().empty()) return status;
    client::ClientOptions co;
    co.endpoint = server.address();
    client::Client c(co);
    std::atomic<int> acks{0};
    std::atomic<int> failures{0};
    std::vector<std::thread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        for (int i = 0; failures.load() < 50; ++i) {
          const std::string key = absl::StrCat("w", t, "-", i);
          const std::string value = absl::StrCat("value-", t, "-", i);
          if (c.Put(key, value).ok()) {
            absl::MutexLock l(&mu);
            acked[key] = value;
            ++acks;
          } else {
            ++failures;
          }
        }
      });
    }
    const absl::Time limit = absl::Now() + absl::Seconds(120);
    while (acks.load() < 300 && failures.load() < 50 && absl::Now() < limit) {
      std::this_thread::yield();
    }
    EXPECT_GE(acks.load(), 300) << failures.load() << " writes failed";
    status = server.Terminate(sig);
    for (auto& w : writers) w.join();
  }
  EXPECT_GE(acked.size(), 300u);

  Segkvd again(dir);
  EXPECT_FALSE(again.address().empty());
  if (again.address().empty()) return status;
  size_t missing = 0;
  {
    client::ClientOptions co;
    co.endpoint = again.address();
    client::Client c(co);
    for (const auto& [key, value] : acked) {
      auto got = c.Get(key);
      EXPECT_TRUE(got.ok()) << got.status();
      if (!got.ok()) return status;
      if (!got->found() || got->value() != value) ++missing;
    }
  }  // closed before the shutdown: an idle C++ channel holds it up to 5 s
  EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged writes";
  EXPECT_EQ(again.Terminate(), 0);
  std::filesystem::remove_all(dir);
  return status;
}

// Durations that would overflow a deadline or a gRPC int are refused with
// exit code 2 (usage), before anything is started or written.
TEST(SegkvdTest, DurationFlagsOutOfRangeExitTwo) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/segkvd-flags";
  for (const char* flag : {"--lame_duck=inf", "--lame_duck=25h", "--shutdown_grace=inf",
                           "--shutdown_grace=-1s", "--keepalive_time=0", "--keepalive_time=inf"}) {
    const std::string bin = SegkvdPath();
    const std::string d = "--data_dir=" + dir;
    pid_t pid = ::fork();
    if (pid == 0) {
      execl(bin.c_str(), bin.c_str(), "--listen=127.0.0.1:0", d.c_str(), flag,
            static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << flag;
    EXPECT_EQ(WEXITSTATUS(status), 2) << flag;
  }
  EXPECT_FALSE(std::filesystem::exists(dir)) << "a refused start created the data dir";
}

TEST(SegkvdTest, SigtermDuringLoadLosesNoAcknowledgedWrite) {
  const int status = LoadKillRestartCheck(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A crash of the process (not of the machine): under --durability=always
// every acknowledged write was fdatasync'ed before its answer.
TEST(SegkvdTest, SigkillDuringLoadLosesNoAcknowledgedWrite) {
  const int status = LoadKillRestartCheck(SIGKILL);
  EXPECT_TRUE(WIFSIGNALED(status)) << status;
}

// The health status a grpc.health.v1 Check answers: "\x08\x01" SERVING,
// "\x08\x02" NOT_SERVING; empty if the call failed.
std::string HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice empty("");
  grpc::ByteBuffer req(&empty, 1), resp;
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", req, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&resp, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok || !status.ok()) return "";
  std::vector<grpc::Slice> slices;
  resp.Dump(&slices).IgnoreError();
  std::string out;
  for (const auto& sl : slices) out.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  return out;
}

// A shutdown that is waiting (here: a 120 s lame duck, health already
// NOT_SERVING) ends at once on a second signal, with exit status 1.
TEST(SegkvdTest, SecondSignalDuringShutdownExitsAtOnce) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/segkvd-twice-XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  Segkvd server(dir, "120s", "120s");
  ASSERT_FALSE(server.address().empty());
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  ASSERT_EQ(HealthCheck(channel), std::string("\x08\x01", 2));
  const absl::Time start = absl::Now();
  ASSERT_EQ(::kill(server.pid(), SIGTERM), 0);
  // The shutdown has begun once health says NOT_SERVING.
  std::string health;
  while ((health = HealthCheck(channel)) != std::string("\x08\x02", 2)) {
    ASSERT_LT(absl::Now() - start, absl::Seconds(60)) << "health never went NOT_SERVING";
    std::this_thread::yield();
  }
  const int status = server.Terminate(SIGINT);
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));  // not the 120 s lame duck
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace segkv
