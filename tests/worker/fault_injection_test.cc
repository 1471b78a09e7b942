// I/O failures through the file-system seam: a failed write or fsync fails
// the writes it covers and changes nothing visible; a full disk is
// RESOURCE_EXHAUSTED; nothing acknowledged is lost.
#include <atomic>
#include <cerrno>
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
using ::segkv::worker::testing::SegmentPath;
using ::segkv::worker::testing::SmallOptions;
using ::segkv::worker::testing::StatusIs;
using ::testing::HasSubstr;

class FaultInjectionTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    p_.reset();
    auto p = Partition::Open(SmallOptions(&fs_));
    ASSERT_THAT(p, IsOk());
    p_ = std::move(*p);
  }
  std::string Value(absl::string_view key) {
    ReadResult r;
    EXPECT_THAT(p_->Get(key, &r), IsOk());
    return r.found ? r.value : "<missing>";
  }
  uint64_t UsedBytes() {
    uint64_t total = 0;
    for (const auto& s : p_->Segments()) {
      total += fs_.Contents(SegmentPath(s.id)).size();
    }
    return total + fs_.Contents("/data/p0/MANIFEST").size();
  }

  MemFileSystem fs_;
  std::unique_ptr<Partition> p_;
};

TEST_F(FaultInjectionTest, FullDiskIsResourceExhaustedAndChangesNothing) {
  ASSERT_THAT(p_->Put("k", "v1"), IsOk());
  const PartitionStats before = p_->Stats();
  fs_.SetCapacity(UsedBytes() + 50);
  EXPECT_THAT(p_->Put("k", std::string(200, 'x')),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Value("k"), "v1");
  EXPECT_EQ(p_->Stats().tail_address, before.tail_address);
  EXPECT_EQ(p_->Stats().next_version, before.next_version);
  EXPECT_EQ(p_->Stats().live_bytes, before.live_bytes);
  EXPECT_EQ(p_->Stats().dead_bytes, before.dead_bytes);
  // Space comes back: the partition goes on, and the partial write left
  // nothing behind that recovery would trip over.
  fs_.SetCapacity(0);
  ASSERT_THAT(p_->Put("k", "v2"), IsOk());
  Open();
  EXPECT_EQ(Value("k"), "v2");
  EXPECT_EQ(p_->Stats().recovery.truncated_bytes, 0u);
}

// A group of several ops on one key whose write fails (a full disk, after
// part of it reached the file) is undone whole: index, versions and the
// per-segment byte counts compaction trusts to drop segments unread.
TEST_F(FaultInjectionTest, AFailedGroupOfOpsOnOneKeyChangesNothing) {
  ASSERT_THAT(p_->Put("a", "v0"), IsOk());
  const PartitionStats before = p_->Stats();
  const SegmentUsageTable usage_before = p_->SegmentUsages();
  const std::string big(400, 'x');
  const std::vector<WriteOp> ops = {WriteOp::Put("a", big), WriteOp::Put("a", big + "y"),
                                    WriteOp::Delete("a"), WriteOp::Put("b", big)};
  fs_.FailAppendsAfter(0, ENOSPC);  // the group's write lands in part
  std::vector<WriteResult> results;
  EXPECT_FALSE(p_->ApplyBatch(ops, &results).ok());
  fs_.FailAppendsAfter(-1, 0);
  ASSERT_EQ(results.size(), ops.size());
  for (const WriteResult& r : results) {
    EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kResourceExhausted));
  }
  EXPECT_EQ(Value("a"), "v0");
  EXPECT_EQ(Value("b"), "<missing>");
  const PartitionStats after = p_->Stats();
  EXPECT_EQ(after.tail_address, before.tail_address);
  EXPECT_EQ(after.next_version, before.next_version);
  EXPECT_EQ(after.live_bytes, before.live_bytes);
  EXPECT_EQ(after.dead_bytes, before.dead_bytes);
  for (const SegmentInfo& seg : p_->Segments()) {
    EXPECT_EQ(p_->SegmentUsages().Get(seg.id).total_bytes, usage_before.Get(seg.id).total_bytes);
    EXPECT_EQ(p_->SegmentUsages().Get(seg.id).live_bytes, usage_before.Get(seg.id).live_bytes);
  }
  // The partition goes on; a crash and a full replay agree with it.
  ASSERT_THAT(p_->Put("c", "v"), IsOk());
  const SegmentUsageTable usage = p_->SegmentUsages();
  const std::vector<SegmentInfo> segments = p_->Segments();
  fs_.KillAfterOps(0);  // the process dies: Close() writes nothing
  p_.reset();
  fs_.Crash(5, /*keep_unsynced=*/true);
  Open();
  EXPECT_EQ(Value("a"), "v0");
  EXPECT_EQ(Value("b"), "<missing>");
  EXPECT_EQ(Value("c"), "v");
  for (const SegmentInfo& seg : segments) {
    EXPECT_EQ(p_->SegmentUsages().Get(seg.id).total_bytes, usage.Get(seg.id).total_bytes)
        << "segment " << seg.id;
    EXPECT_EQ(p_->SegmentUsages().Get(seg.id).live_bytes, usage.Get(seg.id).live_bytes)
        << "segment " << seg.id;
  }
  ASSERT_THAT(p_->Compact(0.0), IsOk());  // verify_compaction: no live byte dropped
  EXPECT_EQ(Value("a"), "v0");
  EXPECT_EQ(Value("c"), "v");
}

