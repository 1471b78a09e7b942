#include "worker/crc32c.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace segkv::worker {
namespace {

// Bit-at-a-time CRC32C, the definition the fast paths must agree with.
uint32_t ReferenceCrc(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : s) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 16);
  }
  return s;
}

TEST(Crc32cTest, CheckValueOfDigits) {
  EXPECT_EQ(crc32c::Value("123456789"), 0xE3069283u);
}

TEST(Crc32cTest, ThirtyTwoZeroBytes) {
  EXPECT_EQ(crc32c::Value(std::string(32, '\0')), 0x8A9136AAu);
}

TEST(Crc32cTest, ThirtyTwoOnesBytes) {
  EXPECT_EQ(crc32c::Value(std::string(32, '\xFF')), 0x62A8AB43u);
}

TEST(Crc32cTest, AscendingAndDescendingBytes) {
  std::string up(32, '\0'), down(32, '\0');
  for (int i = 0; i < 32; ++i) {
    up[i] = static_cast<char>(i);
    down[i] = static_cast<char>(31 - i);
  }
  EXPECT_EQ(crc32c::Value(up), 0x46DD794Eu);
  EXPECT_EQ(crc32c::Value(down), 0x113FDB5Cu);
}

TEST(Crc32cTest, EmptyInputIsZero) {
  EXPECT_EQ(crc32c::Value(""), 0u);
  EXPECT_EQ(crc32c::Extend(0x12345678u, nullptr, 0), 0x12345678u);
}

TEST(Crc32cTest, MatchesBitwiseReferenceForLengthsZeroToHundred) {
  for (size_t n = 0; n <= 100; ++n) {
    const std::string s = Pattern(n, static_cast<uint32_t>(n));
    EXPECT_EQ(crc32c::Value(s), ReferenceCrc(s)) << "length " << n;
  }
}

TEST(Crc32cTest, DifferentLengthsGiveDifferentValues) {
  const std::string s = Pattern(101, 7);
  for (size_t n = 1; n <= 100; ++n) {
    EXPECT_NE(crc32c::Value(s.data(), n), crc32c::Value(s.data(), n - 1))
        << "length " << n;
  }
}

TEST(Crc32cTest, ExtendAtEverySplitPointEqualsWholeValue) {
  const std::string s = Pattern(100, 42);
  for (size_t len = 0; len <= s.size(); ++len) {
    const uint32_t whole = crc32c::Value(s.data(), len);
    for (size_t split = 0; split <= len; ++split) {
      const uint32_t a = crc32c::Value(s.data(), split);
      EXPECT_EQ(crc32c::Extend(a, s.data() + split, len - split), whole)
          << "len " << len << " split " << split;
    }
  }
}

TEST(Crc32cTest, UnalignedStartsMatchReference) {
  const std::string buf = Pattern(128, 3);
  for (size_t start = 0; start < 16; ++start) {
    for (size_t n = 0; start + n <= 100; n += 7) {
      const std::string copy = buf.substr(start, n);
      EXPECT_EQ(crc32c::Value(buf.data() + start, n), ReferenceCrc(copy))
          << "start " << start << " n " << n;
    }
  }
}

TEST(Crc32cTest, ExtendAcrossThreePiecesWithUnalignedStarts) {
  const std::string s = Pattern(100, 9);
  const uint32_t whole = crc32c::Value(s);
  for (size_t i = 1; i < s.size(); i += 3) {
    for (size_t j = i; j < s.size(); j += 5) {
      uint32_t c = crc32c::Value(s.data(), i);
      c = crc32c::Extend(c, s.data() + i, j - i);
      c = crc32c::Extend(c, s.data() + j, s.size() - j);
      EXPECT_EQ(c, whole) << "splits " << i << ", " << j;
    }
  }
}

TEST(Crc32cTest, SingleBitFlipChangesValue) {
  std::string s = Pattern(64, 11);
  const uint32_t base = crc32c::Value(s);
  for (size_t i = 0; i < s.size() * 8; ++i) {
    s[i / 8] ^= static_cast<char>(1 << (i % 8));
    EXPECT_NE(crc32c::Value(s), base) << "bit " << i;
    s[i / 8] ^= static_cast<char>(1 << (i % 8));
  }
}

}  // namespace
}  // namespace segkv::worker
