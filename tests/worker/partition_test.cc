// Partition semantics: versions, compare-and-set, deletes, batches, limits,
// durability policies, reopen.
#include "worker/partition.h"

#include <string>
#include <vector>

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/format.h"
#include "worker/mem_fs.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::SmallOptions;
using ::segkv::worker::testing::StatusIs;
using ::testing::SizeIs;

class PartitionTest : public ::testing::Test {
 protected:
  void Open(Durability d = Durability::kAlways) {
    p_.reset();
    auto p = Partition::Open(SmallOptions(&fs_, d));
    ASSERT_THAT(p, IsOk());
    p_ = std::move(*p);
  }
  void SetUp() override { Open(); }

  ReadResult Get(absl::string_view key) {
    ReadResult r;
    EXPECT_THAT(p_->Get(key, &r), IsOk());
    return r;
  }

  MemFileSystem fs_;
  std::unique_ptr<Partition> p_;
};

TEST_F(PartitionTest, MissingKeyIsNotFoundNotAnError) {
  ReadResult r = Get("absent");
  EXPECT_FALSE(r.found);
  EXPECT_EQ(r.version, 0u);
}

TEST_F(PartitionTest, PutThenGetReturnsValueAndVersion) {
  auto w = p_->Put("k", "v1");
  ASSERT_THAT(w, IsOk());
  EXPECT_FALSE(w->existed);
  EXPECT_GT(w->version, 0u);
  ReadResult r = Get("k");
  EXPECT_TRUE(r.found);
  EXPECT_EQ(r.value, "v1");
  EXPECT_EQ(r.version, w->version);
}

TEST_F(PartitionTest, VersionsIncreaseWithEveryWrite) {
  uint64_t last = 0;
  for (int i = 0; i < 50; ++i) {
    auto w = p_->Put(i % 2 ? "a" : "b", std::to_string(i));
    ASSERT_THAT(w, IsOk());
    EXPECT_GT(w->version, last);
    last = w->version;
  }
}

TEST_F(PartitionTest, OverwriteReportsPreviousVersion) {
  auto w1 = p_->Put("k", "v1");
  ASSERT_THAT(w1, IsOk());
  WriteOp op = WriteOp::Put("k", "v2");
  op.return_previous = true;
  auto w2 = p_->Write(op);
  ASSERT_THAT(w2, IsOk());
  EXPECT_TRUE(w2->existed);
  EXPECT_EQ(w2->previous_version, w1->version);
  EXPECT_EQ(w2->previous_value, "v1");
  EXPECT_EQ(Get("k").value, "v2");
}

TEST_F(PartitionTest, EmptyValueIsAllowed) {
  ASSERT_THAT(p_->Put("k", ""), IsOk());
  ReadResult r = Get("k");
  EXPECT_TRUE(r.found);
  EXPECT_EQ(r.value, "");
}

TEST_F(PartitionTest, DeleteRemovesKey) {
  ASSERT_THAT(p_->Put("k", "v"), IsOk());
  auto d = p_->Delete("k");
  ASSERT_THAT(d, IsOk());
  EXPECT_TRUE(d->existed);
  EXPECT_FALSE(Get("k").found);
  EXPECT_EQ(p_->Stats().keys, 0u);
}

TEST_F(PartitionTest, DeleteOfMissingKeyWritesNothing) {
  const uint64_t tail = p_->Stats().tail_address;
  auto d = p_->Delete("nope");
  ASSERT_THAT(d, IsOk());
  EXPECT_FALSE(d->existed);
  EXPECT_EQ(d->version, 0u);
  EXPECT_EQ(p_->Stats().tail_address, tail);
}

