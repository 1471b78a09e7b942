// Recovery from damaged logs: one test per kind of damage. A torn tail of
// the active segment is truncated; anything else is DATA_LOSS naming the
// segment and offset, never skipped.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/format.h"
#include "worker/manifest.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"
#include "worker/record.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::kDir;
using ::segkv::worker::testing::SegmentPath;
using ::segkv::worker::testing::SmallOptions;
using ::segkv::worker::testing::StatusIs;
using ::testing::HasSubstr;

constexpr size_t kValueSize = 20;
constexpr uint64_t kRecord = format::kRecordHeaderSize + 3 + kValueSize;  // 55

std::string Key(int i) { return absl::StrCat("k", i < 10 ? "0" : "", i); }
std::string Value(int i) { return std::string(kValueSize, 'a' + i % 26); }
// Keys k00..k99 make 55-byte records, k100 and up 56-byte ones.
uint64_t OffsetOf(int i) {
  return format::kSegmentHeaderSize + std::min(i, 100) * kRecord +
         std::max(i - 100, 0) * (kRecord + 1);
}

class LogCorruptionTest : public ::testing::Test {
 protected:
  LogCorruptionTest() : options_(SmallOptions(&fs_)) {
    // A torn write can only reach TornWindow() (~10 KiB here) back from
    // the end of the active segment; damage further back is real damage.
    options_.max_unsynced_bytes = 1024;
    options_.write_buffer_size = 256;
  }
  // Active-segment tests write ~55 KB into one 256 KiB segment.
  void UseLargeSegments() { options_.segment_size = 256 << 10; }

  // Writes records k00..k<n-1> (55 bytes each) and closes the partition.
  void Write(int n) {
    auto p = Partition::Open(options_);
    ASSERT_THAT(p, IsOk());
    for (int i = 0; i < n; ++i) ASSERT_THAT((*p)->Put(Key(i), Value(i)), IsOk());
    segments_ = (*p)->Segments().size();
  }

  absl::StatusOr<std::unique_ptr<Partition>> Reopen() {
    return Partition::Open(options_);
  }

  void Edit(const std::string& path, absl::FunctionRef<void(std::string&)> f) {
    std::string data = fs_.Contents(path);
    ASSERT_FALSE(data.empty()) << path;
    f(data);
    ASSERT_TRUE(fs_.OverwriteFile(path, data));
  }

  int CountPresent(Partition& p, int n) {
    int found = 0;
    ReadResult r;
    for (int i = 0; i < n; ++i) {
      EXPECT_THAT(p.Get(Key(i), &r), IsOk());
      if (r.found) {
        EXPECT_EQ(r.value, Value(i));
        ++found;
      }
    }
    return found;
  }

  MemFileSystem fs_;
  PartitionOptions options_;
  size_t segments_ = 0;
};

TEST_F(LogCorruptionTest, TornRecordAtTailIsTruncated) {
  Write(10);
  Edit(SegmentPath(0), [](std::string& d) { d.resize(d.size() - 10); });
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(CountPresent(**p, 10), 9);
  EXPECT_EQ((*p)->Stats().recovery.truncated_bytes, kRecord - 10);
  // The log goes on from the cut, and what follows survives a reopen.
  ASSERT_THAT((*p)->Put("after", "x"), IsOk());
  p->reset();
  auto q = Reopen();
  ASSERT_THAT(q, IsOk());
  ReadResult r;
  ASSERT_THAT((*q)->Get("after", &r), IsOk());
  EXPECT_TRUE(r.found);
  EXPECT_EQ((*q)->Stats().recovery.truncated_bytes, 0u);
}

TEST_F(LogCorruptionTest, TruncatedHeaderAtTailIsTruncated) {
  Write(10);
  Edit(SegmentPath(0), [](std::string& d) { d.resize(OffsetOf(9) + 10); });
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(CountPresent(**p, 10), 9);
  EXPECT_EQ((*p)->Stats().recovery.truncated_bytes, 10u);
}

