// Segment compaction: a sealed segment whose dead ratio reaches the
// threshold has its live records (and the tombstones an older segment still
// needs) re-appended at the tail with their versions, then leaves the
// MANIFEST and its file is deleted. Contents and versions never change, in
// the running partition, after a reopen (full replay or from a checkpoint)
// and after a crash at any point of the compaction.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/checkpoint.h"
#include "worker/format.h"
#include "worker/manifest.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::CheckpointFiles;
using ::segkv::worker::testing::Dump;
using ::segkv::worker::testing::DumpAll;
using ::segkv::worker::testing::ExpectContents;
using ::segkv::worker::testing::FilesIn;
using ::segkv::worker::testing::FullReplayDump;
using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::SegmentPath;
using ::segkv::worker::testing::SmallOptions;
using ::segkv::worker::testing::StatusIs;
using ::segkv::worker::testing::Stored;
using ::testing::HasSubstr;

// How the partition is reopened at the end of a regression scenario.
enum class Recovery {
  kFullReplay,        // no checkpoint at all
  kCheckpointBefore,  // one taken before the compaction
  kCheckpointBetween, // one taken after the compaction, before the overwrite
  kCheckpointAfter,   // one taken at the very end
};

std::string RecoveryName(Recovery r) {
  switch (r) {
    case Recovery::kFullReplay: return "FullReplay";
    case Recovery::kCheckpointBefore: return "CheckpointBefore";
    case Recovery::kCheckpointBetween: return "CheckpointBetween";
    case Recovery::kCheckpointAfter: return "CheckpointAfter";
  }
  return "?";
}

std::vector<uint64_t> SegmentIds(const Partition& p) {
  std::vector<uint64_t> ids;
  for (const SegmentInfo& s : p.Segments()) ids.push_back(s.id);
  return ids;
}

bool HasSegment(const Partition& p, uint64_t id) {
  const std::vector<uint64_t> ids = SegmentIds(p);
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Segment `id`'s entries in two usage tables are equal.
void ExpectSameUsage(const SegmentUsageTable& x, const SegmentUsageTable& y, uint64_t id) {
  const SegmentUsage a = x.Get(id);
  const SegmentUsage b = y.Get(id);
  EXPECT_EQ(a.total_bytes, b.total_bytes) << "segment " << id;
  EXPECT_EQ(a.live_bytes, b.live_bytes) << "segment " << id;
  EXPECT_EQ(a.tombstone_bytes, b.tombstone_bytes) << "segment " << id;
}

class CompactionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    o_ = SmallOptions(&fs_);
    o_.checkpoint_interval = absl::ZeroDuration();  // only on demand
    o_.compaction_dead_ratio = 2;                   // only on demand
    ASSERT_NO_FATAL_FAILURE(Reopen());
  }

  void Reopen() {
    if (p_ != nullptr) {
      ASSERT_THAT(p_->Close(), IsOk());
      p_.reset();
    }
    auto p = Partition::Open(o_);
    ASSERT_THAT(p, IsOk());
    p_ = std::move(*p);
  }

  std::string Value(absl::string_view key, size_t len = 200) {
    std::string v = absl::StrCat(key, "=", ++n_, ":");
    v.resize(std::max(len, v.size()), static_cast<char>('a' + n_ % 26));
    return v;
  }
  void Put(const std::string& key, size_t len = 200) {
    const std::string value = Value(key, len);
    auto w = p_->Put(key, value);
    ASSERT_THAT(w, IsOk()) << key;
    model_[key] = Stored{value, w->version};
  }
  void Delete(const std::string& key) {
    auto w = p_->Delete(key);
    ASSERT_THAT(w, IsOk()) << key;
    model_.erase(key);
  }
  uint64_t Active() const { return p_->Segments().back().id; }
  // Overwrites `key` until segment `id` is the active one.
  void OverwriteUntilActive(uint64_t id, const std::string& key = "filler") {
    while (Active() < id) ASSERT_NO_FATAL_FAILURE(Put(key));
  }
  // Writes distinct keys prefix0, prefix1, ... until segment `id` is active.
  void FillUntilActive(uint64_t id, const std::string& prefix) {
    for (int i = 0; Active() < id; ++i) {
      ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat(prefix, i)));
    }
  }

  void ExpectModel() { ASSERT_NO_FATAL_FAILURE(ExpectContents(*p_, model_)); }
  // Closes the partition; a full replay must give the model.
  void ExpectFullReplayGivesModel() {
    if (p_ != nullptr) {
      ASSERT_THAT(p_->Close(), IsOk());
      p_.reset();
    }
    auto dump = FullReplayDump(o_);
    ASSERT_THAT(dump, IsOk());
    EXPECT_EQ(*dump, model_);
  }

  MemFileSystem fs_;
  std::unique_ptr<MemFileSystem> other_fs_;  // for tests that need several
  PartitionOptions o_;
  std::unique_ptr<Partition> p_;
  Dump model_;
  int n_ = 0;
};

