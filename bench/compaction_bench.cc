// compaction_bench: one segkv partition under sustained overwrites, with
// compaction as configured by default ("default": a victim with nothing
// to keep is deleted unread, a mostly dead one whose tombstones no older
// segment needs is compacted by walking the index, a scan stops once
// nothing is left to keep, and while busy a segment waits until a segment's
// worth of log was written after it) and with every victim read record by
// record as soon as it qualifies ("read-all": compaction_shortcuts off,
// compaction_min_age_segments 0), side by side in one run.
//
//   tools/bench.sh compaction [--keys=100000] [--hot=0.1] [--json]
//
// Each side gets a fresh partition in a scratch dir (durability=none, real
// files, default compaction pacing: dead ratio 0.5, work ratio 1, space
// limit 3) and the same stream: --keys keys written once, then --puts puts
// in batches of 100 with a Tick() after each batch, as the worker does.
// Keys are drawn uniformly, or (--hot=F) with 90% of puts on the first F
// of the keys. The rounds alternate which side runs first. Printed per
// side: puts/s over the whole stream, the seconds spent in Tick() (where
// compaction runs), the compaction counters and the space amplification at
// the end; then the ratios.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "worker/partition.h"

ABSL_FLAG(uint64_t, keys, 100000, "distinct keys");
ABSL_FLAG(uint64_t, puts, 4000000, "puts after the initial fill");
ABSL_FLAG(int, value_size, 100, "value bytes");
ABSL_FLAG(uint64_t, segment_size, 32ull << 20, "segment size");
ABSL_FLAG(double, hot, 0, "0: uniform keys; else 90% of puts go to this fraction of the keys");
ABSL_FLAG(int, rounds, 2, "rounds per side, alternating which goes first");
ABSL_FLAG(bool, json, false, "also print a JSON object as the last line");

