#include "worker/manifest.h"

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/coding.h"
#include "worker/crc32c.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kPath[] = "/data/p7/MANIFEST";
constexpr size_t kHeaderSize = 40;  // docs/format/manifest.md, version 3
constexpr size_t kEntrySize = 40;
constexpr size_t kCountOffset = 24;

void StoreLE(std::string* s, size_t off, int width, uint64_t v) {
  for (int i = 0; i < width; ++i) (*s)[off + i] = static_cast<char>(v >> (8 * i));
}

void RecomputeCrc(std::string* m) {
  StoreLE(m, m->size() - 4, 4, crc32c::Value(m->data(), m->size() - 4));
}

SegmentInfo Sealed(uint64_t id, uint64_t end) {
  return SegmentInfo{.id = id, .sealed = true, .end_offset = end,
                     .created_ms = static_cast<int64_t>(1000 * id),
                     .sealed_ms = static_cast<int64_t>(1000 * id + 500)};
}

SegmentInfo Active(uint64_t id) {
  return SegmentInfo{.id = id, .created_ms = static_cast<int64_t>(1000 * id)};
}

Manifest Example() {
  Manifest m;
  m.partition = 7;
  m.segment_size = 64 << 10;
  m.segments = {Sealed(2, 65000), Sealed(3, 64 << 10), Sealed(9, 64),
                Active(12)};
  m.version_floor = 0x0102030405060708ull;
  return m;
}

absl::StatusOr<Manifest> Decode(const std::string& data) {
  return DecodeManifest(data, kPath);
}

TEST(ManifestTest, RoundTripSeveralSegments) {
  const Manifest m = Example();
  const std::string data = EncodeManifest(m);
  EXPECT_EQ(data.size(), kHeaderSize + 4 * kEntrySize + 4);
  absl::StatusOr<Manifest> decoded = Decode(data);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, m);
}

// docs/format/manifest.md: the active segment's end offset is written as 0
// (Log::Segments() fills in its length so far; the file is what counts).
TEST(ManifestTest, TheActiveSegmentsEndOffsetIsWrittenAsZero) {
  Manifest m = Example();
  m.segments.back().end_offset = 4242;
  const std::string data = EncodeManifest(m);
  EXPECT_EQ(DecodeFixed64(data.data() + kHeaderSize + 3 * kEntrySize + 16), 0u);
  absl::StatusOr<Manifest> decoded = Decode(data);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(decoded->segments.back().end_offset, 0u);
  EXPECT_EQ(decoded->segments[0].end_offset, 65000u);
}

TEST(ManifestTest, RoundTripSingleActiveSegment) {
  Manifest m;
  m.partition = 0xFFFFFFFFu;
  m.segment_size = 128ull << 20;
  m.segments = {Active(0)};
  absl::StatusOr<Manifest> decoded = Decode(EncodeManifest(m));
  ASSERT_THAT(decoded, IsOk());
  EXPECT_EQ(*decoded, m);
}

TEST(ManifestTest, TruncatedIsDataLoss) {
  const std::string data = EncodeManifest(Example());
  for (size_t n : {size_t{0}, size_t{8}, kHeaderSize, kHeaderSize + 3,
                   kHeaderSize + kEntrySize, data.size() - 1}) {
    const absl::StatusOr<Manifest> m = Decode(data.substr(0, n));
    EXPECT_THAT(m, StatusIs(absl::StatusCode::kDataLoss)) << "length " << n;
  }
}

TEST(ManifestTest, BadMagicIsDataLoss) {
  std::string data = EncodeManifest(Example());
  data[3] = 'x';
  RecomputeCrc(&data);
  const absl::StatusOr<Manifest> m = Decode(data);
  EXPECT_THAT(m, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(kPath));
}

TEST(ManifestTest, FlippedByteIsDataLoss) {
  const std::string data = EncodeManifest(Example());
  for (size_t i = 0; i < data.size(); ++i) {
    std::string bad = data;
    bad[i] ^= 0x04;
    EXPECT_THAT(Decode(bad), StatusIs(absl::StatusCode::kDataLoss))
        << "byte " << i;
  }
}

TEST(ManifestTest, LengthNotMatchingCountIsDataLoss) {
  for (uint32_t count : {3u, 5u, 0xFFFFFFFFu}) {
    std::string data = EncodeManifest(Example());
    StoreLE(&data, kCountOffset, 4, count);
    RecomputeCrc(&data);
    EXPECT_THAT(Decode(data), StatusIs(absl::StatusCode::kDataLoss))
        << "count " << count;
  }
}

