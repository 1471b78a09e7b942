// The per-partition segment manifest: which segments exist, which is active,
// where each sealed one ends. Format: docs/format/manifest.md. The file is
// replaced atomically (tmp, fsync, rename, fsync dir; see
// WriteFileAtomically) every time a segment is created or sealed.
#ifndef SEGKV_WORKER_MANIFEST_H_
#define SEGKV_WORKER_MANIFEST_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace segkv::worker {

struct SegmentInfo {
  uint64_t id = 0;
  bool sealed = false;
  // Sealed: offset just past the segment's last record (its file size).
  // Active: 0 in the MANIFEST (the file's length is found by scanning);
  // Log::Segments() reports the bytes written so far.
  uint64_t end_offset = 0;
  int64_t created_ms = 0;  // Unix milliseconds
  int64_t sealed_ms = 0;   // Unix milliseconds, 0 while active

  bool operator==(const SegmentInfo&) const = default;
};

// An index checkpoint (docs/format/checkpoint.md) the partition may
// recover from: its file holds the index as of `covered_address`.
struct CheckpointInfo {
  uint64_t id = 0;               // file ckpt-<id>.idx; ascending
  uint64_t covered_address = 0;  // replay resumes here
  uint64_t next_version = 0;     // the partition's next sequence number then
  uint64_t file_size = 0;
  uint32_t crc = 0;              // the file's body CRC32C (its trailer)
  int64_t created_ms = 0;        // Unix milliseconds

  bool operator==(const CheckpointInfo&) const = default;
};

struct Manifest {
  uint32_t partition = 0;
  uint64_t segment_size = 0;
  // Every version (sequence number) the partition had handed out when this
  // was written is below it: compaction raises it before it removes
  // segments, since a dropped tombstone may have carried the newest
  // version. 0: none recorded (versions 1 and 2).
  uint64_t version_floor = 0;
  // Ascending ids; every segment but the last is sealed; the last is active.
  std::vector<SegmentInfo> segments;
  // Ascending ids (oldest first); recovery tries the newest first.
  std::vector<CheckpointInfo> checkpoints;

  bool operator==(const Manifest&) const = default;
};

inline constexpr char kManifestName[] = "MANIFEST";
// Versions 1 (no checkpoints) and 2 (no version floor) are still read;
// version 3 is written.
inline constexpr uint32_t kManifestVersion = 3;

std::string EncodeManifest(const Manifest& m);
// Errors: DATA_LOSS (naming `path`) for a bad magic, CRC, length or an
// inconsistent segment list; FAILED_PRECONDITION for an unknown version.
absl::StatusOr<Manifest> DecodeManifest(absl::string_view data,
                                        absl::string_view path);

// File name of segment `id`: "seg-" + 20 decimal digits + ".log".
std::string SegmentFileName(uint64_t id);
// Parses a segment file name; false if `name` is not one.
bool ParseSegmentFileName(absl::string_view name, uint64_t* id);
// File name of checkpoint `id`: "ckpt-" + 20 decimal digits + ".idx".
std::string CheckpointFileName(uint64_t id);
bool ParseCheckpointFileName(absl::string_view name, uint64_t* id);

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_MANIFEST_H_
