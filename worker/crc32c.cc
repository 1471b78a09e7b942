#include "worker/crc32c.h"

#include <array>
#include <cstring>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

namespace segkv::worker::crc32c {
namespace {

#if !defined(__SSE4_2__)
constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();
#endif

}  // namespace

uint32_t Extend(uint32_t crc, const char* data, size_t n) {
  uint32_t c = ~crc;
#if defined(__SSE4_2__)
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    c64 = _mm_crc32_u64(c64, word);
    data += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n > 0) {
    c = _mm_crc32_u8(c, static_cast<uint8_t>(*data++));
    --n;
  }
#else
  while (n > 0) {
    c = kTable[(c ^ static_cast<uint8_t>(*data++)) & 0xff] ^ (c >> 8);
    --n;
  }
#endif
  return ~c;
}

}  // namespace segkv::worker::crc32c
