// recovery_bench: what checkpoints and compaction buy, each side by side
// with the same store doing without them, in one run.
//
//   tools/bench.sh recovery -- --json      (optimised build)
//
// Phase "restart" (--keys, default 10M; 16-byte keys, 100-byte values):
//   fill every key into one partition (durability=none), then take a
//   checkpoint while overwrites keep flowing in batches of 64 (the longest
//   batch+Tick is the worker's stall; the index copy alone is reported
//   too), then write --tail_fraction of the keys again past the checkpoint
//   and close without a checkpoint. Reopened --restarts times each way:
//    - checkpoint + tail: load the checkpoint, replay the tail (a restart
//      after a crash);
//    - checkpoint: after one clean close (which takes a checkpoint), load
//      it and replay nothing (a restart after a clean shutdown);
//    - full replay: the checkpoint files deleted, the whole log replayed.
//   Page cache is warm for all. Medians are printed, with the ratios.
//
// Phase "compaction" (--compaction_keys, default 1M): two partitions get the
// same work, in alternating rounds so machine noise hits both: fill every
// key, then --overwrites_per_key x keys puts to uniformly random keys, in
// batches of 64 followed by Tick() (what a worker does). One runs with
// compaction (default options: dead ratio 0.5, work ratio 1.0), the other
// with compaction off. Afterwards the compacting one is left idle (Tick()
// while it has background work, as an idle worker does) and its space
// amplification is measured: bytes of segment files on disk / bytes of live
// records.
//
// --json prints one JSON object with every figure as the last line.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "worker/manifest.h"
#include "worker/partition.h"
#include "bench/bench_util.h"

ABSL_FLAG(uint64_t, keys, 10000000, "keys for the restart phase");
ABSL_FLAG(int, key_size, 16, "key size in bytes (>= 15)");
ABSL_FLAG(int, value_size, 100, "value size in bytes");
ABSL_FLAG(uint64_t, segment_size, 128ull << 20, "segment size for the restart phase");
ABSL_FLAG(double, tail_fraction, 0.01,
          "keys written again after the checkpoint, as a fraction of --keys");
ABSL_FLAG(int, restarts, 3, "reopens per recovery path (the median is reported)");
ABSL_FLAG(uint64_t, compaction_keys, 1000000, "keys for the compaction phase");
ABSL_FLAG(double, overwrites_per_key, 5, "random overwrites per key in the compaction phase");
ABSL_FLAG(uint64_t, compaction_segment_size, 16ull << 20,
          "segment size for the compaction phase");
ABSL_FLAG(double, compaction_work_ratio, 1.0,
          "compaction pacing for the compacting side (segkvd's --compaction_work_ratio)");
ABSL_FLAG(double, compaction_space_limit, 3.0,
          "compaction space limit for the compacting side (segkvd's --compaction_space_limit)");
ABSL_FLAG(int, rounds, 20, "alternating rounds of the compaction phase");
ABSL_FLAG(std::string, phases, "restart,compaction", "phases to run");
ABSL_FLAG(std::string, dir, "", "scratch directory (default: a fresh one under $TMPDIR or /tmp)");
ABSL_FLAG(bool, json, false, "print one JSON object with every figure as the last line");

namespace {

using segkv::bench::Clock;
using segkv::bench::KeyMaker;
using segkv::bench::Ratio;
using segkv::bench::Seconds;
namespace sw = segkv::worker;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "recovery_bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) Die(absl::StrFormat("%s: %s", what, s.ToString()));
}


std::vector<std::string> ValuePool(int size) {
  std::mt19937_64 rng(7);
  std::vector<std::string> pool;
  for (int i = 0; i < 1024; ++i) {
    std::string v(size, '\0');
    for (auto& c : v) c = static_cast<char>(rng());
    pool.push_back(std::move(v));
  }
  return pool;
}

// Applies puts in batches of 64 and Tick()s after each batch, as a worker
// does. Returns the longest batch+Tick in seconds.
class BatchWriter {
 public:
  BatchWriter(sw::Partition* p, int key_size, const std::vector<std::string>* values)
      : p_(p), key_(key_size), values_(values), keys_(64), ops_(64) {}

