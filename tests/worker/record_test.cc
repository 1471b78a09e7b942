#include "worker/record.h"

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/crc32c.h"
#include "worker/format.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::StatusIs;
using ::testing::HasSubstr;
using format::RecordType;

constexpr uint64_t kMaxValue = 1024;

uint64_t LoadLE(const std::string& s, size_t off, int width) {
  uint64_t v = 0;
  for (int i = width - 1; i >= 0; --i) {
    v = (v << 8) | static_cast<unsigned char>(s[off + i]);
  }
  return v;
}

void StoreLE(std::string* s, size_t off, int width, uint64_t v) {
  for (int i = 0; i < width; ++i) (*s)[off + i] = static_cast<char>(v >> (8 * i));
}

std::string Encode(RecordType type, uint64_t seq, uint64_t prev,
                   const std::string& key, const std::string& value) {
  std::string buf(RecordSize(key.size(), value.size()), '\x5A');
  EncodeRecord(type, seq, prev, key, value, buf.data());
  return buf;
}

std::string PutRecord() {
  return Encode(RecordType::kPut, 42, 0x123456789A, "some-key", "some-value");
}

bool Decodes(const std::string& rec, uint64_t max_value = kMaxValue) {
  RecordHeader h;
  return DecodeRecordHeader(rec.data(), max_value, &h);
}

TEST(RecordTest, PutRoundTrip) {
  const std::string rec = PutRecord();
  RecordHeader h;
  ASSERT_TRUE(DecodeRecordHeader(rec.data(), kMaxValue, &h));
  EXPECT_EQ(h.type, RecordType::kPut);
  EXPECT_EQ(h.key_len, 8);
  EXPECT_EQ(h.value_len, 10u);
  EXPECT_EQ(h.seq, 42u);
  EXPECT_EQ(h.prev_address, 0x123456789Au);
  EXPECT_EQ(h.size(), rec.size());
  EXPECT_TRUE(RecordCrcMatches(rec.data(), h));
  EXPECT_EQ(rec.substr(format::kRecordHeaderSize, h.key_len), "some-key");
  EXPECT_EQ(rec.substr(format::kRecordHeaderSize + h.key_len), "some-value");
}

TEST(RecordTest, DeleteRoundTrip) {
  const std::string rec = Encode(RecordType::kDelete, 9, 4096, "gone", "");
  ASSERT_EQ(rec.size(), format::kRecordHeaderSize + 4);
  RecordHeader h;
  ASSERT_TRUE(DecodeRecordHeader(rec.data(), kMaxValue, &h));
  EXPECT_EQ(h.type, RecordType::kDelete);
  EXPECT_EQ(h.key_len, 4);
  EXPECT_EQ(h.value_len, 0u);
  EXPECT_EQ(h.seq, 9u);
  EXPECT_EQ(h.prev_address, 4096u);
  EXPECT_TRUE(RecordCrcMatches(rec.data(), h));
}

TEST(RecordTest, AcceptsLimitSizes) {
  const std::string key(format::kMaxKeySize, 'k');
  const std::string value(kMaxValue, 'v');
  const std::string rec = Encode(RecordType::kPut, 1, 0, key, value);
  RecordHeader h;
  ASSERT_TRUE(DecodeRecordHeader(rec.data(), kMaxValue, &h));
  EXPECT_EQ(h.key_len, format::kMaxKeySize);
  EXPECT_EQ(h.value_len, kMaxValue);
  EXPECT_TRUE(RecordCrcMatches(rec.data(), h));
}

TEST(RecordTest, WorkedExampleFromFormatDoc) {
  char buf[35];
  EncodeRecord(RecordType::kPut, 7, 0, "k1", "v", buf);
  const std::string rec(buf, sizeof(buf));

  std::string expected(35, '\0');
  expected[4] = 0x01;                      // type PUT
  expected[6] = 0x02;                      // key_len 2
  expected[8] = 0x01;                      // value_len 1
  expected[16] = 0x07;                     // seq 7
  expected.replace(32, 3, "k1v");
  const uint32_t crc = crc32c::Value(expected.data() + 4, 31);
  StoreLE(&expected, 0, 4, crc);
  EXPECT_EQ(crc, 0x030EAF11u);
  EXPECT_EQ(rec, expected);

  EXPECT_EQ(LoadLE(rec, format::kRecCrc, 4), crc);
  EXPECT_EQ(LoadLE(rec, format::kRecType, 1), 1u);
  EXPECT_EQ(LoadLE(rec, format::kRecFlags, 1), 0u);
  EXPECT_EQ(LoadLE(rec, format::kRecKeyLen, 2), 2u);
  EXPECT_EQ(LoadLE(rec, format::kRecValueLen, 4), 1u);
  EXPECT_EQ(LoadLE(rec, format::kRecReserved, 4), 0u);
  EXPECT_EQ(LoadLE(rec, format::kRecSeq, 8), 7u);
  EXPECT_EQ(LoadLE(rec, format::kRecPrevAddress, 8), 0u);
  EXPECT_EQ(rec.substr(32), "k1v");
}

