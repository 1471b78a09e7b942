// Kill points: a scenario of writes, checkpoints, overwrites, deletes and a
// compaction runs once to count its mutating file-system operations, then
// again on a fresh file system for every n in [0, count], killed after n of
// them (MemFileSystem::KillAfterOps: every later operation fails, as if the
// process had died there). The scenario stops at its first error; then the
// file system crashes (unsynced data lost or torn) and the partition is
// reopened.
//
// Under `always`: every write acknowledged before the kill is there with
// its value and version; a key holds either its last acknowledged value or
// that of a write that failed after it (its outcome is unknown); no deleted
// key comes back and no key that was never written appears. Recovery from
// whatever checkpoint survived gives the same contents as a full replay.
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::Dump;
using ::segkv::worker::testing::DumpAll;
using ::segkv::worker::testing::FullReplayDump;
using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::SmallOptions;

constexpr char kMissing[] = "<missing>";

struct Acked {
  std::string value = kMissing;
  uint64_t version = 0;
};

// One run of the scenario and what the client learnt from it.
class ScenarioRun {
 public:
  // `automatic`: compaction runs in Tick() after every write step (as in a
  // worker: segments finish, wait for a log sync, then go) instead of one
  // Compact(), and Close() takes a checkpoint.
  ScenarioRun(uint64_t seed, bool automatic) : rng_(seed), automatic_(automatic) {
    o_ = SmallOptions(&fs_);
    o_.checkpoint_interval = absl::ZeroDuration();  // only on demand
    o_.compaction_dead_ratio = 2;                   // only on demand
    if (automatic) {
      o_.compaction_dead_ratio = 0.5;
      o_.compaction_min_step = 512;
      o_.compaction_work_ratio = 4;
      o_.checkpoint_on_close = true;
    }
  }
  const Partition* partition() const { return p_.get(); }

  MemFileSystem& fs() { return fs_; }
  const PartitionOptions& options() const { return o_; }
  const std::map<std::string, Acked>& acked() const { return acked_; }
  const std::map<std::string, std::set<std::string>>& maybe() const { return maybe_; }
  // Drops the partition object (after a crash its handles are dead).
  void Abandon() { p_.reset(); }

  // Writes, Checkpoint(), overwrites and deletes, Compact(0.0), more
  // writes, Checkpoint(), a few writes, Close(). Returns the first error.
  absl::Status Scenario() {
    auto p = Partition::Open(o_);
    if (!p.ok()) return p.status();
    p_ = std::move(*p);
    if (absl::Status s = Writes(50, /*delete_one_in=*/0); !s.ok()) return s;
    if (auto c = p_->Checkpoint(); !c.ok()) return c.status();
    if (absl::Status s = Writes(60, /*delete_one_in=*/3); !s.ok()) return s;
    if (!automatic_) {
      if (absl::Status s = p_->Compact(0.0); !s.ok()) return s;
    }
    if (absl::Status s = Writes(40, /*delete_one_in=*/5); !s.ok()) return s;
    if (auto c = p_->Checkpoint(); !c.ok()) return c.status();
    if (absl::Status s = Writes(10, /*delete_one_in=*/4); !s.ok()) return s;
    return p_->Close();
  }

 private:
  std::string Key() { return absl::StrCat("key", rng_() % 16); }
  std::string Value(const std::string& key) {
    const size_t len = rng_() % 3 == 0 ? 150 + rng_() % 300 : 20 + rng_() % 120;
    std::string v = absl::StrCat(key, "#", ++n_, ":");
    v.resize(len, static_cast<char>('a' + n_ % 26));
    return v;
  }