TEST_F(CompactionTest, CompactDeletesMostlyDeadSegments) {
  // Keys written once (stay live in segment 0) and keys overwritten round
  // after round, so the early segments end up mostly dead.
  for (int i = 0; i < 5; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  for (int round = 0; round < 8; ++round) {
    for (int i = 0; i < 20; ++i) {
      ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("hot", i)));
    }
  }
  ASSERT_GE(p_->Segments().size(), 4u);
  std::set<uint64_t> victims, spared;
  uint64_t victim_bytes = 0;
  for (const SegmentInfo& s : p_->Segments()) {
    if (!s.sealed) continue;
    if (p_->DeadRatio(s.id) >= 0.5) {
      victims.insert(s.id);
      victim_bytes += s.end_offset;
    } else {
      spared.insert(s.id);
    }
  }
  ASSERT_TRUE(victims.contains(0)) << "segment 0 should be mostly dead";
  ASSERT_GE(victims.size(), 2u);

  ASSERT_THAT(p_->Compact(0.5), IsOk());
  EXPECT_FALSE(p_->compaction_running());
  for (uint64_t id : victims) {
    EXPECT_FALSE(fs_.Exists(SegmentPath(id))) << "segment " << id;
    EXPECT_FALSE(HasSegment(*p_, id)) << "segment " << id;
  }
  for (uint64_t id : spared) {
    EXPECT_TRUE(HasSegment(*p_, id)) << "segment " << id << " was below the ratio";
  }
  const CompactionStats c = p_->Stats().compaction;
  EXPECT_GE(c.segments_compacted, victims.size());
  EXPECT_GE(c.bytes_reclaimed, victim_bytes);
  EXPECT_GT(c.bytes_reclaimed, 0u);
  EXPECT_GE(c.records_relocated, 5u) << "the stable keys of segment 0";
  EXPECT_GT(c.bytes_relocated, 0u);
  EXPECT_FALSE(c.current.has_value());
  EXPECT_TRUE(c.last_error.empty()) << c.last_error;
  EXPECT_EQ(p_->Stats().segments, p_->Segments().size());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());

  // The files really are gone, and the contents survive a reopen.
  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (uint64_t id : victims) {
    EXPECT_FALSE(HasSegment(*p_, id));
  }
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  // And a crash: the MANIFEST no longer lists them (durably); a file whose
  // unlink the crash undid (the directory is not synced for it) is an
  // orphan the next open deletes.
  ASSERT_THAT(p_->Close(), IsOk());
  p_.reset();
  fs_.Crash(3);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (uint64_t id : victims) {
    EXPECT_FALSE(HasSegment(*p_, id));
    EXPECT_FALSE(fs_.Exists(SegmentPath(id)));
  }
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// A cursor into a segment compaction removed continues at the next
// segment; damage found there is the log's (DATA_LOSS), not a sign that the
// client's cursor was bad (INVALID_ARGUMENT).
TEST_F(CompactionTest, DamageAfterACursorIntoARemovedSegmentIsDataLoss) {
  const uint64_t seg = o_.segment_size;
  int a = 0, b = 0, c = 0;
  while (p_->Stats().tail_address / seg < 1) ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("a", a++)));
  while (p_->Stats().tail_address / seg < 2) ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("b", b++)));
  for (; c < 3; ++c) ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("c", c)));
  std::vector<ScanItem> items;
  auto cursor = p_->Scan(0, "b", 1, false, 1 << 20, &items);
  ASSERT_THAT(cursor, IsOk());
  ASSERT_EQ(*cursor / seg, 1u) << "the cursor is in segment 1";
  for (int i = 0; i < b; ++i) ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("b", i)));
  ASSERT_THAT(p_->Compact(0.5), IsOk());
  for (const auto& s : p_->Segments()) ASSERT_NE(s.id, 1u);
  // Flip a value byte of the first record of segment 2, where the scan
  // continues.
  const std::string path = testing::SegmentPath(2);
  std::string data = fs_.Contents(path);
  const size_t at = format::kSegmentHeaderSize + 40;
  ASSERT_LT(at, data.size());
  data[at] ^= 0x40;
  ASSERT_TRUE(fs_.OverwriteFile(path, data));
  items.clear();
  EXPECT_THAT(p_->Scan(*cursor, "", 10, false, 1 << 20, &items),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(CompactionTest, VersionsAreKeptAndNewWritesGoHigher) {
  for (int i = 0; i < 10; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(3));
  const Dump before = model_;
  const uint64_t next_version = p_->Stats().next_version;
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  EXPECT_FALSE(HasSegment(*p_, 0));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  EXPECT_EQ(p_->Stats().next_version, next_version) << "relocation used new versions";
  // Compare-and-set against a relocated record's version succeeds.
  WriteOp op = WriteOp::Put("stable3", "cas");
  op.expected_version = before.at("stable3").version;
  auto w = p_->Write(op);
  ASSERT_THAT(w, IsOk());
  EXPECT_GE(w->version, next_version);
  model_["stable3"] = Stored{"cas", w->version};
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  EXPECT_EQ(p_->Stats().next_version, w->version + 1);
}

TEST_F(CompactionTest, LiveAccountingMatchesAfterCompaction) {
  for (int i = 0; i < 8; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 15; ++i) {
      if (round % 2 && i % 3 == 0) {
        ASSERT_NO_FATAL_FAILURE(Delete(absl::StrCat("hot", i)));
      } else {
        ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("hot", i), 100 + 20 * i));
      }
    }
  }
  const uint64_t live = p_->Stats().live_bytes;
  const uint64_t keys = p_->Stats().keys;
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  EXPECT_EQ(p_->Stats().live_bytes, live);
  EXPECT_EQ(p_->Stats().keys, keys);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  // The usage table agrees with a full replay of what is left.
  const SegmentUsageTable usage = p_->SegmentUsages();
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const SegmentUsageTable replayed = p_->SegmentUsages();
  for (size_t i = 0; i < std::max(usage.end_id(), replayed.end_id()); ++i) {
    if (!HasSegment(*p_, i)) continue;  // removed: whatever is left over
    ExpectSameUsage(usage, replayed, i);
  }
  EXPECT_EQ(p_->Stats().live_bytes, live);

  // A checkpoint's usage table holds the segments with records, not every
  // id the partition ever used, and loads back to the same table.
  auto info = p_->Checkpoint();
  ASSERT_THAT(info, IsOk());
  auto file = fs_.ReadFileToString(
      absl::StrCat(o_.dir, "/", CheckpointFileName(info->id)));
  ASSERT_THAT(file, IsOk());
  auto ckpt = ParseCheckpoint(*file, "checkpoint");
  ASSERT_THAT(ckpt, IsOk());
  uint64_t with_records = 0;
  for (const SegmentInfo& seg : p_->Segments()) {
    with_records += replayed.Get(seg.id).total_bytes > 0;
  }
  EXPECT_EQ(ckpt->header.usage_count, with_records);
  EXPECT_LT(ckpt->header.usage_count, Active() + 1) << "compaction removed some ids";
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_EQ(p_->Stats().recovered.checkpoint_id, info->id);
  const SegmentUsageTable loaded = p_->SegmentUsages();
  for (const SegmentInfo& seg : p_->Segments()) ExpectSameUsage(replayed, loaded, seg.id);
}

// The usage table spans the segments that exist, not every id ever used:
// segment ids only grow, and a table indexed from 0 would grow with the
// partition's age.
TEST_F(CompactionTest, UsageTableFollowsTheSegmentsThatExist) {
  ASSERT_NO_FATAL_FAILURE(Put("stable"));
  for (int round = 0; round < 20; ++round) {
    ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(Active() + 5, "hot"));
    ASSERT_THAT(p_->Compact(0.5), IsOk());
  }
  ASSERT_GE(Active(), 100u);
  const SegmentUsageTable& usage = p_->SegmentUsages();
  EXPECT_LE(usage.span(), p_->Segments().size() + 1);
  EXPECT_GT(usage.begin_id(), 50u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  for (const SegmentInfo& s : p_->Segments()) {
    EXPECT_EQ(usage.Get(s.id).total_bytes > 0, s.id == Active() || s.end_offset > 64) << s.id;
  }
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_LE(p_->SegmentUsages().span(), p_->Segments().size() + 1);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CompactionTest, NothingToCompactChangesNothing) {
  for (int i = 0; i < 80; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("k", i)));
  }
  ASSERT_GE(p_->Segments().size(), 2u);
  const std::vector<uint64_t> ids = SegmentIds(*p_);
  const uint64_t tail = p_->Stats().tail_address;
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  EXPECT_EQ(SegmentIds(*p_), ids);
  EXPECT_EQ(p_->Stats().tail_address, tail);
  EXPECT_EQ(p_->Stats().compaction.segments_compacted, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CompactionTest, ActiveSegmentIsNeverCompacted) {
  for (int i = 0; i < 10; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put("same", 50));
  }
  ASSERT_EQ(p_->Segments().size(), 1u);
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  EXPECT_EQ(SegmentIds(*p_), std::vector<uint64_t>{0});
  EXPECT_TRUE(fs_.Exists(SegmentPath(0)));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// Two Admin.Compact calls at once share one pass: the second, with a