TEST_F(FaultInjectionTest, FullDiskAtSegmentCreationChangesNothing) {
  int i = 0;
  while (p_->Segments().size() == 1) {
    ASSERT_THAT(p_->Put(absl::StrCat("k", i++), std::string(300, 'v')), IsOk());
  }
  // Fill the new segment to just short of the next seal.
  std::vector<std::string> keys;
  while (p_->Stats().tail_address % (8 << 10) < (8 << 10) - 400) {
    ASSERT_THAT(p_->Put(absl::StrCat("k", i++), std::string(300, 'v')), IsOk());
  }
  const size_t segments = p_->Segments().size();
  fs_.SetCapacity(UsedBytes() + 10);
  EXPECT_THAT(p_->Put("next", std::string(300, 'n')),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Value("next"), "<missing>");
  EXPECT_EQ(p_->Segments().size(), segments);
  EXPECT_FALSE(fs_.Exists(SegmentPath(segments)));
  fs_.SetCapacity(0);
  ASSERT_THAT(p_->Put("next", std::string(300, 'n')), IsOk());
  EXPECT_EQ(p_->Segments().size(), segments + 1);
  Open();
  EXPECT_EQ(Value("next"), std::string(300, 'n'));
  EXPECT_EQ(p_->Stats().keys, static_cast<uint64_t>(i + 1));
}