  // `n` steps, each a single write or (one in five) a batch of 2..6.
  absl::Status Writes(int n, int delete_one_in) {
    std::vector<std::string> keys, values;
    std::vector<WriteOp> ops;
    std::vector<WriteResult> results;
    for (int i = 0; i < n; ++i) {
      const size_t size = rng_() % 5 == 0 ? 2 + rng_() % 5 : 1;
      keys.clear();
      values.clear();
      for (size_t b = 0; b < size; ++b) {
        keys.push_back(Key());
        values.push_back(Value(keys.back()));
      }
      ops.clear();
      for (size_t b = 0; b < size; ++b) {
        const bool del = delete_one_in > 0 && rng_() % delete_one_in == 0;
        ops.push_back(del ? WriteOp::Delete(keys[b]) : WriteOp::Put(keys[b], values[b]));
      }
      const absl::Status s = p_->ApplyBatch(ops, &results);
      if (results.size() != ops.size()) {
        return absl::InternalError("ApplyBatch returned too few results");
      }
      for (size_t b = 0; b < size; ++b) {
        const std::string key(ops[b].key);
        const bool put = ops[b].type == WriteOp::Type::kPut;
        if (results[b].status.ok()) {
          acked_[key] = put ? Acked{std::string(ops[b].value), results[b].version}
                            : Acked{};
          maybe_.erase(key);
        } else {
          maybe_[key].insert(put ? std::string(ops[b].value) : kMissing);
        }
      }
      if (!s.ok()) return s;
      for (const WriteResult& r : results) {
        if (!r.status.ok()) return r.status;
      }
      if (automatic_) {
        if (absl::Status t = p_->Tick(); !t.ok()) return t;
      }
    }
    return absl::OkStatus();
  }

  MemFileSystem fs_;
  PartitionOptions o_;
  std::unique_ptr<Partition> p_;
  std::mt19937_64 rng_;
  const bool automatic_;
  int n_ = 0;
  std::map<std::string, Acked> acked_;
  std::map<std::string, std::set<std::string>> maybe_;
};

// Checks the recovered `dump` against what run `r` acknowledged.
void CheckRecovered(const ScenarioRun& r, const Dump& dump) {
  for (const auto& [key, stored] : dump) {
    ASSERT_TRUE(r.acked().contains(key) || r.maybe().contains(key))
        << key << " was never written but holds \"" << stored.value.substr(0, 20) << "\"";
  }
  std::set<std::string> keys;
  for (const auto& [key, a] : r.acked()) keys.insert(key);
  for (const auto& [key, m] : r.maybe()) keys.insert(key);
  for (const std::string& key : keys) {
    auto it = dump.find(key);
    const std::string got = it == dump.end() ? kMissing : it->second.value;
    const uint64_t got_version = it == dump.end() ? 0 : it->second.version;
    auto a = r.acked().find(key);
    const Acked want = a == r.acked().end() ? Acked{} : a->second;
    if (got == want.value) {
      if (it != dump.end()) {
        EXPECT_EQ(got_version, want.version) << key;
      }
      continue;
    }
    auto m = r.maybe().find(key);
    ASSERT_TRUE(m != r.maybe().end() && m->second.contains(got))
        << key << " holds \"" << got.substr(0, 20) << "\" (v" << got_version
        << "); last acknowledged \"" << want.value.substr(0, 20) << "\" (v"
        << want.version << ")"
        << (got == kMissing ? ": an acknowledged write was lost"
                            : ": an older or unknown value came back");
    if (it != dump.end()) {
      EXPECT_GT(got_version, want.version) << key << ": version went back";
    }
  }
}

