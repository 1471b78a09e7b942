// Little-endian fixed-width encoding, the byte order of every segkv on-disk
// format. The host is little-endian (x86-64, aarch64); the static_assert
// keeps a big-endian build from silently writing incompatible files.
#ifndef SEGKV_WORKER_CODING_H_
#define SEGKV_WORKER_CODING_H_

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

namespace segkv::worker {

static_assert(std::endian::native == std::endian::little,
              "segkv's on-disk formats are little-endian; port the coders");

inline void EncodeFixed16(char* dst, uint16_t v) { std::memcpy(dst, &v, 2); }
inline void EncodeFixed32(char* dst, uint32_t v) { std::memcpy(dst, &v, 4); }
inline void EncodeFixed64(char* dst, uint64_t v) { std::memcpy(dst, &v, 8); }

inline uint16_t DecodeFixed16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t DecodeFixed32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t DecodeFixed64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline void PutFixed32(std::string* dst, uint32_t v) {
  char buf[4];
  EncodeFixed32(buf, v);
  dst->append(buf, 4);
}
inline void PutFixed64(std::string* dst, uint64_t v) {
  char buf[8];
  EncodeFixed64(buf, v);
  dst->append(buf, 8);
}

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_CODING_H_
