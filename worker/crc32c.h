// CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), the
// checksum of every segkv on-disk structure (docs/format/log.md).
//
// Uses the SSE4.2 crc32 instruction when the build targets it and a
// byte-wise table otherwise; both give identical results.
#ifndef SEGKV_WORKER_CRC32C_H_
#define SEGKV_WORKER_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

namespace segkv::worker::crc32c {

// Returns the CRC32C of `data` continuing from `crc` (the CRC of the bytes
// before it; 0 to start). Extend(Extend(0, a), b) == Value(a + b).
uint32_t Extend(uint32_t crc, const char* data, size_t n);

inline uint32_t Value(const char* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(absl::string_view s) { return Extend(0, s.data(), s.size()); }

}  // namespace segkv::worker::crc32c

#endif  // SEGKV_WORKER_CRC32C_H_