void RunEveryKillPoint(bool automatic) {
  int runs = 0;
  for (uint64_t seed : {1, 2}) {
    SCOPED_TRACE(absl::StrCat("scenario seed ", seed));
    uint64_t count = 0;
    {
      ScenarioRun dry(seed, automatic);
      ASSERT_THAT(dry.Scenario(), IsOk());
      count = dry.fs().MutatingOps();
      if (automatic) {
        // The scenario exercises what it is meant to.
        const PartitionStats st = dry.partition()->Stats();
        EXPECT_GT(st.compaction.segments_compacted, 0u);
        EXPECT_EQ(st.checkpoints.taken, 3u) << "two asked for, one at close";
      }
    }
    ASSERT_GT(count, 100u);
    int killed_in_open = 0, completed = 0;
    for (uint64_t n = 0; n <= count; ++n) {
      for (bool keep : {false, true}) {
        SCOPED_TRACE(absl::StrCat("killed after ", n, " of ", count,
                                  " operations, keep_unsynced ", keep));
        ++runs;
        ScenarioRun run(seed, automatic);
        run.fs().KillAfterOps(n);
        const absl::Status s = run.Scenario();
        if (n == count) {
          ASSERT_THAT(s, IsOk()) << "the scenario is not deterministic";
          ++completed;
        } else {
          // Every foreground operation of the scenario matters: a failed
          // one must surface as an error, not be swallowed. (Background
          // work, compaction in Tick() and the checkpoint at close, only
          // records its failures; with it, a kill may surface only later.)
          if (!automatic) {
            EXPECT_FALSE(s.ok()) << "the scenario succeeded although killed";
          }
          ASSERT_TRUE(run.fs().killed());
        }
        if (run.acked().empty() && run.maybe().empty()) ++killed_in_open;
        // Dropped while still killed: the dead process's Close() writes
        // nothing.
        run.Abandon();
        run.fs().Crash(seed * 100003 + n * 2 + keep, keep);

        auto p = Partition::Open(run.options());
        ASSERT_THAT(p, IsOk());
        auto dump = DumpAll(**p);
        ASSERT_THAT(dump, IsOk());
        ASSERT_NO_FATAL_FAILURE(CheckRecovered(run, *dump));
        // The recovered partition works: a write, a checkpoint, a reopen.
        auto w = (*p)->Put("after-recovery", "x");
        ASSERT_THAT(w, IsOk());
        (*dump)["after-recovery"] = {"x", w->version};
        ASSERT_THAT((*p)->Checkpoint(), IsOk());
        ASSERT_THAT((*p)->Close(), IsOk());
        p->reset();
        auto q = Partition::Open(run.options());
        ASSERT_THAT(q, IsOk());
        EXPECT_TRUE((*q)->Stats().recovered.checkpoint_id.has_value());
        auto again = DumpAll(**q);
        ASSERT_THAT(again, IsOk());
        EXPECT_EQ(*again, *dump);
        ASSERT_THAT((*q)->Close(), IsOk());
        q->reset();
        // A full replay agrees with recovery from the checkpoint.
        auto full = FullReplayDump(run.options());
        ASSERT_THAT(full, IsOk());
        ASSERT_EQ(*full, *dump);
      }
    }
    EXPECT_GT(killed_in_open, 0);
    EXPECT_EQ(completed, 2);
  }
  EXPECT_GT(runs, 400);
}

// Recovery writes too (orphans and tmp files removed, the torn tail cut and
// synced, the unsynced window rewritten, the directory synced, unusable
// checkpoints dropped). Killed at each of its steps, then a power loss: no
// step may destroy what was durable, so the next recovery must still find
// every acknowledged write. The recovery starts either after a crash or
// after the process alone died (its unsynced bytes and names still there).
// (That recovery makes those durable before building on them is checked by
// the restart-then-power-loss tests below.) With `new_limits` the restart
// runs with another write buffer size, hence another torn window: it judges
// and rewrites the tail with the window the segment records, and its first
// write (here a Delete of a key never written, which writes no record)
// seals that segment first; the kills reach into that seal too.
TEST(KillPointTest, EveryKillDuringRecoveryThenAPowerLoss) {
  constexpr uint64_t kSeed = 3;
  uint64_t count = 0;
  {
    ScenarioRun dry(kSeed, /*automatic=*/false);
    ASSERT_THAT(dry.Scenario(), IsOk());
    count = dry.fs().MutatingOps();
  }
  int recoveries = 0;
  int window_changed = 0;
  for (bool new_limits : {false, true})
  for (bool crash_first : {false, true})
  for (uint64_t n : {count / 4, count / 2, 3 * count / 4}) {
    auto restart_options = [&](ScenarioRun& run) {
      PartitionOptions o = run.options();
      if (new_limits) o.write_buffer_size *= 2;
      return o;
    };
    // Recovery, and with new limits the first write after it.
    auto restart = [&](ScenarioRun& run, LogRecoveryStats* stats) -> absl::Status {
      auto p = Partition::Open(restart_options(run));
      if (!p.ok()) return p.status();
      if (stats != nullptr) *stats = (*p)->Stats().recovery;
      if (!new_limits) return absl::OkStatus();
      const size_t segments = (*p)->Segments().size();
      auto d = (*p)->Delete("~never-written");
      if (!d.ok()) return d.status();
      if ((*p)->Segments().size() != segments + 1) {
        return absl::InternalError("the first write did not seal");
      }
      return absl::OkStatus();
    };
    // The state a kill after n operations (and a crash) leave, rebuilt for
    // every kill point of the recovery that follows.
    auto make = [&](ScenarioRun& run) {
      run.fs().KillAfterOps(n);
      EXPECT_FALSE(run.Scenario().ok());
      run.Abandon();  // while killed: the dead process closes nothing
      run.fs().KillAfterOps(-1);
      if (crash_first) run.fs().Crash(n, /*keep_unsynced=*/true);
    };
    uint64_t open_ops = 0;
    {
      ScenarioRun run(kSeed, false);
      make(run);
      const uint64_t before = run.fs().MutatingOps();
      LogRecoveryStats stats;
      ASSERT_THAT(restart(run, &stats), IsOk());
      open_ops = run.fs().MutatingOps() - before;
      window_changed += stats.window_changed;
      EXPECT_EQ(stats.window_changed, new_limits ? 1u : 0u);
    }
    ASSERT_GT(open_ops, 0u);
    for (uint64_t k = 0; k < open_ops; ++k) {
      SCOPED_TRACE(absl::StrCat("scenario killed after ", n, crash_first ? ", crash" : "",
                                new_limits ? ", new limits" : "",
                                "; recovery killed after ", k, " of ", open_ops));
      ScenarioRun run(kSeed, false);
      make(run);
      run.fs().KillAfterOps(k);
      restart(run, nullptr).IgnoreError();
      EXPECT_TRUE(run.fs().killed()) << "recovery ended before the kill point";
      run.fs().KillAfterOps(-1);
      run.fs().Crash(1000 + k, /*keep_unsynced=*/false);
      auto p = Partition::Open(restart_options(run));
      ASSERT_THAT(p, IsOk());
      auto dump = DumpAll(**p);
      ASSERT_THAT(dump, IsOk());
      ASSERT_NO_FATAL_FAILURE(CheckRecovered(run, *dump));
      ++recoveries;
    }
  }
  EXPECT_GT(recoveries, 20);
  EXPECT_EQ(window_changed, 6);
}

