// segkvd: the segkv server process. Parses flags, starts the server, waits
// for SIGTERM/SIGINT, shuts down gracefully. Everything else is in
// server/server.h.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"
#include "server/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7379", "host:port to serve gRPC on (port 0 picks a free one)");
ABSL_FLAG(std::string, data_dir, "segkv-data", "data directory (created if missing)");
ABSL_FLAG(int, workers, 0, "worker threads = partitions, fixed per data dir (0: the data dir's count, or one per usable CPU for a new one)");
ABSL_FLAG(bool, pin_workers, false, "pin worker i to the i-th CPU this process may use");
ABSL_FLAG(std::string, durability, "always", "always (ack after fdatasync, group commit) | interval | none");
ABSL_FLAG(absl::Duration, sync_interval, absl::Milliseconds(100), "fdatasync period under --durability=interval");
ABSL_FLAG(uint64_t, segment_size, 128ull << 20, "log segment size in bytes for new partitions");
ABSL_FLAG(uint64_t, max_value_size, 16ull << 20, "largest value accepted, bytes");
ABSL_FLAG(uint64_t, write_buffer_size, 1 << 20, "per-partition tail buffer, bytes");
ABSL_FLAG(uint64_t, queue_depth, 4096, "requests each worker queue holds; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(uint64_t, max_batch, 10000, "ops per BatchWrite / keys per BatchGet");
ABSL_FLAG(int, max_message_bytes, 64 << 20, "largest gRPC message, bytes");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Seconds(30), "gRPC keepalive ping interval");
ABSL_FLAG(absl::Duration, checkpoint_interval, absl::Seconds(60), "index checkpoint period per partition (0: only on Admin.Checkpoint)");
ABSL_FLAG(uint64_t, checkpoints_to_keep, 2, "index checkpoints kept per partition (>= 1)");
ABSL_FLAG(double, compaction_dead_ratio, 0.5, "compact a sealed segment once this fraction of it is dead (above 1: only on Admin.Compact, which then defaults to 0.5)");
ABSL_FLAG(bool, checkpoint_on_close, true, "take a checkpoint at shutdown if the log grew since the last (the next start replays nothing)");
ABSL_FLAG(double, compaction_work_ratio, 1.0, "compaction bytes scanned per byte written while busy (idle: runs until no segment is over the dead ratio)");
ABSL_FLAG(double, compaction_space_limit, 3.0, "while busy, compaction keeps up with writes once log bytes exceed this x live bytes plus one segment (0: no limit)");
ABSL_FLAG(double, compaction_min_age_segments, 1.0, "while busy and under the space limit, a sealed segment is compacted only once this many segments' worth of log was written after it (0: no wait)");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10), "time in-flight requests get on SIGTERM");
ABSL_FLAG(absl::Duration, lame_duck, absl::ZeroDuration(), "on SIGTERM, health goes NOT_SERVING and requests are still served this long before the server stops accepting");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("segkvd --data_dir=DIR [--listen=HOST:PORT] [flags]");
  absl::ParseCommandLine(argc, argv);
  // gRPC locks absl::Mutex on every call; Debian's absl is built with
  // deadlock detection on, which costs a few percent of CPU per RPC.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  // Signals are taken by sigwait() below, so block them before any thread
  // starts (threads inherit the mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  segkv::server::ServerOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  o.workers = absl::GetFlag(FLAGS_workers);
  o.pin_workers = absl::GetFlag(FLAGS_pin_workers);
  auto durability = segkv::worker::ParseDurability(absl::GetFlag(FLAGS_durability));
  if (!durability.ok()) {
    std::fprintf(stderr, "segkvd: %s\n", std::string(durability.status().message()).c_str());
    return 2;
  }
  o.partition.durability = *durability;
  o.partition.sync_interval = absl::GetFlag(FLAGS_sync_interval);
  o.partition.segment_size = absl::GetFlag(FLAGS_segment_size);
  o.partition.max_value_size = absl::GetFlag(FLAGS_max_value_size);
  o.partition.write_buffer_size = absl::GetFlag(FLAGS_write_buffer_size);
  o.partition.checkpoint_interval = absl::GetFlag(FLAGS_checkpoint_interval);
  o.partition.checkpoints_to_keep = absl::GetFlag(FLAGS_checkpoints_to_keep);
  o.partition.checkpoint_on_close = absl::GetFlag(FLAGS_checkpoint_on_close);
  o.partition.compaction_dead_ratio = absl::GetFlag(FLAGS_compaction_dead_ratio);
  o.partition.compaction_work_ratio = absl::GetFlag(FLAGS_compaction_work_ratio);
  o.partition.compaction_space_limit = absl::GetFlag(FLAGS_compaction_space_limit);
  o.partition.compaction_min_age_segments = absl::GetFlag(FLAGS_compaction_min_age_segments);
  if (o.partition.checkpoint_interval < absl::ZeroDuration() ||
      o.partition.checkpoints_to_keep < 1 ||
      !(o.partition.compaction_dead_ratio >= 0) ||
      !(o.partition.compaction_work_ratio > 0 && o.partition.compaction_work_ratio <= 1000) ||
      !(o.partition.compaction_space_limit == 0 || o.partition.compaction_space_limit > 1) ||
      !(o.partition.compaction_min_age_segments >= 0 &&
        o.partition.compaction_min_age_segments <= 1000)) {
    std::fprintf(stderr,
                 "segkvd: --checkpoint_interval must be >= 0, --checkpoints_to_keep >= 1, "
                 "--compaction_dead_ratio >= 0, --compaction_work_ratio in (0, 1000], "
                 "--compaction_space_limit 0 or > 1 and --compaction_min_age_segments in "
                 "[0, 1000]\n");
    return 2;
  }
  o.queue_depth = absl::GetFlag(FLAGS_queue_depth);
  o.limits.max_value_size = absl::GetFlag(FLAGS_max_value_size);
  o.limits.max_batch = absl::GetFlag(FLAGS_max_batch);
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  o.lame_duck = absl::GetFlag(FLAGS_lame_duck);
  const absl::Duration shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  if (o.lame_duck < absl::ZeroDuration() || o.lame_duck > absl::Hours(24) ||
      shutdown_grace < absl::ZeroDuration() || shutdown_grace > absl::Hours(24)) {
    std::fprintf(stderr, "segkvd: --lame_duck and --shutdown_grace must be between 0 and 24h\n");
    return 2;
  }
  if (o.keepalive_time < absl::Seconds(1) || o.keepalive_time > absl::Hours(480)) {
    std::fprintf(stderr, "segkvd: --keepalive_time must be between 1s and 480h\n");
    return 2;
  }

  auto server = segkv::server::Server::Start(o);
  if (!server.ok()) {
    LOG(ERROR) << "segkvd cannot start: " << server.status();
    return 1;
  }
  std::printf("segkvd listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  LOG(INFO) << "signal " << sig << ": shutting down";
  // A second signal means "now": exit without finishing. That is a crash
  // as far as the data is concerned; under --durability=always nothing
  // acknowledged is lost.
  std::thread([signals] {
    int again = 0;
    sigwait(&signals, &again);
    LOG(WARNING) << "signal " << again << " during shutdown: exiting now";
    std::_Exit(1);
  }).detach();
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  if (absl::Status s = (*server)->close_status(); !s.ok()) {
    // Writes acknowledged under interval/none may not be durable.
    LOG(ERROR) << "segkvd stopped, but a partition did not close cleanly: " << s;
    return 1;
  }
  return 0;
}