namespace {

using segkv::bench::Clock;
using segkv::bench::KeyMaker;
using segkv::bench::Seconds;
namespace sw = segkv::worker;

struct Run {
  double puts_per_s = 0;
  double tick_s = 0;
  double space_amp = 0;
  sw::CompactionStats c;
};

void Die(const std::string& what) {
  std::fprintf(stderr, "compaction_bench: %s\n", what.c_str());
  std::exit(1);
}

Run RunOnce(bool shortcuts, const std::string& dir) {
  sw::PartitionOptions o;
  o.dir = dir;
  o.segment_size = absl::GetFlag(FLAGS_segment_size);
  o.durability = sw::Durability::kNone;
  o.checkpoint_interval = absl::ZeroDuration();
  o.checkpoint_on_close = false;
  o.compaction_shortcuts = shortcuts;
  if (!shortcuts) o.compaction_min_age_segments = 0;
  o.remove_in_background = true;  // as segkvd runs it
  auto p = sw::Partition::Open(o);
  if (!p.ok()) Die(p.status().ToString());
  sw::Partition& part = **p;

  const uint64_t keys = absl::GetFlag(FLAGS_keys);
  const uint64_t puts = absl::GetFlag(FLAGS_puts);
  const double hot = absl::GetFlag(FLAGS_hot);
  const uint64_t hot_keys = std::max<uint64_t>(1, static_cast<uint64_t>(hot * keys));
  std::mt19937_64 rng(7);  // the same stream for both sides
  std::string value(absl::GetFlag(FLAGS_value_size), 'v');
  KeyMaker key(16);
  std::vector<std::string> batch_keys(100);
  std::vector<sw::WriteOp> ops(100);
  std::vector<sw::WriteResult> results;
  auto put_batch = [&](auto next_key) {
    for (int j = 0; j < 100; ++j) {
      batch_keys[j] = key(next_key());
      value[j % value.size()] = static_cast<char>(rng());
      ops[j] = sw::WriteOp::Put(batch_keys[j], value);
    }
    if (!part.ApplyBatch(ops, &results).ok()) Die("batch failed");
  };
  uint64_t fill = 0;
  while (fill < keys) put_batch([&] { return fill < keys ? fill++ : rng() % keys; });

  Run r;
  const auto start = Clock::now();
  for (uint64_t done = 0; done < puts; done += 100) {
    put_batch([&] {
      if (hot > 0 && rng() % 10 != 0) return rng() % hot_keys;
      return rng() % keys;
    });
    const auto t = Clock::now();
    if (!part.Tick().ok()) Die("tick failed");
    r.tick_s += Seconds(t, Clock::now());
  }
  r.puts_per_s = static_cast<double>(puts) / Seconds(start, Clock::now());
  const sw::PartitionStats st = part.Stats();
  r.c = st.compaction;
  r.space_amp = static_cast<double>(st.live_bytes + st.dead_bytes) /
                static_cast<double>(std::max<uint64_t>(st.live_bytes, 1));
  if (st.keys != keys) Die("lost keys");
  if (!part.Close().ok()) Die("close failed");
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string root = segkv::bench::MakeScratchDir("segkv-compaction-bench");
  if (root.empty()) Die("cannot make a scratch dir");
  std::vector<Run> on, off;
  const int rounds = absl::GetFlag(FLAGS_rounds);
  for (int i = 0; i < rounds; ++i) {
    for (int k = 0; k < 2; ++k) {
      const bool shortcuts = (i + k) % 2 == 0;
      const std::string dir = absl::StrFormat("%s/r%d-%s", root, i, shortcuts ? "on" : "off");
      Run r = RunOnce(shortcuts, dir);
      std::filesystem::remove_all(dir);
      std::printf(
          "compaction_bench side=%s round=%d puts_per_s=%.0f tick_s=%.2f "
          "segments_compacted=%lu dropped_unread=%lu walked=%lu records_relocated=%lu "
          "space_amp=%.2f\n",
          shortcuts ? "default" : "read-all", i, r.puts_per_s, r.tick_s, r.c.segments_compacted,
          r.c.segments_dropped_unread, r.c.segments_walked, r.c.records_relocated, r.space_amp);
      std::fflush(stdout);
      (shortcuts ? on : off).push_back(r);
    }
  }
  std::filesystem::remove_all(root);
  auto med = [](const std::vector<Run>& v, double Run::*f) {
    std::vector<double> x;
    for (const Run& r : v) x.push_back(r.*f);
    return Median(x);
  };
  const double on_puts = med(on, &Run::puts_per_s), off_puts = med(off, &Run::puts_per_s);
  const double on_tick = med(on, &Run::tick_s), off_tick = med(off, &Run::tick_s);
  std::printf("keys=%lu puts=%lu hot=%g segment_size=%lu (medians of %d rounds)\n",
              absl::GetFlag(FLAGS_keys), absl::GetFlag(FLAGS_puts), absl::GetFlag(FLAGS_hot),
              absl::GetFlag(FLAGS_segment_size), rounds);
  std::printf("%-28s %12s %12s %8s\n", "", "default", "read-all", "ratio");
  std::printf("%-28s %12.0f %12.0f %7.2fx\n", "puts/s", on_puts, off_puts, on_puts / off_puts);
  std::printf("%-28s %12.2f %12.2f %7.2fx\n", "seconds in Tick (compaction)", on_tick, off_tick,
              on_tick / std::max(off_tick, 1e-9));
  std::printf("%-28s %12.2f %12.2f\n", "space amplification at end", med(on, &Run::space_amp),
              med(off, &Run::space_amp));
  if (absl::GetFlag(FLAGS_json)) {
    std::printf(
        "{\"default_puts_per_s\": %.0f, \"read_all_puts_per_s\": %.0f, \"puts_ratio\": %.3f, "
        "\"default_tick_s\": %.3f, \"read_all_tick_s\": %.3f}\n",
        on_puts, off_puts, on_puts / off_puts, on_tick, off_tick);
  }
  return 0;
}