TEST_F(FaultInjectionTest, WriteErrorIsUnavailableAndRolledBack) {
  ASSERT_THAT(p_->Put("k", "v1"), IsOk());
  fs_.FailAppendsAfter(0, EIO);
  EXPECT_THAT(p_->Put("k", "v2"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(p_->Put("new", "x"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(Value("k"), "v1");
  EXPECT_EQ(Value("new"), "<missing>");
  fs_.FailAppendsAfter(-1, 0);
  ASSERT_THAT(p_->Put("k", "v3"), IsOk());
  Open();
  EXPECT_EQ(Value("k"), "v3");
  EXPECT_EQ(Value("new"), "<missing>");
}

TEST_F(FaultInjectionTest, FailedFsyncFailsTheWriteAndStopsWrites) {
  ASSERT_THAT(p_->Put("k", "acked"), IsOk());
  fs_.FailSyncsAfter(0, EIO);
  EXPECT_THAT(p_->Put("k", "unacked"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(Value("k"), "acked");  // the failed write is not visible
  fs_.FailSyncsAfter(-1, 0);
  // After a failed fsync nothing unsynced can be trusted: no more writes
  // until the partition is reopened; reads go on.
  auto again = p_->Put("other", "x");
  EXPECT_THAT(again, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(again.status().message(), HasSubstr("reopened"));
  EXPECT_EQ(Value("k"), "acked");
  fs_.KillAfterOps(0);  // the process dies: Close() writes nothing
  p_.reset();
  fs_.Crash(1);
  Open();
  const std::string v = Value("k");
  EXPECT_TRUE(v == "acked" || v == "unacked") << v;
  EXPECT_EQ(Value("other"), "<missing>");
  ASSERT_THAT(p_->Put("other", "y"), IsOk());
}

TEST_F(FaultInjectionTest, FailedFsyncFailsEveryOpOfTheBatch) {
  ASSERT_THAT(p_->Put("a", "0"), IsOk());
  std::vector<WriteOp> ops = {WriteOp::Put("a", "1"), WriteOp::Put("b", "1"),
                              WriteOp::Delete("a")};
  std::vector<WriteResult> results;
  fs_.FailSyncsAfter(0, EIO);
  EXPECT_THAT(p_->ApplyBatch(ops, &results), StatusIs(absl::StatusCode::kUnavailable));
  for (const auto& r : results) {
    EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kUnavailable));
  }
  EXPECT_EQ(Value("a"), "0");
  EXPECT_EQ(Value("b"), "<missing>");
  EXPECT_EQ(p_->Stats().keys, 1u);
}

// Ops undone by a failed commit return no previous value, so what they took
// from their response's shared budget comes back (else a BatchWrite's ops
// in other partitions could be refused for a budget nothing uses).
TEST_F(FaultInjectionTest, AFailedCommitGivesBackThePreviousValueBudget) {
  ASSERT_THAT(p_->Put("a", std::string(30, 'a')), IsOk());
  ASSERT_THAT(p_->Put("b", std::string(40, 'b')), IsOk());
  std::atomic<int64_t> budget{100};
  std::vector<WriteOp> ops = {WriteOp::Put("a", "1"), WriteOp::Put("b", "2")};
  for (WriteOp& op : ops) {
    op.return_previous = true;
    op.previous_budget = &budget;
  }
  std::vector<WriteResult> results;
  fs_.FailSyncsAfter(0, EIO);
  EXPECT_THAT(p_->ApplyBatch(ops, &results), StatusIs(absl::StatusCode::kUnavailable));
  for (const auto& r : results) {
    EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kUnavailable));
    EXPECT_TRUE(r.previous_value.empty());
  }
  EXPECT_EQ(budget.load(), 100);
}

// After a failed fdatasync the kernel may mark the unsynced pages clean
// without writing them (MemFileSystem models this). A restart on the same
// machine must not build on them as if they were durable: recovery writes
// the unsynced window again before it syncs. Else a later acknowledged
// write lands after a hole that a power loss reveals, and recovery cuts it
// off as a torn tail.
TEST_F(FaultInjectionTest, ARestartAfterAFailedFsyncDoesNotBuildOnLostBytes) {
  ASSERT_THAT(p_->Put("a", "1"), IsOk());
  fs_.FailSyncsAfter(0, EIO);
  EXPECT_FALSE(p_->Put("b", std::string(100, 'b')).ok());
  fs_.FailSyncsAfter(-1, 0);
  p_.reset();
  Open();  // the same machine: the page cache still has b's bytes
  ASSERT_THAT(p_->Put("after", "2"), IsOk());
  fs_.KillAfterOps(0);  // the process dies: Close() writes nothing
  p_.reset();
  fs_.Crash(3, /*keep_unsynced=*/false);
  Open();
  EXPECT_EQ(Value("a"), "1");
  EXPECT_EQ(Value("after"), "2");
  const std::string b = Value("b");
  EXPECT_TRUE(b == "<missing>" || b == std::string(100, 'b'));
}

// Fails each fsync a seal makes in turn (old segment, new segment file,
// directory, manifest tmp, manifest directory), then crashes: every
// acknowledged write must come back and recovery must not report damage.
TEST_F(FaultInjectionTest, FailureAtEachSealStepLosesNothingAcknowledged) {
  for (int step = 0; step < 6; ++step) {
    SCOPED_TRACE(absl::StrCat("failing sync #", step));
    MemFileSystem fs;
    auto p = Partition::Open(SmallOptions(&fs));
    ASSERT_THAT(p, IsOk());
    std::map<std::string, std::string> acked;
    int i = 0;
    while ((*p)->Stats().tail_address < (8 << 10) - 400) {
      std::string k = absl::StrCat("k", i++);
      ASSERT_THAT((*p)->Put(k, std::string(300, 'a')), IsOk());
      acked[k] = std::string(300, 'a');
    }
    fs.FailSyncsAfter(step, EIO);
    for (int j = 0; j < 3; ++j) {
      std::string k = absl::StrCat("k", i++);
      if ((*p)->Put(k, std::string(300, 'b')).ok()) acked[k] = std::string(300, 'b');
    }
    fs.KillAfterOps(0);  // the process dies: Close() writes nothing
    p->reset();
    fs.Crash(step);
    auto q = Partition::Open(SmallOptions(&fs));
    ASSERT_THAT(q, IsOk());
    ReadResult r;
    for (const auto& [k, v] : acked) {
      ASSERT_THAT((*q)->Get(k, &r), IsOk());
      EXPECT_TRUE(r.found) << k;
      EXPECT_EQ(r.value, v) << k;
    }
    ASSERT_THAT((*q)->Put("after", "x"), IsOk());
  }
}

}  // namespace
}  // namespace segkv::worker
