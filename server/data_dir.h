// The layout of segkvd's data directory:
//   <dir>/SEGKV     identity: format version and partition count
//   <dir>/LOCK      held with flock() by the segkvd serving the directory
//   <dir>/p<k>/     partition k (MANIFEST and segments, docs/format/log.md)
// The partition count is fixed when the directory is created: keys are
// routed by hash modulo the count, so opening it with another count would
// look every key up in the wrong partition.
#ifndef SEGKV_SERVER_DATA_DIR_H_
#define SEGKV_SERVER_DATA_DIR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/fs.h"

namespace segkv::server {

// An exclusive flock() on <dir>/LOCK, held until destroyed (or the process
// exits): a second segkvd on the same directory would replay, truncate
// and append to the same segments.
class DataDirLock {
 public:
  // FAILED_PRECONDITION if another process (or another DataDirLock in this
  // one) holds it. `dir` must exist.
  static absl::StatusOr<std::unique_ptr<DataDirLock>> Acquire(const std::string& dir);
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  const int fd_;
};

// Whether `dir` is a segkv data directory already (has its identity file);
// an error if that cannot be told.
absl::StatusOr<bool> DataDirExists(worker::FileSystem* fs, const std::string& dir);

// Creates `dir` for `partitions` partitions, or checks that an existing one
// was created for that many (FAILED_PRECONDITION with a clear message if
// not; DATA_LOSS if its identity file is damaged). `partitions` 0 takes an
// existing directory's count, and makes a new one with `new_partitions`.
// Returns the partition count. With `lock`, first takes the directory's
// DataDirLock (POSIX file systems only) and hands it over.
absl::StatusOr<uint32_t> OpenDataDir(worker::FileSystem* fs, const std::string& dir,
                                     uint32_t partitions, uint32_t new_partitions = 1,
                                     std::unique_ptr<DataDirLock>* lock = nullptr);

std::string PartitionDir(const std::string& dir, uint32_t partition);

}  // namespace segkv::server

#endif  // SEGKV_SERVER_DATA_DIR_H_
