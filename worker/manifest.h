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
  // Active: 0 (the file's length is found by scanning).
  uint64_t end_offset = 0;
  int64_t created_ms = 0;  // Unix milliseconds
  int64_t sealed_ms = 0;   // Unix milliseconds, 0 while active

  bool operator==(const SegmentInfo&) const = default;
};

struct Manifest {
  uint32_t partition = 0;
  uint64_t segment_size = 0;
  // Ascending ids; every segment but the last is sealed; the last is active.
  std::vector<SegmentInfo> segments;

  bool operator==(const Manifest&) const = default;
};

inline constexpr char kManifestName[] = "MANIFEST";
inline constexpr uint32_t kManifestVersion = 1;

std::string EncodeManifest(const Manifest& m);
// Errors: DATA_LOSS (naming `path`) for a bad magic, CRC, length or an
// inconsistent segment list; FAILED_PRECONDITION for an unknown version.
absl::StatusOr<Manifest> DecodeManifest(absl::string_view data,
                                        absl::string_view path);

// File name of segment `id`: "seg-" + 20 decimal digits + ".log".
std::string SegmentFileName(uint64_t id);
// Parses a segment file name; false if `name` is not one.
bool ParseSegmentFileName(absl::string_view name, uint64_t* id);

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_MANIFEST_H_
