// Model-based test: random operations against a Partition and a std::map
// side by side, with clean reopens (full replay) in between, under every
// durability policy. After every step the two must agree on every key,
// value and version, and the partition's key count and live bytes must
// match the model.
//
// A second test interleaves checkpoints (blocking, started and finished by
// Tick(), periodic, at close or not), compactions (blocking and in Tick()
// steps, with random ratios and space limits), clean reopens and crashes
// with the writes; at the end a full replay must give the model too.
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"
#include "worker/record.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::Dump;
using ::segkv::worker::testing::DumpAll;
using ::segkv::worker::testing::FullReplayDump;
using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::SmallOptions;
using ::segkv::worker::testing::StatusIs;

struct Entry {
  std::string value;
  uint64_t version;
};

class ModelTest : public ::testing::TestWithParam<Durability> {};

void CheckAgainstModel(Partition& p, const std::map<std::string, Entry>& model,
                       int key_space) {
  ReadResult r;
  uint64_t live = 0;
  for (int i = 0; i < key_space; ++i) {
    const std::string key = absl::StrCat("k", i);
    ASSERT_THAT(p.Get(key, &r), IsOk());
    auto it = model.find(key);
    if (it == model.end()) {
      ASSERT_FALSE(r.found) << key;
      continue;
    }
    ASSERT_TRUE(r.found) << key;
    ASSERT_EQ(r.value, it->second.value) << key;
    ASSERT_EQ(r.version, it->second.version) << key;
    live += RecordSize(key.size(), it->second.value.size());
  }
  EXPECT_EQ(p.Stats().keys, model.size());
  EXPECT_EQ(p.Stats().live_bytes, live);
}

TEST_P(ModelTest, AgreesWithMapAcrossReopens) {
  for (int seed = 0; seed < 60; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed);
    MemFileSystem fs;
    PartitionOptions o = SmallOptions(&fs, GetParam());
    o.write_buffer_size = 128 + rng() % 4096;
    const int key_space = 10 + rng() % 200;
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    std::map<std::string, Entry> model;
    std::vector<WriteOp> ops;
    std::vector<std::string> keys, values;
    std::vector<WriteResult> results;
    for (int step = 0; step < 8; ++step) {
      const int n = 200 + rng() % 800;
      for (int i = 0; i < n; ++i) {
        const size_t batch = rng() % 3 == 0 ? 1 + rng() % 20 : 1;
        keys.clear();
        values.clear();
        for (size_t b = 0; b < batch; ++b) {
          keys.push_back(absl::StrCat("k", rng() % key_space));
          values.push_back(std::string(rng() % 300, static_cast<char>('a' + rng() % 26)));
        }
        ops.clear();
        for (size_t b = 0; b < batch; ++b) {
          WriteOp op = rng() % 4 == 0 ? WriteOp::Delete(keys[b])
                                      : WriteOp::Put(keys[b], values[b]);
          op.return_previous = rng() % 2;
          if (rng() % 5 == 0) {
            auto it = model.find(keys[b]);
            const uint64_t cur = it == model.end() ? 0 : it->second.version;
            op.expected_version = rng() % 3 == 0 ? cur + 1 : cur;
          }
          ops.push_back(op);
        }
        ASSERT_THAT(p->get()->ApplyBatch(ops, &results), IsOk());
        for (size_t b = 0; b < batch; ++b) {
          const WriteOp& op = ops[b];
          const WriteResult& res = results[b];
          auto it = model.find(std::string(op.key));
          const uint64_t cur = it == model.end() ? 0 : it->second.version;
          ASSERT_EQ(res.previous_version, cur);
          ASSERT_EQ(res.existed, it != model.end());
          if (op.expected_version.has_value() && *op.expected_version != cur) {
            ASSERT_THAT(res.status, StatusIs(absl::StatusCode::kFailedPrecondition));
            continue;
          }
          ASSERT_THAT(res.status, IsOk());
          if (op.return_previous && it != model.end()) {
            ASSERT_EQ(res.previous_value, it->second.value);
          }
          if (op.type == WriteOp::Type::kPut) {
            ASSERT_GT(res.version, cur);
            model[std::string(op.key)] = Entry{std::string(op.value), res.version};
          } else if (it != model.end()) {
            model.erase(it);
          }
        }
      }
      CheckAgainstModel(**p, model, key_space);
      if (rng() % 2) {
        ASSERT_THAT((*p)->Close(), IsOk());
        p->reset();
        p = Partition::Open(o);
        ASSERT_THAT(p, IsOk());
        CheckAgainstModel(**p, model, key_space);
      }
    }
  }
}

