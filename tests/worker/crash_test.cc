// Crash simulation through the file-system seam. Each run does random
// writes (single ops, batches, compare-and-set, deletes) on tiny segments,
// with fsync and write failures injected at random points, then crashes the
// in-memory file system (unsynced bytes lost or torn) and recovers.
//
// Under `always`: every acknowledged write is present after recovery, no
// older version of a key comes back and no deleted key comes back; the
// only other values allowed are those of writes that failed (their outcome
// is unknown to the client). Under `none`/`interval`: the recovered state
// is the state after some prefix of the acknowledged writes, no shorter
// than what the last explicit Sync() covered.
#include <cerrno>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::SmallOptions;

constexpr char kMissing[] = "<missing>";

struct Versioned {
  std::string value = kMissing;
  uint64_t version = 0;
};

std::string RandomValue(std::mt19937_64& rng) {
  const size_t len = rng() % 5 == 0 ? rng() % 500 : rng() % 40;
  std::string v(len, '\0');
  for (auto& c : v) c = static_cast<char>('a' + rng() % 26);
  return v;
}

std::string RandomKey(std::mt19937_64& rng) {
  return absl::StrCat("key-", rng() % 24);
}

PartitionOptions CrashOptions(MemFileSystem* fs, Durability d,
                              std::mt19937_64& rng) {
  PartitionOptions o = SmallOptions(fs, d);
  o.write_buffer_size = 256 + rng() % 2048;
  o.max_unsynced_bytes = rng() % 2 ? 0 : 1024 + rng() % 4096;
  return o;
}

// `none` or `interval` by the seed's parity, and only explicit syncs.
PartitionOptions ExplicitSyncOptions(MemFileSystem* fs, int seed, std::mt19937_64& rng) {
  PartitionOptions o =
      CrashOptions(fs, seed % 2 ? Durability::kNone : Durability::kInterval, rng);
  o.sync_interval = absl::Hours(1);
  return o;
}

// Runs `ops` random operations, reporting each acknowledged one to
// on_ack(op, result) and each failed one that may have reached the disk to
// on_fail(op). (A partition that already refuses writes, after a failed
// sync, writes nothing: its refusals are not reported, so a lost value of
// such a key still fails the test.)
template <typename OnAck, typename OnFail>
void RandomOps(Partition& p, std::mt19937_64& rng, int ops,
               std::map<std::string, Versioned>& current, OnAck on_ack,
               OnFail on_fail) {
  std::vector<std::string> keys, values;
  std::vector<WriteOp> batch;
  std::vector<WriteResult> results;
  for (int n = 0; n < ops; ++n) {
    const size_t size = rng() % 4 == 0 ? 1 + rng() % 12 : 1;
    keys.clear();
    values.clear();
    for (size_t i = 0; i < size; ++i) {
      keys.push_back(RandomKey(rng));
      values.push_back(RandomValue(rng));
    }
    batch.clear();
    for (size_t i = 0; i < size; ++i) {
      WriteOp op = rng() % 5 == 0 ? WriteOp::Delete(keys[i])
                                  : WriteOp::Put(keys[i], values[i]);
      if (rng() % 6 == 0) {
        // Usually the right version; sometimes a wrong one.
        op.expected_version = current[keys[i]].version + (rng() % 4 == 0);
      }
      batch.push_back(op);
    }
    const bool refusing = !p.Stats().error.empty();
    p.ApplyBatch(batch, &results).IgnoreError();
    for (size_t i = 0; i < size; ++i) {
      if (refusing) {
        EXPECT_FALSE(results[i].status.ok()) << "a failed partition took a write";
        continue;
      }
      if (results[i].status.ok()) {
        Versioned& v = current[keys[i]];
        if (batch[i].type == WriteOp::Type::kPut) {
          v = {std::string(batch[i].value), results[i].version};
        } else if (results[i].existed) {
          v = {kMissing, 0};
        }
        on_ack(batch[i]);
      } else if (results[i].status.code() != absl::StatusCode::kFailedPrecondition &&
                 results[i].status.code() != absl::StatusCode::kInvalidArgument) {
        on_fail(batch[i]);
      }
    }
  }
}

class CrashTest : public ::testing::TestWithParam<int> {};

TEST_P(CrashTest, AcknowledgedWritesSurviveUnderAlways) {
  const int first = GetParam() * 250;
  for (int seed = first; seed < first + 250; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed);
    MemFileSystem fs;
    PartitionOptions o = CrashOptions(&fs, Durability::kAlways, rng);
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());

    std::map<std::string, Versioned> acked;
    // Values a key may also hold after the crash: those of failed writes
    // since the key's last acknowledged one.
    std::map<std::string, std::set<std::string>> maybe;
    auto on_ack = [&](const WriteOp& op) { maybe.erase(std::string(op.key)); };
    auto on_fail = [&](const WriteOp& op) {
      maybe[std::string(op.key)].insert(
          op.type == WriteOp::Type::kPut ? std::string(op.value) : kMissing);
    };
    const int rounds = 1 + rng() % 3;
    for (int round = 0; round < rounds; ++round) {
      RandomOps(**p, rng, 10 + rng() % 60, acked, on_ack, on_fail);
      if (rng() % 2) {
        // Fail a later write or fsync: it may hit a group commit, a seal's
        // segment creation, directory sync or manifest write.
        if (rng() % 2) {
          fs.FailSyncsAfter(rng() % 6, EIO);
        } else {
          fs.FailAppendsAfter(rng() % 6, rng() % 2 ? EIO : ENOSPC);
        }
        RandomOps(**p, rng, 5 + rng() % 20, acked, on_ack, on_fail);
      }
      fs.KillAfterOps(0);  // the process dies: Close() writes nothing
      p->reset();
      fs.Crash(rng(), /*keep_unsynced=*/rng() % 4 != 0);
      p = Partition::Open(o);
      ASSERT_THAT(p, IsOk());

      ReadResult r;
      for (auto& [key, want] : acked) {
        ASSERT_THAT((*p)->Get(key, &r), IsOk());
        const std::string got = r.found ? r.value : kMissing;
        if (got == want.value) {
          if (r.found) {
            EXPECT_EQ(r.version, want.version) << key;
          }
        } else {
          ASSERT_TRUE(maybe[key].contains(got))
              << key << " holds \"" << got.substr(0, 20) << "\" (v" << r.version
              << "), acknowledged \"" << want.value.substr(0, 20) << "\" (v"
              << want.version << ")";
          if (r.found) {
            EXPECT_GT(r.version, want.version) << key << ": an older version came back";
          }
        }
        // What recovery shows becomes the truth the next round checks.
        want = {got, r.version};
      }
      maybe.clear();
    }
  }
}