  template <typename NextKey>
  double Write(uint64_t n, NextKey next_key) {
    double worst = 0;
    uint64_t done = 0;
    while (done < n) {
      const size_t m = std::min<uint64_t>(64, n - done);
      auto t0 = Clock::now();
      for (size_t j = 0; j < m; ++j) {
        keys_[j] = key_(next_key());
        ops_[j] = sw::WriteOp::Put(keys_[j], (*values_)[(count_ + j) & 1023]);
      }
      Check(p_->ApplyBatch(std::span<const sw::WriteOp>(ops_.data(), m), &results_), "put batch");
      Check(p_->Tick(), "tick");
      worst = std::max(worst, Seconds(t0, Clock::now()));
      done += m;
      count_ += m;
    }
    return worst;
  }

 private:
  sw::Partition* p_;
  KeyMaker key_;
  const std::vector<std::string>* values_;
  std::vector<std::string> keys_;
  std::vector<sw::WriteOp> ops_;
  std::vector<sw::WriteResult> results_;
  uint64_t count_ = 0;
};

uint64_t SegmentFileBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    uint64_t id;
    if (sw::ParseSegmentFileName(e.path().filename().string(), &id)) {
      total += std::filesystem::file_size(e.path());
    }
  }
  return total;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- restart ----

struct RestartResults {
  uint64_t keys = 0;
  double fill_ops = 0;
  double copy_ms = 0;          // the index copy inside the worker
  double sync_ms = 0;          // the log fdatasync just before it
  double max_stall_ms = 0;     // the longest batch+Tick while checkpointing
  double typical_batch_ms = 0; // the median batch+Tick, for scale
  double write_s = 0;          // the background write of the file
  uint64_t checkpoint_bytes = 0;
  uint64_t log_bytes = 0;
  double checkpoint_s = 0, tail_s = 0, replay_s = 0;
  double checkpoint_load_s = 0;
  uint64_t checkpoint_replayed = 0, tail_replayed = 0, full_replayed = 0;
};

sw::PartitionOptions RestartOptions(const std::string& dir) {
  sw::PartitionOptions o;
  o.dir = dir;
  o.segment_size = absl::GetFlag(FLAGS_segment_size);
  o.durability = sw::Durability::kNone;
  o.checkpoint_interval = absl::ZeroDuration();  // only when asked
  o.checkpoint_on_close = false;                  // only where said
  o.compaction_dead_ratio = 2;                    // not part of this phase
  return o;
}