TEST_F(PartitionTest, CompareAndSetCreateOnly) {
  WriteOp op = WriteOp::Put("k", "v1");
  op.expected_version = 0;
  ASSERT_THAT(p_->Write(op), IsOk());
  op.value = "v2";
  EXPECT_THAT(p_->Write(op), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(Get("k").value, "v1");
}

TEST_F(PartitionTest, CompareAndSetOnVersion) {
  auto w1 = p_->Put("k", "v1");
  ASSERT_THAT(w1, IsOk());
  WriteOp stale = WriteOp::Put("k", "lost");
  stale.expected_version = w1->version + 100;
  std::vector<WriteResult> results;
  EXPECT_THAT(p_->ApplyBatch({&stale, 1}, &results), IsOk());
  EXPECT_THAT(results[0].status, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(results[0].previous_version, w1->version);

  WriteOp fresh = WriteOp::Put("k", "v2");
  fresh.expected_version = w1->version;
  ASSERT_THAT(p_->Write(fresh), IsOk());
  EXPECT_EQ(Get("k").value, "v2");
}

TEST_F(PartitionTest, CompareAndSetDelete) {
  auto w = p_->Put("k", "v");
  ASSERT_THAT(w, IsOk());
  WriteOp del = WriteOp::Delete("k");
  del.expected_version = w->version - 1;
  EXPECT_THAT(p_->Write(del), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(Get("k").found);
  del.expected_version = w->version;
  ASSERT_THAT(p_->Write(del), IsOk());
  EXPECT_FALSE(Get("k").found);
}

TEST_F(PartitionTest, FailedCompareAndSetWritesNothing) {
  ASSERT_THAT(p_->Put("k", "v"), IsOk());
  const PartitionStats before = p_->Stats();
  WriteOp op = WriteOp::Put("k", "other");
  op.expected_version = 12345;
  EXPECT_THAT(p_->Write(op), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(p_->Stats().tail_address, before.tail_address);
  EXPECT_EQ(p_->Stats().next_version, before.next_version);
}

TEST_F(PartitionTest, EmptyKeyIsInvalidArgument) {
  EXPECT_THAT(p_->Put("", "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  ReadResult r;
  EXPECT_THAT(p_->Get("", &r), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(p_->Delete(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PartitionTest, KeyLimitIs4KiB) {
  const std::string max_key(format::kMaxKeySize, 'k');
  ASSERT_THAT(p_->Put(max_key, "v"), IsOk());
  EXPECT_EQ(Get(max_key).value, "v");
  const std::string too_long(format::kMaxKeySize + 1, 'k');
  const uint64_t tail = p_->Stats().tail_address;
  EXPECT_THAT(p_->Put(too_long, "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  ReadResult r;
  EXPECT_THAT(p_->Get(too_long, &r), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(p_->Stats().tail_address, tail);
}

TEST_F(PartitionTest, OversizedValueIsInvalidArgumentAndWritesNothing) {
  ASSERT_THAT(p_->Put("k", std::string(512, 'v')), IsOk());
  const PartitionStats before = p_->Stats();
  EXPECT_THAT(p_->Put("k", std::string(513, 'v')),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(p_->Stats().tail_address, before.tail_address);
  EXPECT_EQ(p_->Stats().next_version, before.next_version);
  EXPECT_EQ(Get("k").value, std::string(512, 'v'));
}

TEST_F(PartitionTest, BatchReportsPerOpResults) {
  std::vector<WriteOp> ops = {
      WriteOp::Put("a", "1"),
      WriteOp::Put("", "bad"),
      WriteOp::Put("b", std::string(600, 'x')),
      WriteOp::Delete("missing"),
      WriteOp::Put("a", "2"),
  };
  std::vector<WriteResult> results;
  ASSERT_THAT(p_->ApplyBatch(ops, &results), IsOk());
  ASSERT_THAT(results, SizeIs(5));
  EXPECT_THAT(results[0].status, IsOk());
  EXPECT_THAT(results[1].status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(results[2].status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(results[3].status, IsOk());
  EXPECT_FALSE(results[3].existed);
  EXPECT_THAT(results[4].status, IsOk());
  EXPECT_EQ(results[4].previous_version, results[0].version);
  EXPECT_EQ(Get("a").value, "2");
  EXPECT_FALSE(Get("b").found);
}

TEST_F(PartitionTest, BatchUnderAlwaysPaysOneSync) {
  std::vector<std::string> keys;
  for (int i = 0; i < 20; ++i) keys.push_back("key" + std::to_string(i));
  std::vector<WriteOp> ops;
  for (const auto& k : keys) ops.push_back(WriteOp::Put(k, "value"));
  std::vector<WriteResult> results;
  const uint64_t syncs = fs_.SyncCount();
  ASSERT_THAT(p_->ApplyBatch(ops, &results), IsOk());
  EXPECT_EQ(fs_.SyncCount() - syncs, 1u);
  for (const auto& k : keys) EXPECT_TRUE(Get(k).found);
}

TEST_F(PartitionTest, BatchLargerThanASegmentSpansSegments) {
  std::vector<std::string> keys;
  for (int i = 0; i < 100; ++i) keys.push_back("key" + std::to_string(i));
  std::vector<WriteOp> ops;
  const std::string value(300, 'v');
  for (const auto& k : keys) ops.push_back(WriteOp::Put(k, value));
  std::vector<WriteResult> results;
  ASSERT_THAT(p_->ApplyBatch(ops, &results), IsOk());
  EXPECT_GE(p_->Segments().size(), 4u);  // 100 * ~340 bytes in 8 KiB segments
  for (const auto& k : keys) EXPECT_EQ(Get(k).value, value);
  Open();
  for (const auto& k : keys) EXPECT_EQ(Get(k).value, value);
}

TEST_F(PartitionTest, ReadsSeeUnflushedTail) {
  Open(Durability::kNone);
  ASSERT_THAT(p_->Put("k", "buffered"), IsOk());
  EXPECT_GT(p_->Stats().tail_address, p_->Stats().synced_address);
  EXPECT_EQ(Get("k").value, "buffered");
}

TEST_F(PartitionTest, NonePolicyDoesNotSyncPerWrite) {
  Open(Durability::kNone);
  const uint64_t syncs = fs_.SyncCount();
  for (int i = 0; i < 10; ++i) ASSERT_THAT(p_->Put("k" + std::to_string(i), "v"), IsOk());
  EXPECT_EQ(fs_.SyncCount(), syncs);
  ASSERT_THAT(p_->Sync(), IsOk());
  EXPECT_EQ(fs_.SyncCount(), syncs + 1);
  EXPECT_EQ(p_->Stats().synced_address, p_->Stats().tail_address);
}

TEST_F(PartitionTest, IntervalPolicySyncsWhenDue) {
  PartitionOptions o = SmallOptions(&fs_, Durability::kInterval);
  o.sync_interval = absl::Hours(1);
  p_.reset();
  auto far = Partition::Open(o);
  ASSERT_THAT(far, IsOk());
  const uint64_t syncs = fs_.SyncCount();
  ASSERT_THAT((*far)->Put("a", "1"), IsOk());
  ASSERT_THAT((*far)->Tick(), IsOk());
  EXPECT_EQ(fs_.SyncCount(), syncs);  // not due for an hour
  far->reset();

  o.sync_interval = absl::Nanoseconds(1);
  auto due = Partition::Open(o);
  ASSERT_THAT(due, IsOk());
  ASSERT_THAT((*due)->Put("b", "2"), IsOk());
  const uint64_t before_tick = fs_.SyncCount();
  ASSERT_THAT((*due)->Tick(), IsOk());
  EXPECT_EQ(fs_.SyncCount(), before_tick + 1);
  EXPECT_EQ((*due)->Stats().synced_address, (*due)->Stats().tail_address);
}

TEST_F(PartitionTest, UnsyncedBytesAreBounded) {
  PartitionOptions o = SmallOptions(&fs_, Durability::kNone);
  o.dir = "/data/big";
  o.segment_size = 1 << 20;
  o.max_unsynced_bytes = 16 << 10;
  p_.reset();
  auto p = Partition::Open(o);
  ASSERT_THAT(p, IsOk());
  for (int i = 0; i < 2000; ++i) {
    ASSERT_THAT((*p)->Put("k" + std::to_string(i), std::string(100, 'v')), IsOk());
    const PartitionStats st = (*p)->Stats();
    // Buffered bytes (<= buffer size + one record) plus written-unsynced.
    EXPECT_LE(st.tail_address - st.synced_address, (16u << 10) + (1u << 10) + 200);
  }
}

TEST_F(PartitionTest, ReopenKeepsDataAndVersions) {
  auto w = p_->Put("k", "v");
  ASSERT_THAT(w, IsOk());
  ASSERT_THAT(p_->Delete("gone"), IsOk());
  ASSERT_THAT(p_->Put("gone", "x"), IsOk());
  ASSERT_THAT(p_->Delete("gone"), IsOk());
  const uint64_t next = p_->Stats().next_version;
  Open();
  ReadResult r = Get("k");
  EXPECT_EQ(r.value, "v");
  EXPECT_EQ(r.version, w->version);
  EXPECT_FALSE(Get("gone").found);
  EXPECT_EQ(p_->Stats().next_version, next);
  auto w2 = p_->Put("k", "v2");
  ASSERT_THAT(w2, IsOk());
  EXPECT_GE(w2->version, next);
}

TEST_F(PartitionTest, DeletedKeyStaysDeletedAcrossSegmentsAndReopen) {
  ASSERT_THAT(p_->Put("k", "old"), IsOk());
  for (int i = 0; i < 100; ++i) {
    ASSERT_THAT(p_->Put("filler" + std::to_string(i), std::string(200, 'f')), IsOk());
  }
  ASSERT_THAT(p_->Delete("k"), IsOk());
  EXPECT_GE(p_->Segments().size(), 3u);
  Open();
  EXPECT_FALSE(Get("k").found);
  EXPECT_EQ(p_->Stats().keys, 100u);
}

TEST_F(PartitionTest, LiveAndDeadBytesAreAccounted) {
  ASSERT_THAT(p_->Put("k", "v1"), IsOk());
  const PartitionStats one = p_->Stats();
  EXPECT_EQ(one.dead_bytes, 0u);
  EXPECT_EQ(one.live_bytes, RecordSize(1, 2));
  ASSERT_THAT(p_->Put("k", "v2"), IsOk());
  EXPECT_EQ(p_->Stats().live_bytes, RecordSize(1, 2));
  EXPECT_EQ(p_->Stats().dead_bytes, RecordSize(1, 2));
  ASSERT_THAT(p_->Delete("k"), IsOk());
  EXPECT_EQ(p_->Stats().live_bytes, 0u);
  EXPECT_EQ(p_->Stats().dead_bytes, 3 * RecordSize(1, 2) - 2);  // tombstone has no value
  const PartitionStats before = p_->Stats();
  Open();
  EXPECT_EQ(p_->Stats().live_bytes, before.live_bytes);
  EXPECT_EQ(p_->Stats().dead_bytes, before.dead_bytes);
}

TEST_F(PartitionTest, ClosedPartitionRefusesWrites) {
  ASSERT_THAT(p_->Close(), IsOk());
  EXPECT_THAT(p_->Put("k", "v"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(PartitionTest, ExistingSegmentSizeWinsOverOption) {
  ASSERT_THAT(p_->Put("k", "v"), IsOk());
  p_.reset();
  PartitionOptions o = SmallOptions(&fs_);
  o.segment_size = 16 << 10;
  auto p = Partition::Open(o);
  ASSERT_THAT(p, IsOk());
  ReadResult r;
  ASSERT_THAT((*p)->Get("k", &r), IsOk());
  EXPECT_EQ(r.value, "v");
}

TEST_F(PartitionTest, OtherPartitionsDirIsFailedPrecondition) {
  p_.reset();
  PartitionOptions o = SmallOptions(&fs_);
  o.partition_id = 3;
  EXPECT_THAT(Partition::Open(o), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(PartitionTest, SegmentTooSmallForLimitsIsInvalidArgument) {
  PartitionOptions o = SmallOptions(&fs_);
  o.dir = "/data/other";
  o.max_value_size = 8 << 10;
  EXPECT_THAT(Partition::Open(o), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PartitionTest, ParseDurabilityNames) {
  EXPECT_EQ(*ParseDurability("always"), Durability::kAlways);
  EXPECT_EQ(*ParseDurability("interval"), Durability::kInterval);
  EXPECT_EQ(*ParseDurability("none"), Durability::kNone);
  EXPECT_THAT(ParseDurability("sometimes"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PartitionTest, ManyKeysSurviveReopenWithIndexGrowth) {
  PartitionOptions o = SmallOptions(&fs_, Durability::kNone);
  o.dir = "/data/big";
  o.segment_size = 1 << 20;
  p_.reset();
  auto p = Partition::Open(o);
  ASSERT_THAT(p, IsOk());
  std::vector<WriteOp> ops;
  std::vector<std::string> keys;
  for (int i = 0; i < 50000; ++i) keys.push_back("key-" + std::to_string(i));
  std::vector<WriteResult> results;
  for (size_t i = 0; i < keys.size(); i += 500) {
    ops.clear();
    for (size_t j = i; j < i + 500; ++j) ops.push_back(WriteOp::Put(keys[j], keys[j]));
    ASSERT_THAT((*p)->ApplyBatch(ops, &results), IsOk());
  }
  EXPECT_EQ((*p)->Stats().keys, keys.size());
  EXPECT_LE((*p)->index().MemoryBytes(), 4u << 20);  // 2 MiB bucket chunks
  p->reset();
  auto q = Partition::Open(o);
  ASSERT_THAT(q, IsOk());
  ReadResult r;
  for (const auto& k : keys) {
    ASSERT_THAT((*q)->Get(k, &r), IsOk());
    ASSERT_TRUE(r.found) << k;
    ASSERT_EQ(r.value, k);
  }
  EXPECT_EQ((*q)->Stats().recovery.records, keys.size());
}

TEST_F(PartitionTest, LoweringMaxValueSizeKeepsOldRecordsReadable) {
  ASSERT_THAT(p_->Put("big", std::string(500, 'b')), IsOk());
  p_.reset();
  PartitionOptions o = SmallOptions(&fs_);
  o.max_value_size = 100;
  auto p = Partition::Open(o);
  ASSERT_THAT(p, IsOk());
  ReadResult r;
  ASSERT_THAT((*p)->Get("big", &r), IsOk());
  EXPECT_EQ(r.value, std::string(500, 'b'));
  EXPECT_THAT((*p)->Put("big", std::string(101, 'b')),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

std::map<std::string, std::string> ScanAll(Partition& p, absl::string_view prefix,
                                           size_t page) {
  std::map<std::string, std::string> seen;
  uint64_t cursor = 0;
  do {
    std::vector<ScanItem> items;
    auto next = p.Scan(cursor, prefix, page, false, 1 << 20, &items);
    EXPECT_THAT(next, IsOk());
    if (!next.ok()) break;
    for (auto& it : items) {
      EXPECT_TRUE(seen.emplace(it.key, it.value).second) << "twice: " << it.key;
    }
    cursor = *next;
  } while (cursor != 0);
  return seen;
}

TEST_F(PartitionTest, ScanReturnsEveryLiveKeyOnce) {
  std::map<std::string, std::string> want;
  for (int i = 0; i < 300; ++i) {
    const std::string k = absl::StrCat(i % 3 == 0 ? "a/" : "b/", i);
    const std::string v(i % 50, 'v');
    ASSERT_THAT(p_->Put(k, v), IsOk());
    want[k] = v;
  }
  for (int i = 0; i < 300; i += 7) {
    const std::string k = absl::StrCat(i % 3 == 0 ? "a/" : "b/", i);
    ASSERT_THAT(p_->Put(k, "new"), IsOk());
    want[k] = "new";
  }
  for (int i = 1; i < 300; i += 11) {
    const std::string k = absl::StrCat(i % 3 == 0 ? "a/" : "b/", i);
    ASSERT_THAT(p_->Delete(k), IsOk());
    want.erase(k);
  }
  ASSERT_GE(p_->Segments().size(), 2u);
  EXPECT_EQ(ScanAll(*p_, "", 7), want);
  std::map<std::string, std::string> a;
  for (const auto& [k, v] : want) {
    if (absl::StartsWith(k, "a/")) a[k] = v;
  }
  EXPECT_EQ(ScanAll(*p_, "a/", 1000), a);
}

TEST_F(PartitionTest, ScanOfEmptyPartitionEndsAtOnce) {
  std::vector<ScanItem> items;
  auto next = p_->Scan(0, "", 10, false, 1 << 20, &items);
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(*next, 0u);
  EXPECT_TRUE(items.empty());
}

TEST_F(PartitionTest, ScanRejectsACursorInsideARecord) {
  ASSERT_THAT(p_->Put("key", std::string(100, 'x')), IsOk());
  std::vector<ScanItem> items;
  EXPECT_THAT(p_->Scan(format::kSegmentHeaderSize + 5, "", 10, false, 1 << 20, &items),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(p_->Scan(uint64_t{1} << 40, "", 10, false, 1 << 20, &items), IsOk());
}

TEST_F(PartitionTest, ScanCursorCrossingIntoTheTailBufferIsRejected) {
  Open(Durability::kNone);
  ASSERT_THAT(p_->Put("a", std::string(100, 'a')), IsOk());
  ASSERT_THAT(p_->Sync(), IsOk());
  const uint64_t file_end = p_->Stats().synced_address;
  ASSERT_THAT(p_->Put("b", std::string(100, 'b')), IsOk());  // buffered
  std::vector<ScanItem> items;
  EXPECT_THAT(p_->Scan(file_end - 1, "", 10, false, 1 << 20, &items),
              StatusIs(absl::StatusCode::kInvalidArgument));
  auto next = p_->Scan(file_end, "", 10, false, 1 << 20, &items);
  ASSERT_THAT(next, IsOk());
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].key, "b");
}

TEST_F(PartitionTest, NonPositiveSyncIntervalIsInvalidArgument) {
  PartitionOptions o = SmallOptions(&fs_, Durability::kAlways);
  o.dir = "/data/other";
  o.sync_interval = absl::ZeroDuration();
  EXPECT_THAT(Partition::Open(o), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PartitionTest, ScanStopsAfterMaxScanBytes) {
  for (int i = 0; i < 50; ++i) ASSERT_THAT(p_->Put(absl::StrCat("k", i), "v"), IsOk());
  std::vector<ScanItem> items;
  auto next = p_->Scan(0, "nomatch", 1000, false, 200, &items);
  ASSERT_THAT(next, IsOk());
  EXPECT_NE(*next, 0u);
  EXPECT_TRUE(items.empty());
}

// A directory listing that misses the MANIFEST (readdir failing midway)
// must not pass for a new partition, whose creation truncates segment 0
// and replaces the MANIFEST: the open fails and the data stays.
TEST(PartitionOpenTest, AListingWithoutTheManifestThatExistsDoesNotOpenAsNew) {
  MemFileSystem mem;
  {
    auto p = Partition::Open(testing::SmallOptions(&mem));
    ASSERT_THAT(p, IsOk());
    ASSERT_THAT((*p)->Put("k", "v"), IsOk());
    ASSERT_THAT((*p)->Close(), IsOk());
  }
  class EmptyListing : public testing::ForwardingFileSystem {
   public:
    using ForwardingFileSystem::ForwardingFileSystem;
    absl::StatusOr<std::vector<std::string>> ListDir(const std::string&) override {
      return std::vector<std::string>{};
    }
  } empty(&mem);
  EXPECT_THAT(Partition::Open(testing::SmallOptions(&empty)),
              StatusIs(absl::StatusCode::kDataLoss));
  auto p = Partition::Open(testing::SmallOptions(&mem));
  ASSERT_THAT(p, IsOk());
  ReadResult r;
  ASSERT_THAT((*p)->Get("k", &r), IsOk());
  EXPECT_EQ(r.value, "v");
}

}  // namespace
}  // namespace segkv::worker