TEST_P(CrashTest, RecoveredStateIsAPrefixUnderNoneAndInterval) {
  const int first = GetParam() * 150;
  for (int seed = first; seed < first + 150; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed);
    MemFileSystem fs;
    const PartitionOptions o = ExplicitSyncOptions(&fs, seed, rng);
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());

    std::map<std::string, Versioned> current;
    std::vector<std::map<std::string, Versioned>> states = {current};
    size_t durable = 0;  // states[durable] was synced
    for (int step = 0; step < 8; ++step) {
      RandomOps(**p, rng, 1 + rng() % 15, current,
                [&](const WriteOp&) { states.push_back(current); },
                [&](const WriteOp&) { FAIL() << "no faults injected here"; });
      if (rng() % 3 == 0) {
        ASSERT_THAT((*p)->Sync(), IsOk());
        durable = states.size() - 1;
      }
    }
    fs.KillAfterOps(0);  // the process dies: Close() writes nothing
    p->reset();
    fs.Crash(rng(), rng() % 4 != 0);
    auto q = Partition::Open(o);
    ASSERT_THAT(q, IsOk());
    std::map<std::string, std::string> recovered;
    ReadResult r;
    for (const auto& [key, v] : current) {
      ASSERT_THAT((*q)->Get(key, &r), IsOk());
      if (r.found) recovered[key] = r.value;
    }
    bool matched = false;
    for (size_t k = durable; k < states.size() && !matched; ++k) {
      std::map<std::string, std::string> expect;
      for (const auto& [key, v] : states[k]) {
        if (v.value != kMissing) expect[key] = v.value;
      }
      matched = expect == recovered;
    }
    EXPECT_TRUE(matched) << "recovered state is no prefix at or after the last sync ("
                         << durable << " of " << states.size() - 1 << " ops)";
  }
}

// Faults under `none` and `interval`: a failed write keeps acknowledged
// groups buffered to retry, a failed fsync fails the log. After a crash
// every key holds what the last successful Sync() made durable or a value
// written (acknowledged or not) after it; nothing synced is lost and
// nothing never written appears.
TEST_P(CrashTest, SyncedWritesSurviveFaultsUnderNoneAndInterval) {
  const int first = GetParam() * 150;
  for (int seed = first; seed < first + 150; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed);
    MemFileSystem fs;
    const PartitionOptions o = ExplicitSyncOptions(&fs, seed, rng);
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());

    std::map<std::string, Versioned> current;     // acknowledged state
    std::map<std::string, std::string> synced;    // as of the last good Sync
    std::map<std::string, std::set<std::string>> since;  // written after it
    auto written = [&](const WriteOp& op) {
      since[std::string(op.key)].insert(
          op.type == WriteOp::Type::kPut ? std::string(op.value) : kMissing);
    };
    const int fault_step = static_cast<int>(rng() % 10);
    for (int step = 0; step < 10; ++step) {
      if (step == fault_step) {
        if (rng() % 2) {
          fs.FailSyncsAfter(rng() % 4, EIO);
        } else {
          fs.FailAppendsAfter(rng() % 4, rng() % 2 ? EIO : ENOSPC);
        }
      }
      RandomOps(**p, rng, 1 + rng() % 15, current, written, written);
      if (rng() % 3 == 0 && (*p)->Sync().ok()) {
        synced.clear();
        for (const auto& [key, v] : current) synced[key] = v.value;
        since.clear();
      }
    }
    fs.KillAfterOps(0);  // the process dies: Close() writes nothing
    p->reset();
    fs.FailSyncsAfter(-1, 0);
    fs.FailAppendsAfter(-1, 0);
    fs.Crash(rng(), rng() % 4 != 0);
    auto q = Partition::Open(o);
    ASSERT_THAT(q, IsOk());
    std::set<std::string> keys;
    for (const auto& [key, v] : current) keys.insert(key);
    for (const auto& [key, v] : since) keys.insert(key);  // never acknowledged too
    ReadResult r;
    for (const std::string& key : keys) {
      ASSERT_THAT((*q)->Get(key, &r), IsOk());
      const std::string got = r.found ? r.value : kMissing;
      const auto s = synced.find(key);
      const std::string durable = s == synced.end() ? kMissing : s->second;
      EXPECT_TRUE(got == durable || since[key].contains(got))
          << key << " holds \"" << got.substr(0, 20) << "\", synced \""
          << durable.substr(0, 20) << "\"";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, CrashTest, ::testing::Range(0, 4));

}  // namespace
}  // namespace segkv::worker