TEST_F(LogCorruptionTest, ZeroFilledTailIsTruncated) {
  Write(10);
  Edit(SegmentPath(0), [](std::string& d) { d.append(4096, '\0'); });
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(CountPresent(**p, 10), 10);
  EXPECT_EQ((*p)->Stats().recovery.truncated_bytes, 4096u);
}

TEST_F(LogCorruptionTest, BadCrcInLastRecordIsTruncated) {
  Write(10);
  Edit(SegmentPath(0), [](std::string& d) { d[OffsetOf(9) + 40] ^= 1; });
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(CountPresent(**p, 10), 9);
  ReadResult r;
  ASSERT_THAT((*p)->Get(Key(9), &r), IsOk());
  EXPECT_FALSE(r.found);
}

TEST_F(LogCorruptionTest, BadCrcBeforeTailIsDataLoss) {
  UseLargeSegments();
  Write(1000);
  Edit(SegmentPath(0), [](std::string& d) { d[OffsetOf(3) + 40] ^= 1; });
  auto p = Reopen();
  EXPECT_THAT(p, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(p.status().message(), HasSubstr("segment 0"));
  EXPECT_THAT(p.status().message(), HasSubstr(absl::StrCat("offset ", OffsetOf(3))));
  EXPECT_THAT(p.status().message(), HasSubstr("CRC"));
}

TEST_F(LogCorruptionTest, BadLengthBeforeTailIsDataLoss) {
  UseLargeSegments();
  Write(1000);
  Edit(SegmentPath(0), [](std::string& d) {
    d[OffsetOf(3) + format::kRecKeyLen] = 0x10;  // key_len 16 instead of 3
  });
  auto p = Reopen();
  EXPECT_THAT(p, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(p.status().message(), HasSubstr(absl::StrCat("offset ", OffsetOf(3))));
}

TEST_F(LogCorruptionTest, HugeLengthBeforeTailIsDataLoss) {
  UseLargeSegments();
  Write(1000);
  Edit(SegmentPath(0), [](std::string& d) {
    d[OffsetOf(3) + format::kRecValueLen + 3] = 0x7f;  // value_len ~2 GiB
  });
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(LogCorruptionTest, ZeroFilledRangeBeforeTailIsDataLoss) {
  UseLargeSegments();
  Write(1000);
  Edit(SegmentPath(0), [](std::string& d) {
    std::fill(d.begin() + OffsetOf(2), d.begin() + OffsetOf(4), '\0');
  });
  auto p = Reopen();
  EXPECT_THAT(p, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(p.status().message(), HasSubstr(absl::StrCat("offset ", OffsetOf(2))));
}

TEST_F(LogCorruptionTest, TornWriteWithValidRecordsAfterItIsTruncated) {
  // Pages of an unsynced write reach the disk in any order: a hole near the
  // end with intact records after it is a torn write, not damage.
  UseLargeSegments();
  Write(1000);
  Edit(SegmentPath(0), [](std::string& d) {
    std::fill(d.begin() + OffsetOf(990), d.begin() + OffsetOf(993), '\0');
  });
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(CountPresent(**p, 1000), 990);
  EXPECT_EQ((*p)->Stats().recovery.truncated_bytes, 10 * (kRecord + 1));
}

// The torn window is the writer's, recorded in the segment header, not the
// restarting process's: limits raised between a crash and the restart must
// not turn damage in synced bytes into a "torn tail" silently cut off.
TEST_F(LogCorruptionTest, DamageBeyondTheWritersWindowIsDataLossAfterARestartWithLargerLimits) {
  UseLargeSegments();
  Write(1000);  // ~55 KB; the writer's window is ~10 KiB
  Edit(SegmentPath(0), [](std::string& d) { d[OffsetOf(500) + 40] ^= 1; });
  options_.write_buffer_size = 128 << 10;  // a window over the whole segment
  auto p = Reopen();
  EXPECT_THAT(p, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(p.status().message(), HasSubstr(absl::StrCat("offset ", OffsetOf(500))));
}

// And the other way: a torn write within the writer's (larger) window is
// truncated even if the restart's own limits would call it damage.
TEST_F(LogCorruptionTest, ATornWriteInTheWritersWindowIsTruncatedAfterARestartWithSmallerLimits) {
  UseLargeSegments();
  options_.write_buffer_size = 128 << 10;
  Write(1000);
  Edit(SegmentPath(0), [](std::string& d) {
    std::fill(d.begin() + OffsetOf(500), d.begin() + OffsetOf(502), '\0');
  });
  options_.write_buffer_size = 256;  // a window of ~10 KiB
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(CountPresent(**p, 1000), 500);
  // This process appends to a segment of its own, whose header records
  // its window: its first write seals segment 0.
  EXPECT_EQ((*p)->Stats().recovery.window_changed, 1u);
  ASSERT_EQ((*p)->Segments().size(), 1u);
  ASSERT_THAT((*p)->Put("after", "x"), IsOk());
  ASSERT_EQ((*p)->Segments().size(), 2u);
  EXPECT_TRUE((*p)->Segments()[0].sealed);
  p->reset();
  auto q = Reopen();
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ((*q)->Stats().recovery.window_changed, 0u);
  EXPECT_EQ((*q)->Segments().size(), 2u);
  EXPECT_EQ(CountPresent(**q, 1000), 500);
  ReadResult r;
  ASSERT_THAT((*q)->Get("after", &r), IsOk());
  EXPECT_TRUE(r.found);
}

// A segment can be sealed empty: the first write after a start with a new
// torn window seals the active segment, which may hold no record (here:
// the write that followed the seal that made it failed). Scans pass over it.
TEST_F(LogCorruptionTest, AScanCrossesASegmentSealedEmpty) {
  UseLargeSegments();
  Write(10);
  {
    options_.write_buffer_size = 512;  // a new window: the first write seals
    auto p = Reopen();
    ASSERT_THAT(p, IsOk());
    fs_.FailAppendsAfter(2, ENOSPC);  // the new segment's header and MANIFEST, not the record
    EXPECT_THAT((*p)->Put("lost", "x"), StatusIs(absl::StatusCode::kResourceExhausted));
    fs_.FailAppendsAfter(-1, 0);
    ASSERT_EQ((*p)->Segments().size(), 2u);
  }
  options_.write_buffer_size = 2048;  // another: its first write seals the empty one
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  ASSERT_THAT((*p)->Put("last", "x"), IsOk());
  const std::vector<SegmentInfo> segments = (*p)->Segments();
  ASSERT_EQ(segments.size(), 3u);
  EXPECT_TRUE(segments[1].sealed);
  EXPECT_EQ(segments[1].end_offset, format::kSegmentHeaderSize);
  std::vector<ScanItem> items;
  uint64_t cursor = 0;
  size_t pages = 0;
  do {
    auto next = (*p)->Scan(cursor, "", 1, false, 1 << 20, &items);
    ASSERT_THAT(next, IsOk());
    cursor = *next;
    ASSERT_LT(++pages, 100u);
  } while (cursor != 0);
  EXPECT_EQ(items.size(), 11u);  // k00..k09 and last
}

TEST_F(LogCorruptionTest, DamageFoundByScanIsDataLoss) {
  UseLargeSegments();
  Write(100);
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  Edit(SegmentPath(0), [](std::string& d) { d[OffsetOf(50) + 40] ^= 1; });
  std::vector<ScanItem> items;
  EXPECT_THAT((*p)->Scan(0, "", 1000, false, 1 << 20, &items),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(LogCorruptionTest, DamageRightAfterAScanPageIsDataLoss) {
  // The page ends just before the damaged record: its cursor would come
  // back as a client's, where no record means a bad cursor
  // (INVALID_ARGUMENT). The damage is reported with the page instead.
  UseLargeSegments();
  Write(100);
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  std::vector<ScanItem> items;
  auto cursor = (*p)->Scan(0, "", 50, false, 1 << 20, &items);
  ASSERT_THAT(cursor, IsOk());
  ASSERT_EQ(*cursor, OffsetOf(50));
  Edit(SegmentPath(0), [](std::string& d) { d[OffsetOf(50) + 40] ^= 1; });
  items.clear();
  EXPECT_THAT((*p)->Scan(0, "", 50, false, 1 << 20, &items),
              StatusIs(absl::StatusCode::kDataLoss));
  // The page before it is unaffected.
  items.clear();
  EXPECT_THAT((*p)->Scan(0, "", 49, false, 1 << 20, &items), IsOk());
  EXPECT_EQ(items.size(), 49u);
}

TEST_F(LogCorruptionTest, BadCrcInSealedSegmentIsDataLoss) {
  Write(400);
  ASSERT_GE(segments_, 3u);
  // The damaged record is the last one of a sealed segment: its "tail" is
  // still not torn, because a sealed segment was synced whole.
  Edit(SegmentPath(0), [](std::string& d) { d[d.size() - 5] ^= 0x40; });
  auto p = Reopen();
  EXPECT_THAT(p, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(p.status().message(), HasSubstr("segment 0"));
}

TEST_F(LogCorruptionTest, TruncatedSealedSegmentIsDataLoss) {
  Write(400);
  Edit(SegmentPath(1), [](std::string& d) { d.resize(d.size() - kRecord); });
  auto p = Reopen();
  EXPECT_THAT(p, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(p.status().message(), HasSubstr("segment 1"));
}

TEST_F(LogCorruptionTest, MissingSegmentIsDataLoss) {
  Write(400);
  ASSERT_THAT(fs_.Remove(SegmentPath(1)), IsOk());
  auto p = Reopen();
  EXPECT_THAT(p, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(p.status().message(), HasSubstr("segment 1"));
}

TEST_F(LogCorruptionTest, DamagedSegmentHeaderIsDataLoss) {
  Write(10);
  Edit(SegmentPath(0), [](std::string& d) { d[20] ^= 1; });
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(LogCorruptionTest, CorruptManifestIsDataLoss) {
  Write(10);
  Edit(std::string(kDir) + "/MANIFEST", [](std::string& d) { d[30] ^= 1; });
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(LogCorruptionTest, OrphanSegmentWithRecordsIsDataLoss) {
  Write(10);
  auto f = fs_.OpenWritable(SegmentPath(1), true);
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Append(fs_.Contents(SegmentPath(0))), IsOk());
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(LogCorruptionTest, OrphanSegmentWithoutRecordsIsRemoved) {
  Write(10);
  auto f = fs_.OpenWritable(SegmentPath(1), true);
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Append(EncodeSegmentHeader(0, 1, 8 << 10, 0, 0)), IsOk());
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  EXPECT_FALSE(fs_.Exists(SegmentPath(1)));
  EXPECT_EQ((*p)->Stats().recovery.removed_files, 1u);
  EXPECT_EQ(CountPresent(**p, 10), 10);
}

TEST_F(LogCorruptionTest, StaleManifestTmpIsIgnoredAndRemoved) {
  Write(10);
  auto f = fs_.OpenWritable(std::string(kDir) + "/MANIFEST.tmp", true);
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Append("garbage"), IsOk());
  auto p = Reopen();
  ASSERT_THAT(p, IsOk());
  EXPECT_FALSE(fs_.Exists(std::string(kDir) + "/MANIFEST.tmp"));
  EXPECT_EQ(CountPresent(**p, 10), 10);
}

TEST_F(LogCorruptionTest, SegmentsWithoutManifestAreDataLoss) {
  Write(10);
  ASSERT_THAT(fs_.Remove(std::string(kDir) + "/MANIFEST"), IsOk());
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace segkv::worker