TEST(ManifestTest, ExtraBytesAfterEntriesAreDataLoss) {
  std::string data = EncodeManifest(Example());
  data.insert(data.size() - 4, std::string(kEntrySize, '\0'));
  RecomputeCrc(&data);
  EXPECT_THAT(Decode(data), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ManifestTest, ZeroSegmentsIsDataLoss) {
  Manifest m = Example();
  m.segments.clear();
  const std::string data = EncodeManifest(m);
  EXPECT_EQ(data.size(), kHeaderSize + 4);
  EXPECT_THAT(Decode(data), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ManifestTest, DescendingIdsAreDataLoss) {
  Manifest m = Example();
  m.segments = {Sealed(5, 100), Active(3)};
  EXPECT_THAT(Decode(EncodeManifest(m)), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ManifestTest, DuplicateIdsAreDataLoss) {
  Manifest m = Example();
  m.segments = {Sealed(1, 100), Sealed(4, 100), Active(4)};
  EXPECT_THAT(Decode(EncodeManifest(m)), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ManifestTest, ActiveSegmentBeforeLastIsDataLoss) {
  Manifest m = Example();
  m.segments = {Sealed(1, 100), Active(2), Active(3)};
  EXPECT_THAT(Decode(EncodeManifest(m)), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ManifestTest, SealedLastSegmentIsDataLoss) {
  Manifest m = Example();
  m.segments = {Sealed(1, 100), Sealed(2, 200)};
  EXPECT_THAT(Decode(EncodeManifest(m)), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ManifestTest, SealedEndPastSegmentSizeIsDataLoss) {
  Manifest m = Example();
  m.segments = {Sealed(1, m.segment_size + 1), Active(2)};
  EXPECT_THAT(Decode(EncodeManifest(m)), StatusIs(absl::StatusCode::kDataLoss));
  m.segments = {Sealed(1, m.segment_size), Active(2)};
  EXPECT_THAT(Decode(EncodeManifest(m)), IsOk());
}

TEST(ManifestTest, UnknownSegmentFlagsAreDataLoss) {
  std::string data = EncodeManifest(Example());
  StoreLE(&data, kHeaderSize + kEntrySize + 8, 4, 0x3);
  RecomputeCrc(&data);
  EXPECT_THAT(Decode(data), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ManifestTest, UnknownVersionWithValidCrcIsFailedPrecondition) {
  std::string data = EncodeManifest(Example());
  StoreLE(&data, 8, 4, kManifestVersion + 1);
  RecomputeCrc(&data);
  const absl::StatusOr<Manifest> m = Decode(data);
  EXPECT_THAT(m, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(kPath));
}

// A version 2 MANIFEST (no version floor: 32-byte header) is still read,
// with a floor of 0; version 3 is what is written.
TEST(ManifestTest, Version2IsReadWithNoVersionFloor) {
  const std::string v3 = EncodeManifest(Example());
  EXPECT_EQ(v3[8], 3);
  std::string v2 = v3.substr(0, 32) + v3.substr(40);
  StoreLE(&v2, 8, 4, 2);
  RecomputeCrc(&v2);
  absl::StatusOr<Manifest> decoded = Decode(v2);
  ASSERT_THAT(decoded, IsOk());
  Manifest want = Example();
  want.version_floor = 0;
  EXPECT_EQ(*decoded, want);
  // The same bytes claiming version 3 are 8 bytes short.
  StoreLE(&v2, 8, 4, 3);
  RecomputeCrc(&v2);
  EXPECT_THAT(Decode(v2), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(SegmentFileNameTest, FormatIsTwentyDigits) {
  EXPECT_EQ(SegmentFileName(0), "seg-00000000000000000000.log");
  EXPECT_EQ(SegmentFileName(42), "seg-00000000000000000042.log");
  EXPECT_EQ(SegmentFileName(std::numeric_limits<uint64_t>::max()),
            "seg-18446744073709551615.log");
}

TEST(SegmentFileNameTest, RoundTrip) {
  for (uint64_t id : {uint64_t{0}, uint64_t{1}, uint64_t{999},
                      uint64_t{1} << 40, std::numeric_limits<uint64_t>::max()}) {
    uint64_t parsed = ~id;
    ASSERT_TRUE(ParseSegmentFileName(SegmentFileName(id), &parsed)) << id;
    EXPECT_EQ(parsed, id);
  }
}

TEST(SegmentFileNameTest, RejectsOtherNames) {
  for (const char* name : {
           "", "MANIFEST", "MANIFEST.tmp", "seg-5.log",
           "seg-00000000000000000005.log.tmp", "seg-0000000000000000005.log",
           "seg-000000000000000000005.log", "Seg-00000000000000000005.log",
           "seg-00000000000000000005.LOG", "seg_00000000000000000005.log",
           "seg-0000000000000000000a.log", "seg-99999999999999999999.log",
           "seg--0000000000000000005.log"}) {
    uint64_t id = 0;
    EXPECT_FALSE(ParseSegmentFileName(name, &id)) << "'" << name << "'";
  }
}

TEST(SegmentFileNameTest, RejectsSignAndWhitespaceAroundDigits) {
  for (const char* name : {"seg-+0000000000000000005.log",
                           "seg- 0000000000000000005.log",
                           "seg-0000000000000000005 .log",
                           "seg-\t0000000000000000005.log"}) {
    uint64_t id = 0;
    EXPECT_FALSE(ParseSegmentFileName(name, &id)) << "'" << name << "'";
  }
}

}  // namespace
}  // namespace segkv::worker