// Applies `n` random batches to `p` and `model`, checking every result.
// Most writes go to a few hot keys, so segments age unevenly: cold keys keep
// old segments partly live while later ones die, and compaction at a
// middling ratio picks segments that have older ones behind them. Every
// write's version must be above `*newest`, the highest any write got so
// far (across reopens and crashes too: every write is durable by then),
// which it then becomes.
void RandomBatches(Partition& p, std::map<std::string, Entry>& model,
                   std::mt19937_64& rng, int n, int key_space, bool tick,
                   uint64_t* newest) {
  std::vector<WriteOp> ops;
  std::vector<std::string> keys, values;
  std::vector<WriteResult> results;
  for (int i = 0; i < n; ++i) {
    const size_t batch = rng() % 4 == 0 ? 1 + rng() % 12 : 1;
    keys.clear();
    values.clear();
    for (size_t b = 0; b < batch; ++b) {
      const int hot = std::max(1, key_space / 10);
      keys.push_back(absl::StrCat("k", rng() % 3 ? rng() % hot : rng() % key_space));
      values.push_back(std::string(rng() % 5 == 0 ? 200 + rng() % 300 : rng() % 80,
                                   static_cast<char>('a' + rng() % 26)));
    }
    ops.clear();
    for (size_t b = 0; b < batch; ++b) {
      const bool del = rng() % 4 == 0;
      if (del) keys[b] = absl::StrCat("k", rng() % key_space);  // any key
      WriteOp op = del ? WriteOp::Delete(keys[b]) : WriteOp::Put(keys[b], values[b]);
      if (rng() % 6 == 0) {
        auto it = model.find(std::string(op.key));
        const uint64_t cur = it == model.end() ? 0 : it->second.version;
        op.expected_version = rng() % 3 == 0 ? cur + 1 : cur;
      }
      ops.push_back(op);
    }
    ASSERT_THAT(p.ApplyBatch(ops, &results), IsOk());
    for (size_t b = 0; b < batch; ++b) {
      const WriteOp& op = ops[b];
      const WriteResult& res = results[b];
      auto it = model.find(std::string(op.key));
      const uint64_t cur = it == model.end() ? 0 : it->second.version;
      ASSERT_EQ(res.previous_version, cur) << op.key;
      if (op.expected_version.has_value() && *op.expected_version != cur) {
        ASSERT_THAT(res.status, StatusIs(absl::StatusCode::kFailedPrecondition));
        continue;
      }
      ASSERT_THAT(res.status, IsOk());
      if (op.type == WriteOp::Type::kPut || it != model.end()) {
        ASSERT_GT(res.version, *newest) << op.key << ": a version was handed out again";
        *newest = res.version;
      }
      if (op.type == WriteOp::Type::kPut) {
        ASSERT_GT(res.version, cur);
        model[std::string(op.key)] = Entry{std::string(op.value), res.version};
      } else if (it != model.end()) {
        model.erase(it);
      }
    }
    if (tick) {
      ASSERT_THAT(p.Tick(), IsOk());
    }
  }
}

