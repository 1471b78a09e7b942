// Index checkpoint files (docs/format/checkpoint.md): the hash index of one
// partition, its per-segment byte accounting and the log address up to
// which they reflect the log. Recovery loads the newest valid one and
// replays only the log after `covered_address`.
//
// A file is written by BuildCheckpoint() into a caller-provided buffer (the
// worker copies the index there: the only part that must stop writes) and
// then sealed and written by SealCheckpoint() + WriteFileAtomically() on
// another thread.
#ifndef SEGKV_WORKER_CHECKPOINT_H_
#define SEGKV_WORKER_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/hash_index.h"

namespace segkv::worker {

// Record bytes per segment (index = segment id).
struct SegmentUsage {
  uint64_t total_bytes = 0;      // record bytes in the segment
  uint64_t live_bytes = 0;       // bytes of records the index points at
  uint64_t tombstone_bytes = 0;  // delete records (never live)
};

struct CheckpointHeader {
  uint32_t partition = 0;
  uint64_t segment_size = 0;
  uint64_t id = 0;
  uint64_t covered_address = 0;
  uint64_t next_version = 0;
  int64_t created_ms = 0;
  HashIndex::Geometry geometry;
  // Entries in the usage table: version 2 has one per segment with records
  // (CountUsageEntries), each naming its segment; version 1 had one per
  // segment id from 0.
  uint64_t usage_count = 0;
  uint32_t version = 2;  // format version
};

inline constexpr size_t kCheckpointHeaderSize = 128;
// Written: 2. Read: 1 and 2.
inline constexpr uint32_t kCheckpointFormatVersion = 2;

// Version 2 usage entries for this table (by segment id): one per segment
// with record bytes. Removed segments and ids never used cost nothing, so
// the table in a checkpoint does not grow with the partition's age.
uint64_t CountUsageEntries(const std::vector<SegmentUsage>& usage);

// Size of the whole file for this header.
uint64_t CheckpointFileSize(const CheckpointHeader& h);

// Fills out[0, CheckpointFileSize(h)) with the header, the index image and
// the usage table (`usage` by segment id); the trailing CRC is left for
// SealCheckpoint(). `h.geometry` and `h.usage_count` are taken from `index`
// and `usage`, and the file is written in format `h.version` (2; 1 only for
// tests of reading old files).
void BuildCheckpoint(CheckpointHeader* h, const HashIndex& index,
                     const std::vector<SegmentUsage>& usage, char* out);
// Computes and stores the body CRC of a built file; returns it.
uint32_t SealCheckpoint(char* file, uint64_t size);

// A checkpoint read back and checked (header CRC, body CRC, sizes).
struct LoadedCheckpoint {
  CheckpointHeader header;
  absl::string_view image;           // into the caller's data
  absl::string_view usage_bytes;     // the encoded usage table, after image
  std::vector<SegmentUsage> usage;   // by segment id (zero where no entry)
  uint32_t body_crc = 0;    // computed (0 if the body was not checked)
  uint32_t stored_crc = 0;  // the trailer's
};
// Errors: DATA_LOSS naming `path` for any damage or size mismatch;
// FAILED_PRECONDITION for an unknown format version.
// Without `check_body`, the body CRC is left to the caller, who must
// compute crc32c(image + usage_bytes) and compare it with stored_crc
// before trusting anything but the header (Partition does it while
// HashIndex::LoadImage copies the image, to read it once).
absl::StatusOr<LoadedCheckpoint> ParseCheckpoint(absl::string_view data,
                                                 absl::string_view path,
                                                 bool check_body = true);

// Memory for a checkpoint that is mapped and touched up front, so the copy
// the worker makes into it does not pay page faults. Not copyable.
class CheckpointBuffer {
 public:
  // Maps and pre-faults `size` bytes; null data() if the mapping failed.
  explicit CheckpointBuffer(uint64_t size);
  ~CheckpointBuffer();
  CheckpointBuffer(const CheckpointBuffer&) = delete;
  CheckpointBuffer& operator=(const CheckpointBuffer&) = delete;
  char* data() { return data_; }
  uint64_t capacity() const { return capacity_; }

 private:
  char* data_ = nullptr;
  uint64_t capacity_ = 0;
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_CHECKPOINT_H_
