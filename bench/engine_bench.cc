// engine_bench: one segkv partition against RocksDB, side by side, one
// thread each, on the same keys and values in the same run.
//
//   bazel run -c opt --config=opt //bench:engine_bench -- --keys=1000000
//
// Workloads (16-byte keys, 100-byte random values by default):
//   fillrandom  every key once, in random order (segkv durability=none:
//               records go to the tail buffer, written in 1 MiB pwrites;
//               RocksDB: WAL on, sync=false)
//   readrandom  every key once, in another random order (all present)
//   overwrite   every key once more, in random order
//   batch100    every key once more, in batches of 100 (no sync)
//   sync_batch  batches of --batch puts made durable with one fdatasync each
//               (segkv durability=always group commit; RocksDB WriteBatch
//               with sync=true)
// Also: segkv index bytes per key, full-replay recovery time of the segkv
// log against a plain sequential read() of the same segment files, and the
// longest stall seen by any window of 1024 fillrandom puts.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "worker/manifest.h"
#include "worker/partition.h"
#include "bench/bench_util.h"

ABSL_FLAG(uint64_t, keys, 1000000, "number of distinct keys");
ABSL_FLAG(int, key_size, 16, "key size in bytes (>= 12)");
ABSL_FLAG(int, value_size, 100, "value size in bytes");
ABSL_FLAG(std::string, engines, "segkv,rocksdb", "engines to run: segkv, rocksdb or both");
ABSL_FLAG(int, batch, 64, "puts per durable batch");
ABSL_FLAG(int, sync_batches, 2000, "durable batches to run");
ABSL_FLAG(std::string, dir, "", "scratch directory (default: a fresh one under $TMPDIR or /tmp)");
ABSL_FLAG(bool, json, false, "print one JSON object with every figure as the last line");
ABSL_FLAG(uint64_t, segment_size, 128ull << 20, "segkv segment size");

