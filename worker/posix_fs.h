// POSIX implementation of the file-system seam (worker/fs.h): write(2),
// fdatasync(2), and read-only mmap(2) for reads.
//
// Reads through a mapping cost no system call, which is what lets a Get be a
// hash lookup plus a memory access. The flip side, accepted on purpose: a
// media error while reading a mapped page raises SIGBUS instead of an error
// status (as in LMDB and other mmap-based stores).
#ifndef SEGKV_WORKER_POSIX_FS_H_
#define SEGKV_WORKER_POSIX_FS_H_

#include "worker/fs.h"

namespace segkv::worker {

class PosixFileSystem : public FileSystem {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> OpenWritable(
      const std::string& path, bool truncate) override;
  absl::StatusOr<std::unique_ptr<ReadableFile>> OpenReadable(
      const std::string& path, uint64_t max_size) override;
  absl::StatusOr<std::string> ReadFileToString(
      const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& dir) override;
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override;
  absl::Status Remove(const std::string& path) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status SyncDir(const std::string& dir) override;
  absl::Status CreateDir(const std::string& dir) override;
  absl::StatusOr<bool> PathExists(const std::string& path) override;
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_POSIX_FS_H_