// higher threshold, must not raise the first one's.
TEST_F(CompactionTest, ASecondStartCompactionNeverRaisesTheThreshold) {
  for (int i = 0; i < 10; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 20; ++i) {
      ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("hot", i)));
    }
  }
  const double dead0 = p_->DeadRatio(0);
  ASSERT_GT(dead0, 0.0);
  ASSERT_LT(dead0, 0.99);
  p_->StartCompaction(0.0);
  p_->StartCompaction(0.99);
  for (int ticks = 0; p_->compaction_running(); ++ticks) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(ticks, 10000) << "compaction never finished";
  }
  EXPECT_FALSE(HasSegment(*p_, 0)) << "segment 0, " << dead0 << " dead, was left";
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  // A lower second threshold does lower it.
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(Active() + 2, "hot"));
  p_->StartCompaction(2.0);
  p_->StartCompaction(0.0);
  for (int ticks = 0; p_->compaction_running(); ++ticks) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(ticks, 10000) << "compaction never finished";
  }
  for (uint64_t id : SegmentIds(*p_)) {
    if (id != Active()) EXPECT_EQ(p_->DeadRatio(id), 0.0) << "segment " << id;
  }
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CompactionTest, StartCompactionRunsInTickStepsBesideWrites) {
  o_.compaction_min_step = 512;  // a few records per Tick
  o_.compaction_work_ratio = 0.01;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (int i = 0; i < 10; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 20; ++i) {
      ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("hot", i)));
    }
  }
  ASSERT_GE(p_->DeadRatio(0), 0.5);
  ASSERT_THAT(p_->Tick(), IsOk());  // pacing counts writes from here
  EXPECT_FALSE(p_->compaction_running());
  p_->StartCompaction(0.5);
  EXPECT_TRUE(p_->compaction_running());
  EXPECT_TRUE(p_->HasBackgroundWork());
  ASSERT_THAT(p_->Tick(), IsOk());
  // One idle Tick scans about compaction_min_step bytes, not 8 KiB.
  EXPECT_TRUE(p_->compaction_running()) << "one Tick compacted everything";
  EXPECT_TRUE(HasSegment(*p_, 0));
  int ticks = 1;
  while (p_->compaction_running()) {
    // Writes keep going meanwhile, including to keys being relocated.
    if (ticks % 3 == 0) {
      ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", ticks % 10)));
    }
    if (ticks % 7 == 0) {
      ASSERT_NO_FATAL_FAILURE(Delete(absl::StrCat("hot", ticks % 20)));
    }
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
    ASSERT_LT(++ticks, 10000) << "compaction never finished";
  }
  EXPECT_GT(ticks, 4);
  EXPECT_FALSE(HasSegment(*p_, 0));
  EXPECT_FALSE(fs_.Exists(SegmentPath(0)));
  EXPECT_GE(p_->Stats().compaction.segments_compacted, 1u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CompactionTest, BusyTicksSpendOnlyTheirCreditIdleTicksCatchUp) {
  o_.compaction_dead_ratio = 0.5;
  o_.compaction_min_step = 4 << 10;
  o_.compaction_work_ratio = 0.001;  // ~0.05 bytes of scan per small put
  o_.compaction_space_limit = 0;     // the work ratio alone paces
  // Idle at once (no waiting out a second of quiet for the young segment).
  o_.compaction_quiet_period = absl::ZeroDuration();
  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (int i = 0; i < 5; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(3, "hot"));
  ASSERT_GE(p_->DeadRatio(0), 0.5);
  // A victim waits: an idle worker would keep ticking.
  EXPECT_TRUE(p_->HasBackgroundWork());
  // Busy: a put before every Tick. The credit never reaches a step, so
  // nothing is relocated however many Ticks run (a fixed minimum per Tick
  // would have compacted everything long before).
  for (int i = 0; i < 300; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("hot", i % 7)));
    ASSERT_THAT(p_->Tick(), IsOk());
  }
  EXPECT_EQ(p_->Stats().compaction.records_relocated, 0u);
  EXPECT_EQ(p_->Stats().compaction.segments_compacted, 0u);
  EXPECT_TRUE(HasSegment(*p_, 0));
  // Reads are requests too: a worker serving only Gets is not idle, and
  // reads earn no credit.
  ReadResult r;
  for (int i = 0; i < 300; ++i) {
    ASSERT_THAT(p_->Get(absl::StrCat("hot", i % 7), &r), IsOk());
    ASSERT_THAT(p_->Tick(), IsOk());
  }
  EXPECT_EQ(p_->Stats().compaction.records_relocated, 0u);
  EXPECT_TRUE(HasSegment(*p_, 0));
  // Idle: Ticks with no request since the last catch up until nothing is
  // left over the ratio.
  int ticks = 0;
  while (p_->HasBackgroundWork()) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(++ticks, 10000) << "idle compaction never finished";
  }
  EXPECT_FALSE(HasSegment(*p_, 0));
  for (const SegmentInfo& s : p_->Segments()) {
    if (s.sealed) {
      EXPECT_LT(p_->DeadRatio(s.id), 0.5) << s.id;
    }
  }
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// Sustained overwrites with compaction paced far below the write rate:
// without a space limit the log grows with every round; with one, busy
// Ticks keep up once it is exceeded and the log stops growing.
TEST_F(CompactionTest, SpaceLimitBoundsTheLogUnderSustainedOverwrites) {
  o_.compaction_dead_ratio = 0.5;
  o_.compaction_min_step = 2 << 10;
  o_.compaction_work_ratio = 0.001;
  auto amplification = [&] {
    const PartitionStats st = p_->Stats();
    return static_cast<double>(st.live_bytes + st.dead_bytes) /
           static_cast<double>(st.live_bytes);
  };
  for (double limit : {0.0, 2.0}) {
    SCOPED_TRACE(absl::StrCat("limit ", limit));
    o_.compaction_space_limit = limit;
    o_.dir = absl::StrCat(::segkv::worker::testing::kDir, "-", limit);
    p_.reset();
    model_.clear();
    ASSERT_NO_FATAL_FAILURE(Reopen());
    double worst = 0;
    for (int round = 0; round < 20; ++round) {
      for (int k = 0; k < 150; ++k) {
        ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("key", k), 150));
        ASSERT_THAT(p_->Tick(), IsOk());
      }
      if (round >= 2) worst = std::max(worst, amplification());
    }
    if (limit == 0) {
      EXPECT_GT(amplification(), 10) << "the work ratio alone kept up";
    } else {
      // The limit, plus what one segment being compacted and the active
      // one hold beyond it (8 KiB segments, ~27 KiB live).
      EXPECT_LT(worst, limit + 0.7);
    }
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
    ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
  }
}

// A victim with a damaged record is not deleted (its records cannot all be
// relocated): the error is counted and reported once, automatic compaction
// backs off instead of spinning, and other segments still compact.
TEST_F(CompactionTest, DamagedVictimIsLeftAloneReportedAndSkipped) {
  o_.compaction_dead_ratio = 0.5;
  o_.compaction_shortcuts = false;  // every victim is read
  // No retry within the test, however slow the machine.
  o_.compaction_retry_delay = absl::Hours(1);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(4, "hot"));
  // Segments 0-3 are wholly dead; the lowest id goes first among equals.
  // Damage a value byte of segment 0's first record.
  std::string seg0 = fs_.Contents(SegmentPath(0));
  seg0[format::kSegmentHeaderSize + format::kRecordHeaderSize + 12] ^= 0x55;
  ASSERT_TRUE(fs_.OverwriteFile(SegmentPath(0), seg0));

  int ticks = 0;
  while (p_->HasBackgroundWork()) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(++ticks, 10000) << "compaction spins on the damaged segment";
  }
  const CompactionStats c = p_->Stats().compaction;
  EXPECT_EQ(c.errors, 1u);
  EXPECT_THAT(c.last_error, HasSubstr("segment 0"));
  EXPECT_TRUE(HasSegment(*p_, 0));
  EXPECT_TRUE(fs_.Exists(SegmentPath(0)));
  // After a failure automatic compaction waits (compaction_retry_delay)
  // before the next step (an error that repeats must not spin).
  EXPECT_TRUE(HasSegment(*p_, 1));

  // Asked for explicitly, compaction passes over it and does the others.
  ASSERT_THAT(p_->Compact(0.5), IsOk());
  EXPECT_TRUE(HasSegment(*p_, 0));
  EXPECT_FALSE(HasSegment(*p_, 1));
  EXPECT_EQ(p_->Stats().compaction.errors, 1u);
}