TEST(RecordTest, BodyThenFinishEqualsEncodeRecord) {
  for (RecordType type : {RecordType::kPut, RecordType::kDelete}) {
    const std::string key = "key-of-some-length";
    const std::string value = type == RecordType::kPut ? "value-bytes" : "";
    const std::string whole = Encode(type, 77, 123456, key, value);
    std::string two_step(whole.size(), '\x5A');
    EncodeRecordBody(type, key, value, two_step.data());
    FinishRecord(77, 123456, two_step.size(), two_step.data());
    EXPECT_EQ(two_step, whole);
  }
}

TEST(RecordTest, RejectsUnknownType) {
  std::string rec = PutRecord();
  for (int t : {3, 0x7F, 0xFF}) {
    rec[format::kRecType] = static_cast<char>(t);
    EXPECT_FALSE(Decodes(rec)) << "type " << t;
  }
}

TEST(RecordTest, RejectsZeroFilledHeader) {
  const std::string zeros(format::kRecordHeaderSize, '\0');
  EXPECT_TRUE(AllZero(zeros.data(), zeros.size()));
  EXPECT_FALSE(Decodes(zeros));
}

TEST(RecordTest, RejectsZeroTypeInOtherwiseValidHeader) {
  std::string rec = PutRecord();
  rec[format::kRecType] = 0;
  EXPECT_FALSE(Decodes(rec));
}

TEST(RecordTest, RejectsNonzeroFlags) {
  std::string rec = PutRecord();
  for (int f : {0x01, 0x80}) {
    rec[format::kRecFlags] = static_cast<char>(f);
    EXPECT_FALSE(Decodes(rec)) << "flags " << f;
  }
}

TEST(RecordTest, RejectsNonzeroReserved) {
  for (size_t i = 0; i < 4; ++i) {
    std::string rec = PutRecord();
    rec[format::kRecReserved + i] = 1;
    EXPECT_FALSE(Decodes(rec)) << "reserved byte " << i;
  }
}

TEST(RecordTest, RejectsZeroKeyLength) {
  std::string rec = PutRecord();
  StoreLE(&rec, format::kRecKeyLen, 2, 0);
  EXPECT_FALSE(Decodes(rec));
}

TEST(RecordTest, RejectsKeyLongerThanMaxKeySize) {
  std::string rec = PutRecord();
  StoreLE(&rec, format::kRecKeyLen, 2, format::kMaxKeySize + 1);
  EXPECT_FALSE(Decodes(rec));
  StoreLE(&rec, format::kRecKeyLen, 2, 0xFFFF);
  EXPECT_FALSE(Decodes(rec));
}

TEST(RecordTest, RejectsValueLongerThanMaxValueSize) {
  const std::string rec =
      Encode(RecordType::kPut, 1, 0, "k", std::string(kMaxValue + 1, 'v'));
  EXPECT_FALSE(Decodes(rec, kMaxValue));
  EXPECT_TRUE(Decodes(rec, kMaxValue + 1));
  std::string huge = PutRecord();
  StoreLE(&huge, format::kRecValueLen, 4, 0xFFFFFFFFu);
  EXPECT_FALSE(Decodes(huge, format::kMaxValueSizeLimit));
}

TEST(RecordTest, RejectsDeleteWithValue) {
  std::string rec = Encode(RecordType::kDelete, 5, 0, "k", "");
  StoreLE(&rec, format::kRecValueLen, 4, 1);
  EXPECT_FALSE(Decodes(rec));
}

TEST(RecordTest, RejectsZeroSeq) {
  const std::string rec = Encode(RecordType::kPut, 0, 0, "k", "v");
  EXPECT_FALSE(Decodes(rec));
}

class RecordCrcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rec_ = PutRecord();
    ASSERT_TRUE(DecodeRecordHeader(rec_.data(), kMaxValue, &h_));
    ASSERT_TRUE(RecordCrcMatches(rec_.data(), h_));
  }
  // Flips every byte in [begin, end) in turn; each must break the CRC.
  void ExpectEveryFlipDetected(size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      for (unsigned char mask : {0x01, 0x80, 0xFF}) {
        std::string bad = rec_;
        bad[i] = static_cast<char>(bad[i] ^ mask);
        EXPECT_FALSE(RecordCrcMatches(bad.data(), h_))
            << "byte " << i << " mask " << int{mask};
      }
    }
  }
  std::string rec_;
  RecordHeader h_;
};

TEST_F(RecordCrcTest, DetectsFlippedKeyByte) {
  ExpectEveryFlipDetected(format::kRecordHeaderSize,
                          format::kRecordHeaderSize + h_.key_len);
}

TEST_F(RecordCrcTest, DetectsFlippedValueByte) {
  ExpectEveryFlipDetected(format::kRecordHeaderSize + h_.key_len, rec_.size());
}

TEST_F(RecordCrcTest, DetectsFlippedHeaderByte) {
  ExpectEveryFlipDetected(format::kRecType, format::kRecordHeaderSize);
}