namespace {

using segkv::bench::Clock;
using segkv::bench::KeyMaker;
using segkv::bench::Ratio;
using segkv::bench::Seconds;
namespace sw = segkv::worker;

struct Workload {
  uint64_t n = 0;
  int key_size = 16;
  std::vector<uint32_t> fill_order, read_order, overwrite_order;
  std::vector<std::string> values;  // a pool of random values
};

Workload MakeWorkload(uint64_t n, int key_size, int value_size) {
  Workload w;
  w.n = n;
  w.key_size = key_size;
  std::mt19937_64 rng(42);
  auto perm = [&] {
    std::vector<uint32_t> v(n);
    for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<uint32_t>(i);
    std::shuffle(v.begin(), v.end(), rng);
    return v;
  };
  w.fill_order = perm();
  w.read_order = perm();
  w.overwrite_order = perm();
  for (int i = 0; i < 1024; ++i) {
    std::string v(value_size, '\0');
    for (auto& c : v) c = static_cast<char>(rng());
    w.values.push_back(std::move(v));
  }
  return w;
}

const std::string& ValueFor(const Workload& w, uint64_t i) {
  return w.values[i & 1023];
}

struct Results {
  double fill = 0, read = 0, overwrite = 0, batch_overwrite = 0, sync_batch = 0;
  double max_fill_stall_ms = 0;
  uint64_t found = 0;
};

void Die(const std::string& what) {
  std::fprintf(stderr, "engine_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename PutFn>
double TimedFill(const Workload& w, const std::vector<uint32_t>& order,
                 PutFn put, double* max_stall_ms) {
  KeyMaker key(w.key_size);
  auto start = Clock::now();
  auto window = start;
  double worst = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    put(key(order[i]), ValueFor(w, i));
    if ((i & 1023) == 1023) {
      auto now = Clock::now();
      worst = std::max(worst, Seconds(window, now));
      window = now;
    }
  }
  double secs = Seconds(start, Clock::now());
  if (max_stall_ms != nullptr) *max_stall_ms = worst * 1e3;
  return order.size() / secs;
}

// ---- segkv ----

struct SegkvExtra {
  double index_bytes_per_key = 0;
  double replay_s = 0, replay_records_per_s = 0, replay_mb_per_s = 0;
  double seq_read_mb_per_s = 0;
  uint64_t log_bytes = 0;
  uint64_t syncs = 0;
};

sw::PartitionOptions SegkvOptions(const std::string& dir, sw::Durability d) {
  sw::PartitionOptions o;
  o.dir = dir;
  o.segment_size = absl::GetFlag(FLAGS_segment_size);
  o.durability = d;
  // The replay figure below is a full replay of the log: no checkpoint.
  o.checkpoint_on_close = false;
  o.checkpoint_interval = absl::ZeroDuration();
  return o;
}

double SequentialReadMBps(const std::string& dir, uint64_t* bytes) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    uint64_t id;
    if (sw::ParseSegmentFileName(e.path().filename().string(), &id)) {
      files.push_back(e.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  auto start = Clock::now();
  for (const auto& f : files) {
    int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) Die("open " + f);
    ssize_t n;
    while ((n = ::read(fd, buf.data(), buf.size())) > 0) total += n;
    ::close(fd);
  }
  double secs = Seconds(start, Clock::now());
  *bytes = total;
  return total / 1e6 / secs;
}

Results RunSegkv(const Workload& w, const std::string& dir, SegkvExtra* extra) {
  Results r;
  auto p = sw::Partition::Open(SegkvOptions(dir, sw::Durability::kNone));
  if (!p.ok()) Die(p.status().ToString());
  auto& part = **p;
  r.fill = TimedFill(w, w.fill_order, [&](const std::string& k, const std::string& v) {
    auto res = part.Put(k, v);
    if (!res.ok()) Die(res.status().ToString());
  }, &r.max_fill_stall_ms);
  extra->index_bytes_per_key =
      static_cast<double>(part.index().MemoryBytes()) / part.index().size();

  sw::ReadResult rr;
  KeyMaker key(w.key_size);
  auto start = Clock::now();
  for (uint32_t i : w.read_order) {
    if (!part.Get(key(i), &rr).ok()) Die("get failed");
    r.found += rr.found;
  }
  r.read = w.read_order.size() / Seconds(start, Clock::now());

  r.overwrite = TimedFill(w, w.overwrite_order, [&](const std::string& k, const std::string& v) {
    auto res = part.Put(k, v);
    if (!res.ok()) Die(res.status().ToString());
  }, nullptr);
  {
    // The same overwrites again in batches of 100 (what a worker applies
    // for a BatchWrite or a queue's worth of Puts).
    KeyMaker key(w.key_size);
    std::vector<std::string> keys(100);
    std::vector<sw::WriteOp> ops(100);
    std::vector<sw::WriteResult> results;
    auto t0 = Clock::now();
    for (size_t i = 0; i + 100 <= w.n; i += 100) {
      for (int j = 0; j < 100; ++j) {
        keys[j] = key(w.overwrite_order[i + j]);
        ops[j] = sw::WriteOp::Put(keys[j], ValueFor(w, i + j));
      }
      if (!part.ApplyBatch(ops, &results).ok()) Die("batch failed");
    }
    r.batch_overwrite = (w.n / 100 * 100) / Seconds(t0, Clock::now());
  }
  if (!part.Close().ok()) Die("close failed");
  p->reset();

  // Full replay: reopen the same directory (page cache warm), then read the
  // same files sequentially for comparison.
  start = Clock::now();
  auto q = sw::Partition::Open(SegkvOptions(dir, sw::Durability::kAlways));
  if (!q.ok()) Die(q.status().ToString());
  extra->replay_s = Seconds(start, Clock::now());
  const auto& st = (*q)->Stats();
  extra->replay_records_per_s = st.recovery.records / extra->replay_s;
  extra->replay_mb_per_s = st.recovery.bytes / 1e6 / extra->replay_s;
  extra->seq_read_mb_per_s = SequentialReadMBps(dir, &extra->log_bytes);
  if ((*q)->index().size() != w.n) Die("replay lost keys");

  const int batch = absl::GetFlag(FLAGS_batch);
  const int batches = absl::GetFlag(FLAGS_sync_batches);
  std::vector<sw::WriteOp> ops(batch);
  std::vector<std::string> keys(batch);
  std::vector<sw::WriteResult> results;
  const uint64_t syncs_before = (*q)->Stats().syncs;
  start = Clock::now();
  uint64_t k = 0;
  for (int b = 0; b < batches; ++b) {
    for (int i = 0; i < batch; ++i, ++k) {
      keys[i] = key(w.overwrite_order[k % w.n]);
      ops[i] = sw::WriteOp::Put(keys[i], ValueFor(w, k));
    }
    if (!(*q)->ApplyBatch(ops, &results).ok()) Die("batch failed");
  }
  r.sync_batch = double(batches) * batch / Seconds(start, Clock::now());
  extra->syncs = (*q)->Stats().syncs - syncs_before;
  return r;
}

// ---- RocksDB ----

Results RunRocksdb(const Workload& w, const std::string& dir) {
  Results r;
  rocksdb::Options options;
  options.create_if_missing = true;
  options.compression = rocksdb::kNoCompression;  // values are random bytes
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) Die("rocksdb open: " + s.ToString());
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::WriteOptions wo;  // WAL on, sync=false
  r.fill = TimedFill(w, w.fill_order, [&](const std::string& k, const std::string& v) {
    if (!db->Put(wo, k, v).ok()) Die("rocksdb put");
  }, &r.max_fill_stall_ms);

  rocksdb::ReadOptions ro;
  std::string value;
  KeyMaker key(w.key_size);
  auto start = Clock::now();
  for (uint32_t i : w.read_order) {
    rocksdb::Status g = db->Get(ro, key(i), &value);
    if (g.ok()) {
      ++r.found;
    } else if (!g.IsNotFound()) {
      Die("rocksdb get: " + g.ToString());
    }
  }
  r.read = w.read_order.size() / Seconds(start, Clock::now());

  r.overwrite = TimedFill(w, w.overwrite_order, [&](const std::string& k, const std::string& v) {
    if (!db->Put(wo, k, v).ok()) Die("rocksdb put");
  }, nullptr);
  {
    KeyMaker bkey(w.key_size);
    auto t0 = Clock::now();
    for (size_t i = 0; i + 100 <= w.n; i += 100) {
      rocksdb::WriteBatch wb;
      for (int j = 0; j < 100; ++j) wb.Put(bkey(w.overwrite_order[i + j]), ValueFor(w, i + j));
      if (!db->Write(wo, &wb).ok()) Die("rocksdb batch");
    }
    r.batch_overwrite = (w.n / 100 * 100) / Seconds(t0, Clock::now());
  }

  rocksdb::WriteOptions sync_wo;
  sync_wo.sync = true;
  const int batch = absl::GetFlag(FLAGS_batch);
  const int batches = absl::GetFlag(FLAGS_sync_batches);
  start = Clock::now();
  uint64_t k = 0;
  for (int b = 0; b < batches; ++b) {
    rocksdb::WriteBatch wb;
    for (int i = 0; i < batch; ++i, ++k) {
      wb.Put(key(w.overwrite_order[k % w.n]), ValueFor(w, k));
    }
    if (!db->Write(sync_wo, &wb).ok()) Die("rocksdb sync write");
  }
  r.sync_batch = double(batches) * batch / Seconds(start, Clock::now());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const uint64_t n = absl::GetFlag(FLAGS_keys);
  std::vector<std::string> engines = absl::StrSplit(absl::GetFlag(FLAGS_engines), ',');
  const bool run_segkv = std::count(engines.begin(), engines.end(), "segkv") > 0;
  const bool run_rocks = std::count(engines.begin(), engines.end(), "rocksdb") > 0;
  if (!run_segkv && !run_rocks) Die("--engines must name segkv and/or rocksdb");
  if (absl::GetFlag(FLAGS_key_size) < 15) Die("--key_size must be >= 15");

  std::string root = absl::GetFlag(FLAGS_dir);
  bool cleanup = false;
  if (root.empty()) {
    root = segkv::bench::MakeScratchDir("segkv-engine-bench");
    if (root.empty()) Die("cannot make a scratch directory");
    cleanup = true;
  }

  std::printf("engine_bench: %lu keys, %d-byte keys, %d-byte values, batches of %d, one thread per engine\n",
              n, absl::GetFlag(FLAGS_key_size), absl::GetFlag(FLAGS_value_size),
              absl::GetFlag(FLAGS_batch));
  Workload w = MakeWorkload(n, absl::GetFlag(FLAGS_key_size), absl::GetFlag(FLAGS_value_size));

  Results seg, rocks;
  SegkvExtra extra;
  if (run_segkv) seg = RunSegkv(w, root + "/segkv", &extra);
  if (run_rocks) rocks = RunRocksdb(w, root + "/rocksdb");
  if (cleanup) std::filesystem::remove_all(root);

  std::printf("%-12s %16s %16s %8s\n", "workload", "segkv ops/s", "rocksdb ops/s", "ratio");
  auto row = [&](const char* name, double a, double b) {
    std::printf("%-12s %16.0f %16.0f %8s\n", name, a, b, Ratio(a, b).c_str());
  };
  row("fillrandom", seg.fill, rocks.fill);
  row("readrandom", seg.read, rocks.read);
  row("overwrite", seg.overwrite, rocks.overwrite);
  row("batch100", seg.batch_overwrite, rocks.batch_overwrite);
  row("sync_batch", seg.sync_batch, rocks.sync_batch);
  if (run_segkv) {
    std::printf("segkv index: %.2f bytes/key at %lu keys\n", extra.index_bytes_per_key, n);
    std::printf("segkv longest stall of 1024 fillrandom puts: %.2f ms (rocksdb %.2f ms)\n",
                seg.max_fill_stall_ms, rocks.max_fill_stall_ms);
    std::printf("segkv full replay: %.3f s, %.0f records/s, %.0f MB/s; plain sequential read of the same %.0f MB: %.0f MB/s\n",
                extra.replay_s, extra.replay_records_per_s, extra.replay_mb_per_s,
                extra.log_bytes / 1e6, extra.seq_read_mb_per_s);
    std::printf("segkv sync_batch: %lu fdatasyncs for %d batches\n", extra.syncs,
                absl::GetFlag(FLAGS_sync_batches));
  }
  if (run_segkv && seg.found != n) Die("segkv readrandom found only " + std::to_string(seg.found));
  if (run_rocks && rocks.found != n) Die("rocksdb readrandom found only " + std::to_string(rocks.found));
  if (absl::GetFlag(FLAGS_json)) {
    std::printf(
        "{\"keys\":%lu,\"segkv_fillrandom_ops\":%.0f,\"rocksdb_fillrandom_ops\":%.0f,"
        "\"segkv_readrandom_ops\":%.0f,\"rocksdb_readrandom_ops\":%.0f,"
        "\"segkv_overwrite_ops\":%.0f,\"rocksdb_overwrite_ops\":%.0f,"
        "\"segkv_batch100_ops\":%.0f,\"rocksdb_batch100_ops\":%.0f,"
        "\"segkv_sync_batch_ops\":%.0f,\"rocksdb_sync_batch_ops\":%.0f,"
        "\"index_bytes_per_key\":%.2f,\"replay_records_per_s\":%.0f,"
        "\"replay_mb_per_s\":%.1f,\"seq_read_mb_per_s\":%.1f,"
        "\"segkv_max_fill_stall_ms\":%.3f,\"rocksdb_max_fill_stall_ms\":%.3f}\n",
        n, seg.fill, rocks.fill, seg.read, rocks.read, seg.overwrite, rocks.overwrite,
        seg.batch_overwrite, rocks.batch_overwrite,
        seg.sync_batch, rocks.sync_batch, extra.index_bytes_per_key,
        extra.replay_records_per_s, extra.replay_mb_per_s, extra.seq_read_mb_per_s,
        seg.max_fill_stall_ms, rocks.max_fill_stall_ms);
  }
  return 0;
}