// A victim whose usage shows nothing to keep is deleted without being
// read, and so is damage in it: no record there can be read anyway.
TEST_F(CompactionTest, WhollyDeadSegmentsAreDroppedUnread) {
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(4, "hot"));
  std::string seg0 = fs_.Contents(SegmentPath(0));
  seg0[format::kSegmentHeaderSize + format::kRecordHeaderSize + 12] ^= 0x55;
  ASSERT_TRUE(fs_.OverwriteFile(SegmentPath(0), seg0));
  ASSERT_THAT(p_->Compact(0.5), IsOk());
  const CompactionStats c = p_->Stats().compaction;
  EXPECT_EQ(c.segments_dropped_unread, 4u);
  EXPECT_EQ(c.segments_walked, 0u);
  EXPECT_EQ(c.records_relocated, 0u);
  EXPECT_EQ(c.errors, 0u);
  for (uint64_t id = 0; id < 4; ++id) {
    EXPECT_FALSE(HasSegment(*p_, id)) << id;
    EXPECT_FALSE(fs_.Exists(SegmentPath(id))) << id;
  }
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// While writes come in, automatic compaction leaves a segment alone until
// a segment's worth of log was written after it; idle time (no write for
// compaction_quiet_period) and a log over its space limit do not wait.
TEST_F(CompactionTest, YoungSegmentWaitsWhileBusy) {
  o_.compaction_dead_ratio = 0.5;
  o_.compaction_space_limit = 0;
  o_.compaction_min_step = 256;
  o_.compaction_work_ratio = 100;
  for (int scenario = 0; scenario < 4; ++scenario) {
    SCOPED_TRACE(scenario == 0   ? "busy"
                 : scenario == 1 ? "idle"
                 : scenario == 2 ? "over the space limit"
                                 : "a drained queue is not idle");
    p_.reset();
    other_fs_ = std::make_unique<MemFileSystem>();
    o_.fs = other_fs_.get();
    o_.compaction_space_limit = scenario == 2 ? 1.01 : 0;
    // Scenario 1 is idle at once; scenario 3's writes stay recent.
    o_.compaction_quiet_period = scenario == 1 ? absl::ZeroDuration() : absl::Hours(1);
    model_.clear();
    ASSERT_NO_FATAL_FAILURE(Reopen());
    // Segment 0 wholly dead (every put but the last went to it), and one
    // live key in segment 1 so the space limit has live bytes to compare.
    ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(1, "hot"));
    auto dropped = [&] { return p_->Stats().compaction.segments_dropped_unread; };
    if (scenario == 1 || scenario == 3) {
      ASSERT_THAT(p_->Tick(), IsOk());  // the put before it: busy
      // No request since the last Tick: idle once the quiet period is over.
      EXPECT_EQ(p_->HasBackgroundWork(), scenario == 1);
      ASSERT_THAT(p_->Tick(), IsOk());
      ASSERT_THAT(p_->Tick(), IsOk());
      EXPECT_EQ(dropped(), scenario == 1 ? 1u : 0u);
      continue;
    }
    // Busy Ticks while segment 1 fills: segment 0 is younger than a
    // segment, so it waits unless the log is over its limit.
    for (int i = 0; i < 5; ++i) {
      ASSERT_NO_FATAL_FAILURE(Put("hot", 20));
      ASSERT_THAT(p_->Tick(), IsOk());
    }
    if (scenario == 2) {
      EXPECT_EQ(dropped(), 1u);
      continue;
    }
    EXPECT_EQ(dropped(), 0u);
    EXPECT_TRUE(HasSegment(*p_, 0));
    // Once segment 2 is active, a whole segment was written after it.
    while (Active() < 2) {
      ASSERT_NO_FATAL_FAILURE(Put("hot"));
      ASSERT_THAT(p_->Tick(), IsOk());
    }
    ASSERT_NO_FATAL_FAILURE(Put("hot", 20));
    ASSERT_THAT(p_->Tick(), IsOk());
    EXPECT_GE(dropped(), 1u);
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
  }
}

// The index walk finds every live record of the victim although new keys
// split index buckets between its steps (a split moves entries only to a
// bucket the walk has not reached yet). verify_compaction reads the victim
// before it goes and crashes on any live record left in it.
TEST_F(CompactionTest, IndexWalkFindsEveryLiveRecordAcrossBucketSplits) {
  p_.reset();
  other_fs_ = std::make_unique<MemFileSystem>();  // a new dir, larger segments
  o_.fs = other_fs_.get();
  o_.segment_size = 64 << 10;
  o_.compaction_min_step = 256;  // about a bucket per Tick
  o_.compaction_work_ratio = 0.01;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  std::vector<std::string> keys;
  for (int i = 0; Active() < 1; ++i) {
    keys.push_back(absl::StrCat("stable", i));
    ASSERT_NO_FATAL_FAILURE(Put(keys.back(), 100));
  }
  ASSERT_GT(keys.size(), 300u);
  // All but every tenth again: a tenth of segment 0 stays live (a walk is
  // taken for victims at most an eighth live).
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i % 10 != 0) {
      ASSERT_NO_FATAL_FAILURE(Put(keys[i], 100));
    }
  }
  p_->StartCompaction(0.0);
  int ticks = 0;
  for (int i = 0; p_->compaction_running(); ++i) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("new", i), 20));  // grows the index
    ASSERT_LT(++ticks, 100000);
  }
  const CompactionStats c = p_->Stats().compaction;
  EXPECT_EQ(c.segments_walked, 1u);
  EXPECT_EQ(c.segments_dropped_unread, 0u);
  EXPECT_GT(ticks, 50) << "the walk should have taken many steps";
  EXPECT_GE(c.records_relocated, keys.size() / 10 - 1);
  EXPECT_FALSE(HasSegment(*p_, 0));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
}

// A damaged live record met by the walk stops the victim's compaction with
// DATA_LOSS, as a scan would; the segment stays.
TEST_F(CompactionTest, IndexWalkReportsADamagedLiveRecord) {
  // Three live records of about 35: a walk is taken.
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(2, "hot"));
  std::string seg0 = fs_.Contents(SegmentPath(0));
  seg0[format::kSegmentHeaderSize + format::kRecordHeaderSize + 12] ^= 0x55;
  ASSERT_TRUE(fs_.OverwriteFile(SegmentPath(0), seg0));
  const absl::Status s = p_->Compact(0.0);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("live record"));
  EXPECT_TRUE(HasSegment(*p_, 0));
  EXPECT_TRUE(fs_.Exists(SegmentPath(0)));
  EXPECT_EQ(p_->Stats().compaction.segments_walked, 0u);
}

// Automatic compaction does not sync the log for each segment it finishes:
// the segment stays (listed, on disk) until the log's own next sync has
// made the copies durable. A crash before that loses the copies, not data.
TEST_F(CompactionTest, CompactedSegmentIsDeletedOnlyOnceItsCopiesAreDurable) {
  o_.compaction_dead_ratio = 0.5;
  o_.compaction_min_step = 512;
  o_.compaction_work_ratio = 100;  // one busy Tick scans a whole segment
  o_.compaction_space_limit = 0;
  for (bool crash : {true, false}) {
    SCOPED_TRACE(crash ? "crash before the sync" : "the next write syncs");
    o_.dir = absl::StrCat(::segkv::worker::testing::kDir, crash ? "-crash" : "-sync");
    p_.reset();
    model_.clear();
    ASSERT_NO_FATAL_FAILURE(Reopen());
    for (int i = 0; i < 5; ++i) ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
    ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(3, "hot"));
    ASSERT_GE(p_->DeadRatio(0), 0.5);
    // durability=always: this put is synced; the Tick after it relocates
    // segment 0's live records past the synced address.
    uint64_t ticks = 0;
    while (p_->Stats().compaction.records_relocated == 0 || p_->compaction_running()) {
      ASSERT_NO_FATAL_FAILURE(Put("hot"));
      ASSERT_THAT(p_->Tick(), IsOk());
      ASSERT_LT(++ticks, 1000u);
    }
    const PartitionStats st = p_->Stats();
    ASSERT_LT(st.synced_address, st.tail_address) << "the copies were synced already";
    // (Wholly dead segments 1 and 2 went first, each deleted after the
    // next put's sync; segment 0, with live records, went last.)
    EXPECT_TRUE(HasSegment(*p_, 0)) << "deleted before its copies were durable";
    EXPECT_TRUE(fs_.Exists(SegmentPath(0)));
    if (crash) {
      fs_.KillAfterOps(0);  // the process dies: Close() writes nothing more
      p_.reset();
      fs_.Crash(7, /*keep_unsynced=*/false);
      ASSERT_NO_FATAL_FAILURE(Reopen());
      EXPECT_TRUE(HasSegment(*p_, 0));
    } else {
      ASSERT_NO_FATAL_FAILURE(Put("hot"));  // syncs the copies too
      ASSERT_THAT(p_->Tick(), IsOk());
      EXPECT_FALSE(HasSegment(*p_, 0));
      EXPECT_EQ(p_->Stats().compaction.segments_compacted,
                st.compaction.segments_compacted + 1);
    }
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
    ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
  }
}

