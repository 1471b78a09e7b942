// Encoding and validation of the log's records and segment headers
// (docs/format/log.md; constants in worker/format.h).
#ifndef SEGKV_WORKER_RECORD_H_
#define SEGKV_WORKER_RECORD_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "worker/format.h"

namespace segkv::worker {

// The fixed part of a record, decoded.
struct RecordHeader {
  uint32_t crc = 0;
  format::RecordType type = format::RecordType::kInvalid;
  uint16_t key_len = 0;
  uint32_t value_len = 0;
  uint64_t seq = 0;
  uint64_t prev_address = 0;

  uint64_t size() const {
    return format::kRecordHeaderSize + key_len + uint64_t{value_len};
  }
};

inline uint64_t RecordSize(size_t key_len, size_t value_len) {
  return format::kRecordHeaderSize + key_len + value_len;
}

// Writes the record into `dst`, which has RecordSize(key, value) bytes.
void EncodeRecord(format::RecordType type, uint64_t seq, uint64_t prev_address,
                  absl::string_view key, absl::string_view value, char* dst);

// The same in two steps, so the bytes can be copied before seq and
// prev_address are known: EncodeRecordBody writes everything but those and
// the CRC; FinishRecord writes them and computes the CRC.
void EncodeRecordBody(format::RecordType type, absl::string_view key,
                      absl::string_view value, char* dst);
void FinishRecord(uint64_t seq, uint64_t prev_address, uint64_t record_size,
                  char* dst);

// Decodes the header at `p` (kRecordHeaderSize readable bytes) and checks
// every field the CRC cannot vouch for yet: known type, zero flags and
// reserved bytes, key_len in 1..kMaxKeySize, value_len <= max_value_size and
// 0 for deletes. Returns false if any fails.
bool DecodeRecordHeader(const char* p, uint64_t max_value_size,
                        RecordHeader* out);

// True iff the CRC of the whole record at `p` (h.size() readable bytes)
// matches h.crc.
bool RecordCrcMatches(const char* p, const RecordHeader& h);

// True iff all `n` bytes at `p` are zero.
bool AllZero(const char* p, size_t n);

// Segment header (format::kSegmentHeaderSize bytes). `torn_window`: the
// most bytes its writer may leave unsynced at its end (Log::TornWindow()),
// which recovery uses to tell a torn write from damage; 0 = not recorded.
std::string EncodeSegmentHeader(uint32_t partition, uint64_t segment_id,
                                uint64_t segment_size, int64_t created_ms,
                                uint64_t torn_window);
// The torn window a checked header records (0: none recorded).
uint64_t SegmentHeaderTornWindow(absl::string_view header);
// Checks magic, version, CRC and that the header belongs where it was found.
// Errors are DATA_LOSS naming `path`.
absl::Status CheckSegmentHeader(absl::string_view header, absl::string_view path,
                                uint32_t partition, uint64_t segment_id,
                                uint64_t segment_size);

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_RECORD_H_