TEST_F(RecordCrcTest, DetectsFlippedStoredCrc) {
  for (size_t i = 0; i < 4; ++i) {
    std::string bad = rec_;
    bad[i] ^= 0x10;
    RecordHeader h;
    ASSERT_TRUE(DecodeRecordHeader(bad.data(), kMaxValue, &h));
    EXPECT_FALSE(RecordCrcMatches(bad.data(), h)) << "byte " << i;
  }
}

TEST(AllZeroTest, FindsAnyNonzeroByte) {
  EXPECT_TRUE(AllZero(nullptr, 0));
  std::string s(100, '\0');
  EXPECT_TRUE(AllZero(s.data(), s.size()));
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = 1;
    EXPECT_FALSE(AllZero(s.data(), s.size())) << i;
    s[i] = 0;
  }
}

constexpr uint32_t kPartition = 3;
constexpr uint64_t kSegmentId = 17;
constexpr uint64_t kSegmentSize = 64 << 10;
constexpr char kPath[] = "/data/p3/seg-17.log";

std::string GoodSegmentHeader() {
  return EncodeSegmentHeader(kPartition, kSegmentId, kSegmentSize,
                             1700000000123, 0x0123456789abcdefull);
}

absl::Status Check(const std::string& h) {
  return CheckSegmentHeader(h, kPath, kPartition, kSegmentId, kSegmentSize);
}

void RecomputeSegmentCrc(std::string* h) {
  StoreLE(h, format::kSegHdrCrc, 4,
          crc32c::Value(h->data(), format::kSegHdrCrc));
}

TEST(SegmentHeaderTest, RoundTrip) {
  const std::string h = GoodSegmentHeader();
  ASSERT_EQ(h.size(), format::kSegmentHeaderSize);
  EXPECT_THAT(Check(h), IsOk());
  EXPECT_EQ(h.substr(0, 8), "SEGKVLOG");
  EXPECT_EQ(LoadLE(h, format::kSegHdrVersion, 4), format::kLogFormatVersion);
  EXPECT_EQ(LoadLE(h, format::kSegHdrPartition, 4), kPartition);
  EXPECT_EQ(LoadLE(h, format::kSegHdrSegmentId, 8), kSegmentId);
  EXPECT_EQ(LoadLE(h, format::kSegHdrSegmentSize, 8), kSegmentSize);
  EXPECT_EQ(LoadLE(h, format::kSegHdrCreatedMs, 8), 1700000000123u);
  EXPECT_EQ(LoadLE(h, format::kSegHdrTornWindow, 8), 0x0123456789abcdefull);
  EXPECT_EQ(SegmentHeaderTornWindow(h), 0x0123456789abcdefull);
  EXPECT_TRUE(AllZero(h.data() + 48, 12));
  EXPECT_EQ(LoadLE(h, format::kSegHdrCrc, 4), crc32c::Value(h.data(), 60));
}

TEST(SegmentHeaderTest, AcceptsLongerBufferWithValidPrefix) {
  EXPECT_THAT(Check(GoodSegmentHeader() + "trailing record bytes"), IsOk());
}

TEST(SegmentHeaderTest, BadMagicIsDataLoss) {
  std::string h = GoodSegmentHeader();
  h[0] = 'X';
  RecomputeSegmentCrc(&h);
  const absl::Status s = Check(h);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(std::string(s.message()), HasSubstr(kPath));
}

TEST(SegmentHeaderTest, BadCrcIsDataLoss) {
  for (size_t i : {size_t{8}, size_t{20}, size_t{40}, size_t{60}}) {
    std::string h = GoodSegmentHeader();
    h[i] ^= 0x01;
    EXPECT_THAT(Check(h), StatusIs(absl::StatusCode::kDataLoss)) << "byte " << i;
  }
}

TEST(SegmentHeaderTest, WrongPartitionIsDataLoss) {
  const std::string h = EncodeSegmentHeader(kPartition + 1, kSegmentId,
                                            kSegmentSize, 1, 1);
  EXPECT_THAT(Check(h), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(SegmentHeaderTest, WrongSegmentIdIsDataLoss) {
  const std::string h = EncodeSegmentHeader(kPartition, kSegmentId + 1,
                                            kSegmentSize, 1, 1);
  EXPECT_THAT(Check(h), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(SegmentHeaderTest, WrongSegmentSizeIsDataLoss) {
  const std::string h = EncodeSegmentHeader(kPartition, kSegmentId,
                                            kSegmentSize * 2, 1, 1);
  EXPECT_THAT(Check(h), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(SegmentHeaderTest, TruncatedIsDataLoss) {
  const std::string h = GoodSegmentHeader();
  for (size_t n : {size_t{0}, size_t{8}, format::kSegmentHeaderSize - 1}) {
    EXPECT_THAT(Check(h.substr(0, n)), StatusIs(absl::StatusCode::kDataLoss))
        << "length " << n;
  }
}

TEST(SegmentHeaderTest, UnknownVersionWithValidCrcIsFailedPrecondition) {
  std::string h = GoodSegmentHeader();
  StoreLE(&h, format::kSegHdrVersion, 4, format::kLogFormatVersion + 1);
  RecomputeSegmentCrc(&h);
  const absl::Status s = Check(h);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(s.message()), HasSubstr(kPath));
}

}  // namespace
}  // namespace segkv::worker