// Delegates to another file system; Remove() waits until released, like an
// unlink of a large file that takes its time.
class SlowRemoveFileSystem : public testing::ForwardingFileSystem {
 public:
  using ForwardingFileSystem::ForwardingFileSystem;
  absl::Status Remove(const std::string& path) override {
    if (!removing.HasBeenNotified()) removing.Notify();  // one remover thread
    release.WaitForNotification();
    return ForwardingFileSystem::Remove(path);
  }

  absl::Notification removing;  // a Remove() has started
  absl::Notification release;   // lets every Remove() go on
};

// segkvd's setting: a compacted segment leaves the MANIFEST in the call,
// and its file is unlinked on a helper thread, so a slow unlink holds up no
// request. A crash before the unlink leaves an orphan that Open() removes.
TEST_F(CompactionTest, CompactedFilesAreUnlinkedInTheBackground) {
  for (bool crash : {false, true}) {
    SCOPED_TRACE(crash ? "crash before the unlink" : "unlink completes");
    SlowRemoveFileSystem slow(&fs_);
    o_.fs = &slow;
    o_.remove_in_background = true;
    o_.dir = absl::StrCat(::segkv::worker::testing::kDir, crash ? "-crash" : "-done");
    p_.reset();
    model_.clear();
    ASSERT_NO_FATAL_FAILURE(Reopen());
    for (int i = 0; i < 5; ++i) ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
    ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(4, "hot"));
    ASSERT_GE(p_->DeadRatio(0), 0.5);
    // Every unlink is held back, yet the compaction finishes.
    ASSERT_THAT(p_->Compact(0.5), IsOk());
    ASSERT_FALSE(HasSegment(*p_, 0));
    slow.removing.WaitForNotification();
    const std::string path = absl::StrCat(o_.dir, "/", SegmentFileName(0));
    EXPECT_TRUE(fs_.Exists(path)) << "unlinked in the compaction's own call";
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
    if (crash) {
      fs_.KillAfterOps(0);  // the process dies: the held unlink fails
      slow.release.Notify();
      p_.reset();
      fs_.Crash(11, /*keep_unsynced=*/false);
      EXPECT_TRUE(fs_.Exists(path));
      ASSERT_NO_FATAL_FAILURE(Reopen());
      EXPECT_GE(p_->Stats().recovery.removed_files, 1u);
    } else {
      slow.release.Notify();
      p_->FlushRemovals();
      // Checkpoints beyond checkpoints_to_keep go the same way.
      std::vector<uint64_t> ids;
      for (size_t i = 0; i <= o_.checkpoints_to_keep; ++i) {
        ASSERT_NO_FATAL_FAILURE(Put("hot"));
        auto c = p_->Checkpoint();
        ASSERT_THAT(c, IsOk());
        ids.push_back(c->id);
      }
      p_->FlushRemovals();
      EXPECT_FALSE(fs_.Exists(absl::StrCat(o_.dir, "/", CheckpointFileName(ids[0]))));
      EXPECT_TRUE(fs_.Exists(absl::StrCat(o_.dir, "/", CheckpointFileName(ids.back()))));
    }
    EXPECT_FALSE(fs_.Exists(path));
    EXPECT_FALSE(HasSegment(*p_, 0));
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
    ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
    o_.fs = &fs_;  // `slow` goes out of scope
  }
}

// A forced pass (Admin.Compact's path: StartCompaction + Tick) that hits
// an error ends, with the error counted and kept, rather than retrying the
// same victim every second while the caller waits.
TEST_F(CompactionTest, ForcedPassThatFailsEndsAndKeepsTheError) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(4, "hot"));
  ASSERT_THAT(p_->Sync(), IsOk());
  uint64_t used = 0;
  for (const std::string& name : FilesIn(&fs_, ::segkv::worker::testing::kDir, "", "")) {
    used += fs_.Contents(std::string(::segkv::worker::testing::kDir) + "/" + name).size();
  }
  fs_.SetCapacity(used);  // the disk is full: relocations cannot be written
  p_->StartCompaction(0);
  int ticks = 0;
  while (p_->compaction_running()) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(++ticks, 1000) << "the failed pass never ended";
  }
  const CompactionStats c = p_->Stats().compaction;
  EXPECT_EQ(c.errors, 1u);
  EXPECT_EQ(c.last_error_code, absl::StatusCode::kResourceExhausted) << c.last_error;
  EXPECT_FALSE(c.current.has_value());
  // With space back, the same pass succeeds and nothing was lost.
  fs_.SetCapacity(0);
  ASSERT_THAT(p_->Compact(0), IsOk());
  EXPECT_GT(p_->Stats().compaction.segments_compacted, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
}

TEST(CompactionOptionsTest, PacingOptionsThatCouldSpinOrOverflowAreRejected) {
  MemFileSystem fs;
  auto with = [&](auto set) {
    PartitionOptions o = SmallOptions(&fs);
    set(o);
    return Partition::Open(o).status();
  };
  EXPECT_THAT(with([](PartitionOptions& o) { o.compaction_min_step = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](PartitionOptions& o) { o.compaction_work_ratio = 1e30; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](PartitionOptions& o) { o.compaction_work_ratio = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](PartitionOptions& o) { o.compaction_space_limit = 0.5; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](PartitionOptions& o) { o.compaction_work_ratio = 1000; }), IsOk());
}

TEST_F(CompactionTest, TickCompactsOnItsOwnAtTheConfiguredRatio) {
  o_.compaction_dead_ratio = 0.5;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (int i = 0; i < 5; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(3, "hot"));
  std::set<uint64_t> victims;
  for (const SegmentInfo& s : p_->Segments()) {
    if (s.sealed && p_->DeadRatio(s.id) >= 0.5) victims.insert(s.id);
  }
  ASSERT_TRUE(victims.contains(0));
  // Nothing happens without Tick().
  EXPECT_EQ(p_->Stats().compaction.segments_compacted, 0u);
  // Tick (as an idle worker would, without sleeping here) until every
  // segment over the ratio is gone; bounded so a stall fails.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  auto any_left = [&] {
    for (uint64_t id : victims) {
      if (HasSegment(*p_, id)) return true;
    }
    return false;
  };
  while (any_left() || p_->HasBackgroundWork()) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(absl::Now(), deadline) << "automatic compaction stalled";
  }
  EXPECT_GE(p_->Stats().compaction.segments_compacted, victims.size());
  for (uint64_t id : victims) {
    EXPECT_FALSE(fs_.Exists(SegmentPath(id))) << id;
  }
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// ---------------------------------------------------------------------------
// Named regressions.