RestartResults RunRestart(const std::string& dir, const std::vector<std::string>& values) {
  RestartResults r;
  const uint64_t n = absl::GetFlag(FLAGS_keys);
  const int key_size = absl::GetFlag(FLAGS_key_size);
  r.keys = n;
  std::mt19937_64 rng(42);
  {
    auto p = sw::Partition::Open(RestartOptions(dir));
    Check(p.status(), "open");
    sw::Partition& part = **p;
    BatchWriter writer(&part, key_size, &values);
    std::vector<uint32_t> order(n);
    for (uint64_t i = 0; i < n; ++i) order[i] = static_cast<uint32_t>(i);
    std::shuffle(order.begin(), order.end(), rng);
    uint64_t next = 0;
    auto t0 = Clock::now();
    writer.Write(n, [&] { return order[next++]; });
    r.fill_ops = n / Seconds(t0, Clock::now());

    // A checkpoint while overwrites keep coming, 64 at a time.
    Check(part.StartCheckpoint(), "start checkpoint");
    std::vector<double> batches;
    while (part.checkpoint_running()) {
      batches.push_back(writer.Write(64, [&] { return rng() % n; }));
    }
    Check(part.last_checkpoint_status(), "checkpoint");
    r.max_stall_ms = *std::max_element(batches.begin(), batches.end()) * 1e3;
    r.typical_batch_ms = Median(batches) * 1e3;
    const auto& ck = part.Stats().checkpoints;
    r.copy_ms = ck.last_copy_ms;
    r.sync_ms = ck.last_sync_ms;
    r.write_s = ck.last_write_seconds;
    r.checkpoint_bytes = ck.last->file_size;

    const uint64_t tail = static_cast<uint64_t>(absl::GetFlag(FLAGS_tail_fraction) * n);
    writer.Write(tail, [&] { return rng() % n; });
    Check(part.Close(), "close");
  }
  r.log_bytes = SegmentFileBytes(dir);

  auto reopen = [&](bool expect_checkpoint, bool checkpoint_on_close, uint64_t* replayed,
                    double* load_s) {
    sw::PartitionOptions o = RestartOptions(dir);
    o.checkpoint_on_close = checkpoint_on_close;
    auto t0 = Clock::now();
    auto p = sw::Partition::Open(o);
    const double secs = Seconds(t0, Clock::now());
    Check(p.status(), "reopen");
    const sw::PartitionStats st = (*p)->Stats();
    if (st.keys != n) Die(absl::StrFormat("reopen found %d keys, wrote %d", st.keys, n));
    if (st.recovered.checkpoint_id.has_value() != expect_checkpoint) {
      Die(expect_checkpoint ? "reopen did not use the checkpoint"
                            : "reopen used a checkpoint");
    }
    *replayed = st.recovery.records;
    if (load_s != nullptr) *load_s = st.recovered.load_seconds;
    Check((*p)->Close(), "close");
    return secs;
  };
  const int restarts = std::max(1, absl::GetFlag(FLAGS_restarts));
  std::vector<double> tail, clean, full, loads;
  // As after a crash: the checkpoint, then the tail written after it.
  for (int i = 0; i < restarts; ++i) {
    tail.push_back(reopen(true, false, &r.tail_replayed, nullptr));
  }
  // One clean shutdown takes a checkpoint at close; restarts after it
  // replay nothing.
  reopen(true, true, &r.tail_replayed, nullptr);
  for (int i = 0; i < restarts; ++i) {
    double load = 0;
    clean.push_back(reopen(true, false, &r.checkpoint_replayed, &load));
    loads.push_back(load);
  }
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    uint64_t id;
    if (sw::ParseCheckpointFileName(e.path().filename().string(), &id)) {
      std::filesystem::remove(e.path());
    }
  }
  for (int i = 0; i < restarts; ++i) {
    full.push_back(reopen(false, false, &r.full_replayed, nullptr));
  }
  r.checkpoint_s = Median(clean);
  r.checkpoint_load_s = Median(loads);
  r.tail_s = Median(tail);
  r.replay_s = Median(full);
  return r;
}

// ---- compaction ----

struct CompactionSide {
  double put_seconds = 0;
  uint64_t puts = 0;
  double worst_batch_ms = 0;
  uint64_t peak_disk = 0;
  uint64_t disk_after = 0, live_after = 0;
  double idle_seconds = 0;  // catching up after the writes stop
  uint64_t disk_caught_up = 0, live_caught_up = 0;
  sw::CompactionStats stats;
};

struct CompactionResults {
  uint64_t keys = 0;
  double overwrites_per_key = 0;
  CompactionSide with, without;
};