// A process killed mid-write can leave what it appended, renamed or created
// visible but not durable (the kernel still has it; the machine did not
// crash). The next process builds on what it sees, so before that it must
// make it durable: the tests below restart on the live file system, work,
// and only then lose power.

// Puts 300-byte values of `key` until less than 400 bytes of segment 0 are
// left (SmallOptions: 8 KiB segments). Returns the last value.
std::string FillFirstSegment(Partition& p, const std::string& key) {
  std::string last;
  for (int i = 0; p.Stats().tail_address < (8 << 10) - 400; ++i) {
    last = absl::StrCat("acked", i);
    last.resize(300, 'v');
    EXPECT_THAT(p.Put(key, last), IsOk());
  }
  return last;
}

std::string ValueOf(Partition& p, const std::string& key) {
  ReadResult r;
  EXPECT_THAT(p.Get(key, &r), IsOk());
  return r.found ? r.value : kMissing;
}

// Put(key, "unacked") fails after its append and before its fdatasync,
// as in a process killed there. (The kill stays until KillAfterOps(-1).)
void KillDuringTheSyncOfAPut(MemFileSystem& fs, Partition& p, const std::string& key) {
  fs.KillAfterOps(1);  // the append lands; its fdatasync never happens
  EXPECT_FALSE(p.Put(key, "unacked").ok());
}

// After the power loss: "k" holds its last acknowledged value `acked` or
// the unacknowledged one, and "j" the 512 bytes written after the restart.
void ExpectKAndJAfterThePowerLoss(const PartitionOptions& o, const std::string& acked) {
  auto p = Partition::Open(o);
  ASSERT_THAT(p, IsOk());
  const std::string k = ValueOf(**p, "k");
  EXPECT_TRUE(k == acked || k == "unacked") << "k holds \"" << k.substr(0, 20) << "\"";
  EXPECT_EQ(ValueOf(**p, "j"), std::string(512, 'j'));
}