// Each scenario runs with every victim read to its end (ReadAll) and with
// the shortcuts compaction takes when they apply (Shortcuts: unread drop,
// index walk, early finish).
class CompactionRegressionTest
    : public CompactionTest,
      public ::testing::WithParamInterface<std::tuple<Recovery, bool>> {
 protected:
  void SetUp() override {
    CompactionTest::SetUp();
    o_.compaction_shortcuts = shortcuts();
    ASSERT_NO_FATAL_FAILURE(Reopen());
  }
  Recovery recovery() const { return std::get<0>(GetParam()); }
  bool shortcuts() const { return std::get<1>(GetParam()); }

  void MaybeCheckpoint(Recovery when) {
    if (recovery() == when) {
      ASSERT_THAT(p_->Checkpoint(), IsOk());
    }
  }
  // Reopens as the parameter says and checks the model; then the same
  // with a full replay.
  void ReopenAndCheck() {
    ASSERT_NO_FATAL_FAILURE(Reopen());
    if (recovery() == Recovery::kFullReplay) {
      EXPECT_FALSE(p_->Stats().recovered.checkpoint_id.has_value());
    } else {
      // The checkpoint was used, not rejected for a full replay that
      // would pass the same checks.
      EXPECT_TRUE(p_->Stats().recovered.checkpoint_id.has_value());
      EXPECT_EQ(p_->Stats().recovered.checkpoints_rejected, 0u);
    }
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
    ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
    ASSERT_NO_FATAL_FAILURE(Reopen());
  }
};

// Key k = v1 lies in segment 0; compaction relocates it to the tail with
// its version; then k = v2 is written. Whatever the recovery path, k must
// read v2: the relocated copy of v1 (lower version, but a lower address
// than v2 only by luck of ordering) must never win.
TEST_P(CompactionRegressionTest, CompactedOutputReplayedOutOfOrderDoesNotResurrectOldValue) {
  ASSERT_NO_FATAL_FAILURE(Put("k"));
  const Stored v1 = model_["k"];
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(1));
  ASSERT_NO_FATAL_FAILURE(Put("other"));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  ASSERT_FALSE(HasSegment(*p_, 0));
  ASSERT_GE(p_->Stats().compaction.records_relocated, 1u);
  ReadResult r;
  ASSERT_THAT(p_->Get("k", &r), IsOk());
  ASSERT_TRUE(r.found);
  EXPECT_EQ(r.value, v1.value);
  EXPECT_EQ(r.version, v1.version);
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
  ASSERT_NO_FATAL_FAILURE(Put("k"));
  const Stored v2 = model_["k"];
  ASSERT_GT(v2.version, v1.version);
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointAfter));
  ASSERT_NO_FATAL_FAILURE(ReopenAndCheck());
}

// The same with the overwrite landing between the Tick steps of a running
// compaction, before, during or after the step that relocates k.
TEST_P(CompactionRegressionTest, OverwriteDuringIncrementalCompactionWins) {
  o_.compaction_min_step = 300;  // about one record per Tick
  o_.compaction_work_ratio = 0.01;
  for (int overwrite_at = 0; overwrite_at < 40; overwrite_at += 3) {
    SCOPED_TRACE(absl::StrCat("overwrite after ", overwrite_at, " ticks"));
    p_.reset();
    other_fs_ = std::make_unique<MemFileSystem>();
    o_.fs = other_fs_.get();
    model_.clear();
    ASSERT_NO_FATAL_FAILURE(Reopen());
    for (int i = 0; i < 10; ++i) {
      ASSERT_NO_FATAL_FAILURE(Put("f"));
    }
    ASSERT_NO_FATAL_FAILURE(Put("k"));  // in the middle of segment 0
    ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(1, "f"));
    ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
    ASSERT_THAT(p_->Tick(), IsOk());  // pacing counts writes from here
    p_->StartCompaction(0.0);
    int ticks = 0;
    bool overwritten = false;
    while (p_->compaction_running() || !overwritten) {
      if (ticks == overwrite_at || (!p_->compaction_running() && !overwritten)) {
        ASSERT_NO_FATAL_FAILURE(Put("k"));
        overwritten = true;
        ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
      }
      ASSERT_THAT(p_->Tick(), IsOk());
      ASSERT_LT(++ticks, 10000);
    }
    ASSERT_FALSE(HasSegment(*p_, 0));
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
    ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointAfter));
    ASSERT_NO_FATAL_FAILURE(ReopenAndCheck());
  }
}

// k is put in segment 0 (which stays, mostly live) and deleted in segment
// 1, which is then compacted on its own. The tombstone must be relocated,
// not dropped: without it a replay would find k's put in segment 0 and
// bring k back.
TEST_P(CompactionRegressionTest, TombstoneKeptWhileOlderSegmentHoldsValue) {
  ASSERT_NO_FATAL_FAILURE(Put("k"));
  ASSERT_NO_FATAL_FAILURE(FillUntilActive(1, "live"));  // segment 0: live keys
  ASSERT_NO_FATAL_FAILURE(Delete("k"));                 // tombstone in 1
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(2));     // segment 1: dead
  ASSERT_NO_FATAL_FAILURE(Put("other"));
  ASSERT_LT(p_->DeadRatio(0), 0.5);
  ASSERT_GE(p_->DeadRatio(1), 0.5);
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
  ASSERT_THAT(p_->Compact(0.5), IsOk());
  ASSERT_TRUE(HasSegment(*p_, 0)) << "segment 0 was below the ratio";
  ASSERT_FALSE(HasSegment(*p_, 1));
  EXPECT_EQ(p_->Stats().compaction.tombstones_dropped, 0u);
  EXPECT_GE(p_->Stats().compaction.records_relocated, 1u) << "the tombstone";
  ReadResult r;
  ASSERT_THAT(p_->Get("k", &r), IsOk());
  EXPECT_FALSE(r.found);
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointAfter));
  ASSERT_NO_FATAL_FAILURE(ReopenAndCheck());
  ASSERT_THAT(p_->Get("k", &r), IsOk());
  EXPECT_FALSE(r.found) << "the deleted key came back";

  // Compacting everything else, segment 0 included, keeps k deleted; a
  // later put of k is not hidden by the relocated tombstone.
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  ASSERT_FALSE(HasSegment(*p_, 0));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ReopenAndCheck());
  ASSERT_NO_FATAL_FAILURE(Put("k"));
  ASSERT_NO_FATAL_FAILURE(ReopenAndCheck());
}

// k is put (segment 0, which stays), deleted (segment 1) and put again
// (segment 2, active). Compacting segment 1 may relocate the old tombstone
// to the tail, after the newer put: with its lower version it must not
// delete k on replay, whatever order the records are met in.
TEST_P(CompactionRegressionTest, RelocatedTombstoneDoesNotDeleteANewerPut) {
  ASSERT_NO_FATAL_FAILURE(Put("k"));
  ASSERT_NO_FATAL_FAILURE(FillUntilActive(1, "live"));  // segment 0: live keys
  ASSERT_NO_FATAL_FAILURE(Delete("k"));                 // tombstone in 1
  ASSERT_NO_FATAL_FAILURE(Put("k2"));
  ASSERT_NO_FATAL_FAILURE(Delete("k2"));                // k2 stays deleted
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(2));     // segment 1: dead
  ASSERT_NO_FATAL_FAILURE(Put("k"));                    // newer put, in 2
  ASSERT_NO_FATAL_FAILURE(Put("other"));
  ASSERT_LT(p_->DeadRatio(0), 0.5);
  ASSERT_GE(p_->DeadRatio(1), 0.5);
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
  ASSERT_THAT(p_->Compact(0.5), IsOk());
  ASSERT_TRUE(HasSegment(*p_, 0));
  ASSERT_FALSE(HasSegment(*p_, 1));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
  ASSERT_NO_FATAL_FAILURE(Put("k3"));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointAfter));
  ASSERT_NO_FATAL_FAILURE(ReopenAndCheck());
  // Compacting again (segment 0 too, and the relocated records) keeps it.
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ReopenAndCheck());
}