CompactionResults RunCompaction(const std::string& root, const std::vector<std::string>& values) {
  CompactionResults r;
  const uint64_t n = absl::GetFlag(FLAGS_compaction_keys);
  const int key_size = absl::GetFlag(FLAGS_key_size);
  const uint64_t overwrites =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_overwrites_per_key) * n);
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  r.keys = n;
  r.overwrites_per_key = absl::GetFlag(FLAGS_overwrites_per_key);

  struct Side {
    std::string dir;
    std::unique_ptr<sw::Partition> part;
    std::unique_ptr<BatchWriter> writer;
    std::mt19937_64 rng{99};  // both sides get the same key sequence
    uint64_t filled = 0;
    CompactionSide* out;
  };
  auto open = [&](const std::string& dir, bool compaction, CompactionSide* out) {
    sw::PartitionOptions o;
    o.dir = dir;
    o.segment_size = absl::GetFlag(FLAGS_compaction_segment_size);
    o.max_value_size = 1 << 20;  // so that a small segment is allowed
    o.durability = sw::Durability::kNone;
    o.checkpoint_interval = absl::ZeroDuration();
    o.compaction_work_ratio = absl::GetFlag(FLAGS_compaction_work_ratio);
    o.compaction_space_limit = absl::GetFlag(FLAGS_compaction_space_limit);
    if (!compaction) o.compaction_dead_ratio = 2;
    auto p = sw::Partition::Open(o);
    Check(p.status(), "open");
    auto s = std::make_unique<Side>();
    s->dir = dir;
    s->part = std::move(*p);
    s->writer = std::make_unique<BatchWriter>(s->part.get(), key_size, &values);
    s->out = out;
    return s;
  };
  std::vector<std::unique_ptr<Side>> sides;
  sides.push_back(open(root + "/with", true, &r.with));
  sides.push_back(open(root + "/without", false, &r.without));

  const uint64_t total = n + overwrites;
  for (int round = 0; round < rounds; ++round) {
    const uint64_t begin = total * round / rounds, end = total * (round + 1) / rounds;
    // Alternate which side goes first, so neither always follows the other.
    for (int k = 0; k < 2; ++k) {
      Side& s = *sides[(round + k) % 2];
      auto t0 = Clock::now();
      const double worst = s.writer->Write(end - begin, [&] {
        return s.filled < n ? s.filled++ : s.rng() % n;
      });
      s.out->put_seconds += Seconds(t0, Clock::now());
      s.out->puts += end - begin;
      s.out->worst_batch_ms = std::max(s.out->worst_batch_ms, worst * 1e3);
      s.out->peak_disk = std::max(s.out->peak_disk, SegmentFileBytes(s.dir));
    }
  }
  for (auto& s : sides) {
    s->out->disk_after = SegmentFileBytes(s->dir);
    s->out->live_after = s->part->Stats().live_bytes;
    auto t0 = Clock::now();
    while (s->part->HasBackgroundWork()) Check(s->part->Tick(), "tick");
    s->out->idle_seconds = Seconds(t0, Clock::now());
    s->out->disk_caught_up = SegmentFileBytes(s->dir);
    s->out->live_caught_up = s->part->Stats().live_bytes;
    s->out->stats = s->part->Stats().compaction;
    Check(s->part->Close(), "close");
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_key_size) < 15) Die("--key_size must be >= 15");
  std::vector<std::string> phases = absl::StrSplit(absl::GetFlag(FLAGS_phases), ',');
  const bool run_restart = std::count(phases.begin(), phases.end(), "restart") > 0;
  const bool run_compaction = std::count(phases.begin(), phases.end(), "compaction") > 0;
  if (!run_restart && !run_compaction) Die("--phases must name restart and/or compaction");

  std::string root = absl::GetFlag(FLAGS_dir);
  bool cleanup = false;
  if (root.empty()) {
    root = segkv::bench::MakeScratchDir("segkv-recovery-bench");
    if (root.empty()) Die("cannot make a scratch directory");
    cleanup = true;
  }
  const std::vector<std::string> values = ValuePool(absl::GetFlag(FLAGS_value_size));

  RestartResults rr;
  if (run_restart) {
    std::printf("restart: %lu keys, %d-byte keys, %d-byte values, %lu-byte segments\n",
                absl::GetFlag(FLAGS_keys), absl::GetFlag(FLAGS_key_size),
                absl::GetFlag(FLAGS_value_size), absl::GetFlag(FLAGS_segment_size));
    std::fflush(stdout);
    rr = RunRestart(root + "/restart", values);
    std::filesystem::remove_all(root + "/restart");
    std::printf("fill: %.0f puts/s; log %.0f MB; checkpoint %.1f MB\n", rr.fill_ops,
                rr.log_bytes / 1e6, rr.checkpoint_bytes / 1e6);
    std::printf("checkpoint under load: index copy %.2f ms after a log fdatasync of %.2f ms; "
                "longest batch+Tick while it ran %.2f ms (median %.3f ms); background write "
                "%.3f s\n",
                rr.copy_ms, rr.sync_ms, rr.max_stall_ms, rr.typical_batch_ms, rr.write_s);
    std::printf("%-34s %9s %17s\n", "restart (median of each)", "seconds", "records replayed");
    std::printf("%-34s %9.3f %17lu  (checkpoint load %.3f s)\n",
                "checkpoint (after a clean close)", rr.checkpoint_s, rr.checkpoint_replayed,
                rr.checkpoint_load_s);
    std::printf("%-34s %9.3f %17lu\n", "checkpoint + tail (as after crash)", rr.tail_s,
                rr.tail_replayed);
    std::printf("%-34s %9.3f %17lu\n", "full replay (no checkpoint)", rr.replay_s,
                rr.full_replayed);
    std::printf("full replay / checkpoint: %s; full replay / checkpoint + tail: %s\n",
                Ratio(rr.replay_s, rr.checkpoint_s).c_str(),
                Ratio(rr.replay_s, rr.tail_s).c_str());
    std::fflush(stdout);
  }

  CompactionResults cr;
  if (run_compaction) {
    std::printf("compaction: %lu keys, %.1f random overwrites per key, %lu-byte segments, "
                "work ratio %.2f, space limit %.2f, batches of 64 + Tick, %d alternating rounds\n",
                absl::GetFlag(FLAGS_compaction_keys), absl::GetFlag(FLAGS_overwrites_per_key),
                absl::GetFlag(FLAGS_compaction_segment_size),
                absl::GetFlag(FLAGS_compaction_work_ratio),
                absl::GetFlag(FLAGS_compaction_space_limit), absl::GetFlag(FLAGS_rounds));
    std::fflush(stdout);
    cr = RunCompaction(root + "/compaction", values);
    std::filesystem::remove_all(root + "/compaction");
    auto amp = [](uint64_t disk, uint64_t live) { return live > 0 ? double(disk) / live : 0; };
    std::printf("%-18s %12s %14s %12s %12s %14s\n", "compaction", "puts/s", "worst batch ms",
                "peak disk MB", "amp at end", "amp after idle");
    for (const auto* side : {&cr.with, &cr.without}) {
      std::printf("%-18s %12.0f %14.2f %12.0f %12.2f %14.2f\n",
                  side == &cr.with ? "on" : "off", side->puts / side->put_seconds,
                  side->worst_batch_ms, side->peak_disk / 1e6,
                  amp(side->disk_after, side->live_after),
                  amp(side->disk_caught_up, side->live_caught_up));
    }
    std::printf("puts with compaction / without: %s; idle catch-up %.3f s; %lu segments "
                "compacted, %.0f MB reclaimed, %.0f MB relocated\n",
                Ratio(cr.with.puts / cr.with.put_seconds, cr.without.puts / cr.without.put_seconds)
                    .c_str(),
                cr.with.idle_seconds, cr.with.stats.segments_compacted,
                cr.with.stats.bytes_reclaimed / 1e6, cr.with.stats.bytes_relocated / 1e6);
    std::fflush(stdout);
  }
  if (cleanup) std::filesystem::remove_all(root);

  if (absl::GetFlag(FLAGS_json)) {
    auto amp = [](uint64_t disk, uint64_t live) { return live > 0 ? double(disk) / live : 0; };
    auto ops = [](const CompactionSide& s) { return s.put_seconds > 0 ? s.puts / s.put_seconds : 0; };
    std::printf(
        "{\"keys\":%lu,\"restart_checkpoint_s\":%.4f,\"restart_replay_s\":%.4f,"
        "\"restart_speedup\":%.2f,\"checkpoint_load_s\":%.4f,"
        "\"restart_checkpoint_tail_s\":%.4f,\"tail_records\":%lu,"
        "\"records_replayed_after_checkpoint\":%lu,\"checkpoint_copy_ms\":%.3f,\"checkpoint_sync_ms\":%.3f,"
        "\"checkpoint_max_batch_ms\":%.3f,\"checkpoint_write_s\":%.3f,"
        "\"checkpoint_bytes\":%lu,\"compaction_keys\":%lu,\"overwrites_per_key\":%.2f,"
        "\"space_amplification\":%.3f,\"space_amplification_at_end_of_writes\":%.3f,"
        "\"space_amplification_without_compaction\":%.3f,"
        "\"put_ops_with_compaction\":%.0f,\"put_ops_without_compaction\":%.0f,"
        "\"put_ratio\":%.3f}\n",
        rr.keys, rr.checkpoint_s, rr.replay_s,
        rr.checkpoint_s > 0 ? rr.replay_s / rr.checkpoint_s : 0, rr.checkpoint_load_s,
        rr.tail_s, rr.tail_replayed, rr.checkpoint_replayed, rr.copy_ms, rr.sync_ms, rr.max_stall_ms, rr.write_s, rr.checkpoint_bytes,
        cr.keys, cr.overwrites_per_key, amp(cr.with.disk_caught_up, cr.with.live_caught_up),
        amp(cr.with.disk_after, cr.with.live_after),
        amp(cr.without.disk_caught_up, cr.without.live_caught_up), ops(cr.with),
        ops(cr.without), ops(cr.without) > 0 ? ops(cr.with) / ops(cr.without) : 0);
  }
  return 0;
}
