// On-disk layout constants of the segment log. The specification, with a
// worked example, is docs/format/log.md; this header must agree with it.
//
// Logical address of a byte = segment_id * segment_size + offset in segment.
// Offsets below kSegmentHeaderSize hold the segment header, so no record ever
// has address 0, and 0 means "no record" everywhere (index, prev_address).
#ifndef SEGKV_WORKER_FORMAT_H_
#define SEGKV_WORKER_FORMAT_H_

#include <cstddef>
#include <cstdint>

namespace segkv::worker::format {

// ---- Segment header (docs/format/log.md, "Segment header") ----
//   off size field
//     0    8 magic "SEGKVLOG"
//     8    4 format version (kLogFormatVersion)
//    12    4 partition id
//    16    8 segment id
//    24    8 segment size in bytes (the address-space stride)
//    32    8 creation time, Unix milliseconds
//    40    8 torn window of the segment's writer (0: not recorded)
//    48   12 reserved, zero
//    60    4 CRC32C of bytes [0, 60)
inline constexpr char kSegmentMagic[8] = {'S', 'E', 'G', 'K', 'V', 'L', 'O', 'G'};
inline constexpr uint32_t kLogFormatVersion = 1;
inline constexpr size_t kSegmentHeaderSize = 64;
inline constexpr size_t kSegHdrMagic = 0;
inline constexpr size_t kSegHdrVersion = 8;
inline constexpr size_t kSegHdrPartition = 12;
inline constexpr size_t kSegHdrSegmentId = 16;
inline constexpr size_t kSegHdrSegmentSize = 24;
inline constexpr size_t kSegHdrCreatedMs = 32;
inline constexpr size_t kSegHdrTornWindow = 40;
inline constexpr size_t kSegHdrCrc = 60;
static_assert(kSegHdrCrc + 4 == kSegmentHeaderSize);

// ---- Record (docs/format/log.md, "Record") ----
//   off size field
//     0    4 CRC32C of bytes [4, 32 + key_len + value_len)
//     4    1 type (RecordType)
//     5    1 flags, zero
//     6    2 key_len, 1..kMaxKeySize
//     8    4 value_len (0 for a delete)
//    12    4 reserved, zero
//    16    8 seq: the partition-wide sequence number, the key's version
//    24    8 prev_address: the key's previous record, 0 if none
//    32      key bytes, then value bytes
inline constexpr size_t kRecordHeaderSize = 32;
inline constexpr size_t kRecCrc = 0;
inline constexpr size_t kRecType = 4;
inline constexpr size_t kRecFlags = 5;
inline constexpr size_t kRecKeyLen = 6;
inline constexpr size_t kRecValueLen = 8;
inline constexpr size_t kRecReserved = 12;
inline constexpr size_t kRecSeq = 16;
inline constexpr size_t kRecPrevAddress = 24;
static_assert(kRecPrevAddress + 8 == kRecordHeaderSize);

enum class RecordType : uint8_t {
  kInvalid = 0,  // Never written: zero-filled space reads as this.
  kPut = 1,
  kDelete = 2,
};

// Hard limits of the format (options may lower the value limit).
inline constexpr size_t kMaxKeySize = 4096;
inline constexpr uint64_t kMaxValueSizeLimit = 1ull << 30;  // 1 GiB
// Addresses are stored in 48 bits by the index (worker/hash_index.h).
inline constexpr int kAddressBits = 48;
inline constexpr uint64_t kMaxAddress = (1ull << kAddressBits) - 1;

}  // namespace segkv::worker::format

#endif  // SEGKV_WORKER_FORMAT_H_