// Killed before the fdatasync of a write; restarted; compaction drops the
// segment that held the key's acknowledged value, leaving only the
// unsynced record; power loss. The key must still be there.
TEST(KillPointTest, RecoverySyncsTheUnsyncedTailBeforeCompactionDropsOlderCopies) {
  MemFileSystem fs;
  const PartitionOptions o = SmallOptions(&fs);
  std::string acked;
  {
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    acked = FillFirstSegment(**p, "k");
    ASSERT_THAT((*p)->Put("j", std::string(512, 'j')), IsOk());  // seals segment 0
    ASSERT_EQ((*p)->Segments().size(), 2u);
    KillDuringTheSyncOfAPut(fs, **p, "k");
  }
  fs.KillAfterOps(-1);
  {
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    EXPECT_EQ(ValueOf(**p, "k"), "unacked");
    ASSERT_THAT((*p)->Compact(0.0), IsOk());  // segment 0 holds nothing live
    ASSERT_EQ((*p)->Segments().front().id, 1u);
    fs.KillAfterOps(0);  // the process dies: Close() writes nothing
    p->reset();
    fs.Crash(7, /*keep_unsynced=*/false);
  }
  ExpectKAndJAfterThePowerLoss(o, acked);
}

// Killed before the fdatasync of a write; restarted; the next write seals
// the segment (recording its length in the MANIFEST); power loss. The
// sealed segment must still have the length the MANIFEST says.
TEST(KillPointTest, RecoverySyncsTheUnsyncedTailBeforeASealRecordsIt) {
  MemFileSystem fs;
  const PartitionOptions o = SmallOptions(&fs);
  std::string acked;
  {
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    acked = FillFirstSegment(**p, "k");
    KillDuringTheSyncOfAPut(fs, **p, "k");
  }
  fs.KillAfterOps(-1);
  {
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    ASSERT_THAT((*p)->Put("j", std::string(512, 'j')), IsOk());  // seals segment 0
    ASSERT_EQ((*p)->Segments().size(), 2u);
    fs.KillAfterOps(0);  // the process dies: Close() writes nothing
    p->reset();
    fs.Crash(8, /*keep_unsynced=*/false);
  }
  ExpectKAndJAfterThePowerLoss(o, acked);
}

// Killed after each step of a seal (old segment synced, new segment
// created, MANIFEST written and renamed, directory synced); restarted on
// what the kill left; an acknowledged write; power loss. Nothing
// acknowledged may be lost, and the partition must open.
TEST(KillPointTest, EveryKillInASealThenARestartThenAPowerLoss) {
  uint64_t count = 0;
  {
    MemFileSystem fs;
    auto p = Partition::Open(SmallOptions(&fs));
    ASSERT_THAT(p, IsOk());
    FillFirstSegment(**p, "k");
    const uint64_t before = fs.MutatingOps();
    ASSERT_THAT((*p)->Put("seal", std::string(512, 's')), IsOk());
    ASSERT_EQ((*p)->Segments().size(), 2u);
    count = fs.MutatingOps() - before;
  }
  ASSERT_GE(count, 8u);
  for (uint64_t n = 0; n < count; ++n) {
    SCOPED_TRACE(absl::StrCat("killed after ", n, " of the seal's ", count, " operations"));
    MemFileSystem fs;
    const PartitionOptions o = SmallOptions(&fs);
    std::string acked;
    {
      auto p = Partition::Open(o);
      ASSERT_THAT(p, IsOk());
      acked = FillFirstSegment(**p, "k");
      fs.KillAfterOps(n);
      EXPECT_FALSE((*p)->Put("seal", std::string(512, 's')).ok());
    }
    fs.KillAfterOps(-1);
    {
      auto p = Partition::Open(o);
      ASSERT_THAT(p, IsOk());
      ASSERT_THAT((*p)->Put("j", "x"), IsOk());
      fs.KillAfterOps(0);  // the process dies: Close() writes nothing
      p->reset();
      fs.Crash(n, /*keep_unsynced=*/false);
    }
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    EXPECT_EQ(ValueOf(**p, "k"), acked);
    EXPECT_EQ(ValueOf(**p, "j"), "x");
    const std::string seal = ValueOf(**p, "seal");
    EXPECT_TRUE(seal == kMissing || seal == std::string(512, 's'));
  }
}

TEST(KillPointTest, EveryKillPointRecoversAcknowledgedWrites) {
  RunEveryKillPoint(/*automatic=*/false);
}

TEST(KillPointTest, EveryKillPointWithTickCompactionAndCheckpointAtClose) {
  RunEveryKillPoint(/*automatic=*/true);
}

}  // namespace
}  // namespace segkv::worker