// A tombstone in the oldest segment is no longer needed once that segment
// goes: compaction drops it, and the key stays deleted.
TEST_P(CompactionRegressionTest, TombstoneDroppedWhenNoOlderSegment) {
  ASSERT_NO_FATAL_FAILURE(Put("k"));
  ASSERT_NO_FATAL_FAILURE(Put("filler"));
  ASSERT_NO_FATAL_FAILURE(Delete("k"));
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(1));
  ASSERT_NO_FATAL_FAILURE(Put("other"));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  ASSERT_FALSE(HasSegment(*p_, 0));
  if (shortcuts()) {
    // Nothing in segment 0 is live and no older segment needs its
    // tombstone: dropped unread, so the tombstone is not counted.
    EXPECT_EQ(p_->Stats().compaction.segments_dropped_unread, 1u);
  } else {
    EXPECT_GE(p_->Stats().compaction.tombstones_dropped, 1u);
  }
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointAfter));
  ASSERT_NO_FATAL_FAILURE(ReopenAndCheck());
}

// Versions never go back. The newest version is a tombstone's; compaction
// drops that tombstone (no older segment holds its key) and nothing written
// since is newer; the process dies before any checkpoint. Recovery must not
// hand that version out again: a compare-and-set on it would match the
// wrong write.
TEST_P(CompactionRegressionTest, VersionsDoNotGoBackWhenTheNewestTombstoneIsDropped) {
  ASSERT_NO_FATAL_FAILURE(FillUntilActive(2, "live"));  // segments 0, 1: live keys
  // One dead record in each, so that compaction takes them.
  ASSERT_NO_FATAL_FAILURE(Put("live0"));
  ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("live", model_.size() - 2)));
  ASSERT_GT(p_->DeadRatio(0), 0.0);
  ASSERT_GT(p_->DeadRatio(1), 0.0);
  ASSERT_NO_FATAL_FAILURE(Put("b"));
  auto del = p_->Delete("b");
  ASSERT_THAT(del, IsOk());
  model_.erase("b");
  const uint64_t newest = del->version;
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
  // Compaction relocates the live keys (old versions) past the tombstone,
  // which seals its segment; then that segment, the oldest left, goes
  // with the tombstone.
  const uint64_t tombstone_segment = Active();
  for (int i = 0; i < 10 && HasSegment(*p_, tombstone_segment); ++i) {
    ASSERT_THAT(p_->Compact(0.0), IsOk());
  }
  ASSERT_FALSE(HasSegment(*p_, tombstone_segment)) << "active: " << Active();
  ASSERT_FALSE(HasSegment(*p_, 0));
  ASSERT_FALSE(HasSegment(*p_, 1));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
  fs_.KillAfterOps(0);  // the process dies: Close() writes nothing more
  p_.reset();
  fs_.Crash(5, /*keep_unsynced=*/false);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_GT(p_->Stats().next_version, newest);
  auto w = p_->Put("b", "again");
  ASSERT_THAT(w, IsOk());
  EXPECT_GT(w->version, newest);
  model_["b"] = Stored{"again", w->version};
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// A checkpoint taken while k lives in segment 0 holds index entries into
// it; after segment 0 is compacted away they point into a deleted file.
// Recovery must not use them blindly: the index must equal a full replay's.
TEST_P(CompactionRegressionTest, CheckpointIntoDeletedSegmentIsNotUsedBlindly) {
  ASSERT_NO_FATAL_FAILURE(Put("k"));       // stays live: relocated
  ASSERT_NO_FATAL_FAILURE(Put("k2"));      // overwritten after the checkpoint
  ASSERT_NO_FATAL_FAILURE(Put("k3"));      // deleted after the checkpoint
  ASSERT_NO_FATAL_FAILURE(Put("k4", 10));  // deleted before it
  ASSERT_NO_FATAL_FAILURE(Delete("k4"));
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(1));
  ASSERT_NO_FATAL_FAILURE(Put("k5"));  // in segment 1, at the checkpoint
  ASSERT_THAT(p_->Checkpoint(), IsOk());
  ASSERT_NO_FATAL_FAILURE(Put("k2"));
  ASSERT_NO_FATAL_FAILURE(Delete("k3"));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
  ASSERT_THAT(p_->Compact(0.0), IsOk());
  ASSERT_FALSE(HasSegment(*p_, 0));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointAfter));
  // Under kFullReplay and kCheckpointBefore the stale checkpoint is the
  // newest: recovery has to cope with it.
  ASSERT_NO_FATAL_FAILURE(Reopen());
  // The newest checkpoint is used, not rejected for a full replay; the
  // stale one's entries into segment 0 are dropped.
  EXPECT_TRUE(p_->Stats().recovered.checkpoint_id.has_value());
  EXPECT_EQ(p_->Stats().recovered.checkpoints_rejected, 0u);
  if (recovery() == Recovery::kFullReplay || recovery() == Recovery::kCheckpointBefore) {
    EXPECT_GT(p_->Stats().recovered.entries_dropped, 0u);
  }
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  // Writes work and a second reopen agrees.
  ASSERT_NO_FATAL_FAILURE(Put("k"));
  ASSERT_NO_FATAL_FAILURE(Put("k6"));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
}

// The checkpoint's covered address lies inside a segment that compaction
// removes later: replay must resume at the next segment still there.
TEST_P(CompactionRegressionTest, CheckpointCoveringPartOfACompactedSegment) {
  ASSERT_NO_FATAL_FAILURE(FillUntilActive(1, "base"));  // segment 0: all live
  for (int i = 0; i < 8; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("mid", i)));
  }
  ASSERT_THAT(p_->Checkpoint(), IsOk());  // covers part of segment 1
  for (int i = 0; i < 4; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("late", i)));
  }
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(2));
  for (int i = 0; i < 8; i += 2) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("mid", i)));
  }
  ASSERT_NO_FATAL_FAILURE(Delete("mid1"));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
  ASSERT_GE(p_->DeadRatio(1), 0.5);
  ASSERT_THAT(p_->Compact(0.5), IsOk());
  ASSERT_TRUE(HasSegment(*p_, 0));
  ASSERT_FALSE(HasSegment(*p_, 1));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
  ASSERT_NO_FATAL_FAILURE(Put("after"));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointAfter));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
}

// A checkpoint taken while a compaction is half done.
TEST_P(CompactionRegressionTest, CheckpointDuringCompaction) {
  o_.compaction_min_step = 400;
  o_.compaction_work_ratio = 0.01;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (int i = 0; i < 12; ++i) {
    ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
  }
  ASSERT_NO_FATAL_FAILURE(OverwriteUntilActive(3));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBefore));
  ASSERT_THAT(p_->Tick(), IsOk());
  p_->StartCompaction(0.0);
  for (int i = 0; i < 6; ++i) {
    ASSERT_THAT(p_->Tick(), IsOk());
  }
  ASSERT_TRUE(p_->compaction_running());
  ASSERT_NO_FATAL_FAILURE(Put("stable2"));
  ASSERT_THAT(p_->Checkpoint(), IsOk());
  for (int i = 0; p_->compaction_running(); ++i) {
    if (i == 5) {
      ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointBetween));
    }
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(i, 10000);
  }
  ASSERT_FALSE(HasSegment(*p_, 0));
  ASSERT_NO_FATAL_FAILURE(MaybeCheckpoint(Recovery::kCheckpointAfter));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
}

INSTANTIATE_TEST_SUITE_P(Recoveries, CompactionRegressionTest,
                         ::testing::Combine(::testing::Values(Recovery::kFullReplay,
                                                              Recovery::kCheckpointBefore,
                                                              Recovery::kCheckpointBetween,
                                                              Recovery::kCheckpointAfter),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return RecoveryName(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "Shortcuts" : "ReadAll");
                         });

// ---------------------------------------------------------------------------
// A crash at every point of a compaction (KillAfterOps), including after
// the relocated records were synced but before the MANIFEST dropped the
// segment, so both copies of them exist.

