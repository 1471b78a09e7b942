// The file-system seam. The storage engine touches disk only through these
// interfaces, so tests can substitute MemFileSystem (worker/mem_fs.h) to drop
// unsynced data, fail writes or fsyncs with EIO, and run out of space.
//
// Durability model (what every implementation must honour and what the
// engine relies on):
//  - WritableFile::Sync() makes the file's bytes durable, not its name.
//  - A created, renamed or removed name is durable only after SyncDir() of
//    the directory holding it.
//  - After a failed Sync() the file's unsynced bytes are in an unknown state:
//    the caller must not assume they will ever reach the disk.
//
// Errors: ENOSPC/EDQUOT map to RESOURCE_EXHAUSTED, ENOENT to NOT_FOUND, other
// I/O errors to UNAVAILABLE; messages name the path and the operation.
#ifndef SEGKV_WORKER_FS_H_
#define SEGKV_WORKER_FS_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace segkv::worker {

// A file opened for appending. Not thread-safe: one owner at a time.
class WritableFile {
 public:
  virtual ~WritableFile() = default;

  // Appends `data` at Size(). On error an unknown prefix of `data` may have
  // reached the file; the caller restores a known length with Truncate().
  virtual absl::Status Append(absl::string_view data) = 0;
  // fdatasync(2): makes every byte appended so far durable.
  virtual absl::Status Sync() = 0;
  // A hint: start writing bytes [offset, offset + n) back to the disk now,
  // without waiting (sync_file_range(2) SYNC_FILE_RANGE_WRITE), so a later
  // Sync() has little left to do. Durability still needs Sync().
  virtual void StartWriteback(uint64_t offset, uint64_t n) {}
  // Sets the file's length to `size`; the next Append() writes there.
  virtual absl::Status Truncate(uint64_t size) = 0;
  // Overwrites bytes [offset, offset + data.size()), which must lie within
  // Size(). Rewriting bytes with themselves makes their pages dirty again,
  // so the next Sync() writes them even if the kernel had marked them clean
  // without writing them (Linux does after a failed writeback).
  virtual absl::Status WriteAt(uint64_t offset, absl::string_view data) = 0;
  // Bytes in the file as this handle knows them (appended or truncated).
  virtual uint64_t Size() const = 0;
};

// A file opened for reading at arbitrary offsets. Read() may be called from
// any thread while no WritableFile of the same file truncates it.
class ReadableFile {
 public:
  virtual ~ReadableFile() = default;

  // Returns a view of bytes [offset, offset + n). The POSIX implementation
  // returns a view into a read-only memory mapping (valid until this object
  // is destroyed); MemFileSystem's view is valid until the file next changes.
  // Callers copy what they keep. Reading past the end of the file is an
  // error (DATA_LOSS); the caller must only read bytes it knows were written.
  virtual absl::StatusOr<absl::string_view> Read(uint64_t offset,
                                                size_t n) const = 0;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Opens `path` for appending, creating it if missing. With `truncate`, an
  // existing file is emptied first.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> OpenWritable(
      const std::string& path, bool truncate) = 0;
  // Opens `path` for reading. `max_size` bounds every offset that will ever
  // be read (the file may still be growing up to it).
  virtual absl::StatusOr<std::unique_ptr<ReadableFile>> OpenReadable(
      const std::string& path, uint64_t max_size) = 0;
  virtual absl::StatusOr<std::string> ReadFileToString(
      const std::string& path) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..".
  virtual absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& dir) = 0;
  virtual absl::StatusOr<uint64_t> FileSize(const std::string& path) = 0;
  virtual absl::Status Remove(const std::string& path) = 0;
  // Atomically replaces `to` with `from` (rename(2)).
  virtual absl::Status Rename(const std::string& from,
                              const std::string& to) = 0;
  // fsync(2) of the directory: makes its entries' creation, renames and
  // removals durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;
  // Creates `dir` (and missing parents); OK if it exists. Each directory it
  // creates is durable in its parent when it returns (the parent is
  // fsynced), so a nested path created at once survives a crash whole.
  virtual absl::Status CreateDir(const std::string& dir) = 0;
  // Whether `path` exists. An error other than "no such file" (EIO,
  // EACCES, ELOOP...) is an error, never "does not exist": callers decide
  // from it whether to create a new partition or data dir.
  virtual absl::StatusOr<bool> PathExists(const std::string& path) = 0;
};

// The process-wide POSIX file system (never null, never destroyed).
FileSystem* DefaultFileSystem();

// Replaces `dir`/`name` atomically and durably with `contents`: writes
// `name`.tmp, syncs it, renames it over `name`, syncs `dir`. After a crash
// at any point the file holds either the old or the new contents.
// If `renamed` is given it reports whether the rename happened: a failure
// after it (the directory sync) leaves the new contents in place but maybe
// not durable, which callers must treat as an unknown state.
absl::Status WriteFileAtomically(FileSystem* fs, const std::string& dir,
                                 const std::string& name,
                                 absl::string_view contents,
                                 bool* renamed = nullptr);

// Maps an errno from operation `op` on `path` to a Status (see file comment).
absl::Status ErrnoToStatus(int err, absl::string_view op,
                           absl::string_view path);

std::string JoinPath(absl::string_view dir, absl::string_view name);

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_FS_H_