TEST_P(ModelTest, AgreesWithMapAcrossCheckpointsCompactionsAndCrashes) {
  const Durability durability = GetParam();
  int checkpoints = 0, compacted = 0, crashes = 0, from_checkpoint = 0;
  for (int seed = 0; seed < 40; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed * 7919 + 17);
    MemFileSystem fs;
    PartitionOptions o = SmallOptions(&fs, durability);
    o.write_buffer_size = 128 + rng() % 4096;
    o.sync_interval = absl::Hours(1);  // syncs only when asked
    o.checkpoint_interval = rng() % 3 == 0 ? absl::Nanoseconds(1) : absl::ZeroDuration();
    o.checkpoints_to_keep = 1 + rng() % 3;
    const double auto_ratios[] = {0.3, 0.6, 2.0};
    o.compaction_dead_ratio = auto_ratios[rng() % 3];
    const uint64_t steps[] = {256, 2048, 256 << 10};
    o.compaction_min_step = steps[rng() % 3];
    o.compaction_work_ratio = rng() % 2 ? 0.1 : 2.0;
    const double space_limits[] = {0, 1.5, 3.0};
    o.compaction_space_limit = space_limits[rng() % 3];
    o.checkpoint_on_close = rng() % 2 == 0;
    // Mostly the index walk (the default), sometimes every victim read.
    o.compaction_shortcuts = rng() % 4 != 0;
    o.compaction_min_age_segments = rng() % 2 ? 1.0 : 0.0;
    const int key_space = 20 + rng() % 150;
    std::unique_ptr<Partition> p;
    {
      auto opened = Partition::Open(o);
      ASSERT_THAT(opened, IsOk());
      p = std::move(*opened);
    }
    std::map<std::string, Entry> model;
    uint64_t newest = 0;
    for (int step = 0; step < 20; ++step) {
      SCOPED_TRACE(absl::StrCat("step ", step));
      Partition& part = *p;
      ASSERT_NO_FATAL_FAILURE(RandomBatches(part, model, rng, 100 + rng() % 300,
                                            key_space, /*tick=*/rng() % 2 == 0,
                                            &newest));
      switch (rng() % 8) {
        case 0: {
          auto info = part.Checkpoint();
          ASSERT_THAT(info, IsOk());
          EXPECT_EQ(info->covered_address, part.Stats().tail_address);
          ++checkpoints;
          break;
        }
        case 1:
          ASSERT_THAT(part.StartCheckpoint(), IsOk());  // Ticks finish it
          break;
        case 2: {
          const double ratios[] = {0.0, 0.25, 0.5, 0.9};
          ASSERT_THAT(part.Compact(ratios[rng() % 4]), IsOk());
          EXPECT_FALSE(part.compaction_running());
          break;
        }
        case 3:
          part.StartCompaction(rng() % 2 ? 0.0 : 0.5);  // Ticks run it
          break;
        case 4:
        case 5: {
          // Clean reopen (Close finishes any running checkpoint).
          ASSERT_THAT(part.Close(), IsOk());
          p.reset();
          auto opened = Partition::Open(o);
          ASSERT_THAT(opened, IsOk());
          p = std::move(*opened);
          from_checkpoint += p->Stats().recovered.checkpoint_id.has_value();
          break;
        }
        case 6: {
          // Crash, with whatever checkpoint or compaction is running. Under
          // `always` every acknowledged write is durable; otherwise sync
          // first so the model still holds.
          if (durability != Durability::kAlways || rng() % 2) {
            ASSERT_THAT(part.Sync(), IsOk());
          }
          // The process dies: its Close() (which would finish the
          // checkpoint, take one at close, finish removals) writes nothing.
          fs.KillAfterOps(0);
          p.reset();
          fs.Crash(rng(), /*keep_unsynced=*/rng() % 2 == 0);
          auto opened = Partition::Open(o);
          ASSERT_THAT(opened, IsOk());
          p = std::move(*opened);
          from_checkpoint += p->Stats().recovered.checkpoint_id.has_value();
          ++crashes;
          break;
        }
        default:
          break;
      }
      // Let running background work make progress.
      for (int t = 0; t < 20; ++t) {
        ASSERT_THAT(p->Tick(), IsOk());
      }
      const PartitionStats stats = p->Stats();
      EXPECT_TRUE(stats.compaction.last_error.empty()) << stats.compaction.last_error;
      EXPECT_EQ(stats.checkpoints.failed, 0u) << stats.checkpoints.last_error;
      compacted += stats.compaction.segments_compacted > 0;
      ASSERT_NO_FATAL_FAILURE(CheckAgainstModel(*p, model, key_space));
    }
    // Finish, then a full replay must give exactly the model, versions too.
    for (int t = 0; p->compaction_running() || p->checkpoint_running(); ++t) {
      ASSERT_THAT(p->Tick(), IsOk());
      ASSERT_LT(t, 1000000) << "background work never finished";
    }
    ASSERT_NO_FATAL_FAILURE(CheckAgainstModel(*p, model, key_space));
    auto dump = DumpAll(*p);
    ASSERT_THAT(dump, IsOk());
    ASSERT_THAT(p->Close(), IsOk());
    p.reset();
    Dump want;
    for (const auto& [key, e] : model) want[key] = {e.value, e.version};
    EXPECT_EQ(*dump, want);
    auto full = FullReplayDump(o);
    ASSERT_THAT(full, IsOk());
    EXPECT_EQ(*full, want);
  }
  // The random schedule did exercise what it is meant to.
  EXPECT_GT(checkpoints, 5);
  EXPECT_GT(compacted, 5);
  EXPECT_GT(crashes, 5);
  EXPECT_GT(from_checkpoint, 5);
}

INSTANTIATE_TEST_SUITE_P(Policies, ModelTest,
                         ::testing::Values(Durability::kAlways,
                                           Durability::kInterval,
                                           Durability::kNone),
                         [](const auto& info) {
                           return std::string(DurabilityName(info.param));
                         });

}  // namespace
}  // namespace segkv::worker