struct KillScenario {
  MemFileSystem fs;
  PartitionOptions o;
  std::unique_ptr<Partition> p;
  Dump model;
  int n = 0;

  absl::Status Open() {
    p.reset();
    auto q = Partition::Open(o);
    if (!q.ok()) return q.status();
    p = std::move(*q);
    return absl::OkStatus();
  }
  void Put(const std::string& key) {
    const std::string value = absl::StrCat(key, "=", ++n, std::string(180, 'v'));
    auto w = p->Put(key, value);
    ASSERT_THAT(w, IsOk());
    model[key] = Stored{value, w->version};
  }
  // Segment 0: k, a deleted key, filler overwritten; a checkpoint; then
  // segment 1 active. Compact(0.0) then relocates k and drops the rest.
  void Setup(bool checkpoint) {
    o = SmallOptions(&fs);
    o.checkpoint_interval = absl::ZeroDuration();
    o.compaction_dead_ratio = 2;
    ASSERT_THAT(Open(), IsOk());
    ASSERT_NO_FATAL_FAILURE(Put("k"));
    ASSERT_NO_FATAL_FAILURE(Put("gone"));
    ASSERT_THAT(p->Delete("gone"), IsOk());
    model.erase("gone");
    for (int i = 0; i < 4; ++i) {
      ASSERT_NO_FATAL_FAILURE(Put(absl::StrCat("stable", i)));
    }
    while (p->Segments().back().id < 1) ASSERT_NO_FATAL_FAILURE(Put("filler"));
    ASSERT_NO_FATAL_FAILURE(Put("other"));
    if (checkpoint) {
      ASSERT_THAT(p->Checkpoint(), IsOk());
    }
  }
};

TEST(CompactionKillTest, CrashAtEveryPointOfACompaction) {
  for (bool checkpoint : {false, true}) {
    SCOPED_TRACE(absl::StrCat("checkpoint ", checkpoint));
    uint64_t total = 0;
    uint64_t tail_before = 0;
    {
      KillScenario s;
      ASSERT_NO_FATAL_FAILURE(s.Setup(checkpoint));
      tail_before = s.p->Stats().tail_address;
      const uint64_t start = s.fs.MutatingOps();
      ASSERT_THAT(s.p->Compact(0.0), IsOk());
      total = s.fs.MutatingOps() - start;
      ASSERT_FALSE(HasSegment(*s.p, 0));
    }
    ASSERT_GT(total, 3u);
    int both_copies = 0;
    for (uint64_t n = 0; n <= total + 1; ++n) {
      for (bool keep : {false, true}) {
        SCOPED_TRACE(absl::StrCat("killed after ", n, " of ", total,
                                  " operations, keep_unsynced ", keep));
        KillScenario s;
        ASSERT_NO_FATAL_FAILURE(s.Setup(checkpoint));
        s.fs.KillAfterOps(n);
        const absl::Status compacted = s.p->Compact(0.0);
        if (n >= total) {
          EXPECT_THAT(compacted, IsOk());
        }
        s.fs.KillAfterOps(0);  // the process dies: Close() writes nothing
        s.p.reset();
        s.fs.Crash(n * 7 + keep, keep);
        ASSERT_THAT(s.Open(), IsOk());
        if (HasSegment(*s.p, 0) && s.p->Stats().tail_address > tail_before) {
          ++both_copies;
        }
        ASSERT_NO_FATAL_FAILURE(ExpectContents(*s.p, s.model));
        // The recovered log goes on: compact again, overwrite k, reopen.
        ASSERT_THAT(s.p->Compact(0.0), IsOk());
        ASSERT_NO_FATAL_FAILURE(ExpectContents(*s.p, s.model));
        ASSERT_NO_FATAL_FAILURE(s.Put("k"));
        ASSERT_THAT(s.Open(), IsOk());
        ASSERT_NO_FATAL_FAILURE(ExpectContents(*s.p, s.model));
        ASSERT_THAT(s.p->Checkpoint(), IsOk());
        ASSERT_NO_FATAL_FAILURE(s.Put("k"));
        ASSERT_THAT(s.p->Close(), IsOk());
        s.p.reset();
        auto full = FullReplayDump(s.o);
        ASSERT_THAT(full, IsOk());
        EXPECT_EQ(*full, s.model);
      }
    }
    EXPECT_GT(both_copies, 0)
        << "no kill point left both the relocated records and segment 0";
  }
}

// Regression (a) with both copies: the crash comes after the relocated
// copy of k = v1 was synced but before the MANIFEST dropped segment 0, so
// the log holds k = v1 twice, with the same version. k = v2 written after
// recovery must win over both, through every recovery path.
TEST(CompactionKillTest, CompactedOutputReplayedOutOfOrderWithBothCopiesDoesNotResurrectOldValue) {
  uint64_t total = 0;
  uint64_t tail_before = 0;
  {
    KillScenario s;
    ASSERT_NO_FATAL_FAILURE(s.Setup(/*checkpoint=*/true));
    tail_before = s.p->Stats().tail_address;
    const uint64_t start = s.fs.MutatingOps();
    ASSERT_THAT(s.p->Compact(0.0), IsOk());
    total = s.fs.MutatingOps() - start;
  }
  int found = 0;
  for (uint64_t n = 0; n < total; ++n) {
    SCOPED_TRACE(absl::StrCat("killed after ", n, " of ", total, " operations"));
    KillScenario s;
    ASSERT_NO_FATAL_FAILURE(s.Setup(/*checkpoint=*/true));
    const Stored v1 = s.model.at("k");
    s.fs.KillAfterOps(n);
    s.p->Compact(0.0).IgnoreError();
    s.fs.KillAfterOps(0);  // the process dies: Close() writes nothing
    s.p.reset();
    s.fs.Crash(n, /*keep_unsynced=*/false);
    ASSERT_THAT(s.Open(), IsOk());
    // Only the kill points that left both copies.
    if (!HasSegment(*s.p, 0) || s.p->Stats().tail_address <= tail_before) continue;
    ++found;
    ReadResult r;
    ASSERT_THAT(s.p->Get("k", &r), IsOk());
    ASSERT_TRUE(r.found);
    EXPECT_EQ(r.value, v1.value);
    EXPECT_EQ(r.version, v1.version);
    ASSERT_NO_FATAL_FAILURE(ExpectContents(*s.p, s.model));
    ASSERT_NO_FATAL_FAILURE(s.Put("k"));  // v2
    // From the checkpoint taken before the compaction.
    ASSERT_THAT(s.Open(), IsOk());
    ASSERT_NO_FATAL_FAILURE(ExpectContents(*s.p, s.model));
    // From a checkpoint taken now.
    ASSERT_THAT(s.p->Checkpoint(), IsOk());
    ASSERT_NO_FATAL_FAILURE(s.Put("other"));
    ASSERT_THAT(s.Open(), IsOk());
    ASSERT_NO_FATAL_FAILURE(ExpectContents(*s.p, s.model));
    // After compacting segment 0 again.
    ASSERT_THAT(s.p->Compact(0.0), IsOk());
    EXPECT_FALSE(HasSegment(*s.p, 0));
    ASSERT_NO_FATAL_FAILURE(ExpectContents(*s.p, s.model));
    ASSERT_THAT(s.Open(), IsOk());
    ASSERT_NO_FATAL_FAILURE(ExpectContents(*s.p, s.model));
    // And from a full replay.
    ASSERT_THAT(s.p->Close(), IsOk());
    s.p.reset();
    auto full = FullReplayDump(s.o);
    ASSERT_THAT(full, IsOk());
    EXPECT_EQ(*full, s.model);
  }
  EXPECT_GT(found, 0) << "no kill point left both copies of k";
}

}  // namespace
}  // namespace segkv::worker
