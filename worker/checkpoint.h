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

// Record bytes of one segment.
struct SegmentUsage {
  uint64_t total_bytes = 0;      // record bytes in the segment
  uint64_t live_bytes = 0;       // bytes of records the index points at
  uint64_t tombstone_bytes = 0;  // delete records (never live)
  bool empty() const { return total_bytes == 0 && live_bytes == 0 && tombstone_bytes == 0; }
};

// SegmentUsage by segment id. Holds the ids from the lowest with an entry
// to the highest, so its memory follows the span of segments that exist,
// not every id the partition ever used (ids only grow).
class SegmentUsageTable {
 public:
  SegmentUsageTable() = default;
  // From a table indexed by id (tests).
  explicit SegmentUsageTable(const std::vector<SegmentUsage>& by_id) {
    for (uint64_t id = 0; id < by_id.size(); ++id) {
      if (!by_id[id].empty()) At(id) = by_id[id];
    }
  }
  // Segment `id`'s entry, created (zero) if missing.
  SegmentUsage& At(uint64_t id) {
    if (entries_.empty()) {
      base_ = id;
    } else if (id < base_) {
      entries_.insert(entries_.begin(), base_ - id, SegmentUsage{});
      base_ = id;
    }
    if (id - base_ >= entries_.size()) entries_.resize(id - base_ + 1);
    return entries_[id - base_];
  }
  // Segment `id`'s entry; zero if it has none.
  SegmentUsage Get(uint64_t id) const {
    return id >= base_ && id - base_ < entries_.size() ? entries_[id - base_] : SegmentUsage{};
  }
  // Drops segment `id`'s entry (and any empty ones before the first left).
  void Remove(uint64_t id) {
    if (id < base_ || id - base_ >= entries_.size()) return;
    entries_[id - base_] = SegmentUsage{};
    size_t lead = 0;
    while (lead < entries_.size() && entries_[lead].empty()) ++lead;
    entries_.erase(entries_.begin(), entries_.begin() + lead);
    base_ = entries_.empty() ? 0 : base_ + lead;
  }
  void clear() {
    entries_.clear();
    base_ = 0;
  }
  bool empty() const { return entries_.empty(); }
  // Ids with an entry lie in [begin_id(), end_id()).
  uint64_t begin_id() const { return base_; }
  uint64_t end_id() const { return base_ + entries_.size(); }
  uint64_t span() const { return entries_.size(); }
  // f(id, usage) for every id in [begin_id(), end_id()), in order.
  template <typename F>
  void ForEach(F&& f) const {
    for (uint64_t i = 0; i < entries_.size(); ++i) f(base_ + i, entries_[i]);
  }

 private:
  uint64_t base_ = 0;
  std::vector<SegmentUsage> entries_;
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
uint64_t CountUsageEntries(const SegmentUsageTable& usage);

// Size of the whole file for this header.
uint64_t CheckpointFileSize(const CheckpointHeader& h);

// Fills out[0, CheckpointFileSize(h)) with the header, the index image and
// the usage table (`usage` by segment id); the trailing CRC is left for
// SealCheckpoint(). `h.geometry` and `h.usage_count` are taken from `index`
// and `usage`, and the file is written in format `h.version` (2; 1 only for
// tests of reading old files).
void BuildCheckpoint(CheckpointHeader* h, const HashIndex& index,
                     const SegmentUsageTable& usage, char* out);
// Computes and stores the body CRC of a built file; returns it.
uint32_t SealCheckpoint(char* file, uint64_t size);

// A checkpoint read back and checked (header CRC, body CRC, sizes).
struct LoadedCheckpoint {
  CheckpointHeader header;
  absl::string_view image;           // into the caller's data
  absl::string_view usage_bytes;     // the encoded usage table, after image
  SegmentUsageTable usage;
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
