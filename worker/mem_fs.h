// An in-memory FileSystem that models what a crash keeps, for crash and
// fault-injection tests.
//
// Model: every file has its current bytes and its durable bytes (as of its
// last successful Sync()); every directory has its current entries and its
// durable entries (as of its last SyncDir()). Crash() throws away everything
// not durable: names revert to the durable directory entries plus (with
// keep_unsynced) a random prefix, in order, of the changes since (so
// unsynced creations may vanish, unsynced renames and removals may come
// undone), and each file
// keeps its durable bytes plus a random prefix of the bytes appended after
// them (a torn write), in which random 4 KiB pages read as zeros (pages
// reach the disk in any order). Handles opened before Crash() fail every call
// afterwards, like the file descriptors of a dead process.
//
// Faults: appends or syncs can be made to fail with an errno after a number
// of successful calls, and a capacity makes appends fail with ENOSPC after a
// partial write, as a full disk does. A failed file sync loses the file's
// unsynced bytes the way Linux can: they stay readable but never become
// durable unless written again (see Inode::lost_begin).
//
// Kill points: KillAfterOps(n) lets n more mutating operations (OpenWritable,
// Append, WriteAt, Sync, Truncate, Remove, Rename, SyncDir, CreateDir)
// succeed; every
// later one fails with UNAVAILABLE and changes nothing, as if the process
// had died right there. Crash() then decides what the "dead" process left
// on disk. Reads keep working. MutatingOps() counts the successful mutating
// operations, so a test can run a scenario once to count them and then rerun
// it killed after each of them.
//
// Thread-safe.
#ifndef SEGKV_WORKER_MEM_FS_H_
#define SEGKV_WORKER_MEM_FS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "worker/fs.h"

namespace segkv::worker {

class MemFileSystem : public FileSystem {
 public:
  MemFileSystem();
  ~MemFileSystem() override;

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
  // For tests: PathExists() without the status (it never fails here).
  bool Exists(const std::string& path) { return *PathExists(path); }

  // Loses everything not durable (see the file comment). `seed` picks how
  // much of each file's unsynced tail survives; with `keep_unsynced` false
  // none of it does. Handles opened before it fail from then on, but calls
  // by path still work (the next process uses them): a test must drop the
  // crashed process's objects before this, while KillAfterOps(0) holds, or
  // their destructors (a Partition's Close()) write to the crashed disk.
  void Crash(uint64_t seed, bool keep_unsynced = true);

  // After `n` more successful appends, every append fails with `err` (after
  // writing a prefix of its data). n < 0 disables.
  void FailAppendsAfter(int64_t n, int err);
  // After `n` more successful syncs (file or directory), every sync fails
  // with `err`. n < 0 disables.
  void FailSyncsAfter(int64_t n, int err);
  // After `n` more successful mutating operations (see the file comment)
  // every mutating operation fails with UNAVAILABLE("killed at kill point")
  // and changes nothing, until Crash() or KillAfterOps(-1). n < 0 disables.
  void KillAfterOps(int64_t n);
  // Successful mutating operations since construction (not reset by
  // Crash()).
  uint64_t MutatingOps();
  // Whether the kill point has been reached.
  bool killed();
  // Total bytes all files may hold; appends beyond it write what fits and
  // fail with ENOSPC. 0 = unlimited.
  void SetCapacity(uint64_t bytes);

  // Direct access for corruption tests: replaces the file's current and
  // durable bytes alike. Returns false if the file does not exist.
  bool OverwriteFile(const std::string& path, std::string contents);
  // Current bytes of `path` (empty if missing).
  std::string Contents(const std::string& path);
  uint64_t SyncCount();

 private:
  struct Inode {
    std::string data;
    std::string durable;
    // Set when a truncation cut into durable bytes without a sync after it:
    // a crash then restores the durable bytes whole.
    bool rewritten = false;
    // Bytes [lost_begin, lost_end) of `data` were unsynced when a sync
    // failed: like Linux after a writeback error, their pages count as
    // clean though they never reached the disk. Reads still see them, but
    // no later sync writes them (the durable copy holds zeros there) until
    // they are written again (WriteAt, or a truncation below them).
    uint64_t lost_begin = 0;
    uint64_t lost_end = 0;
  };
  class File;
  class Reader;

  static std::string ParentDir(const std::string& path);
  absl::Status CheckGeneration(uint64_t generation) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t TotalBytes() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MaybeFailSync(const std::string& what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Kill point: CheckKill() before a mutating operation (an error once the
  // process is dead), CountOp() after it succeeded.
  absl::Status CheckKill() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountOp() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // Files by full path: what a process sees now, and what survives a crash.
  std::map<std::string, std::shared_ptr<Inode>> live_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Inode>> durable_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> dirs_ ABSL_GUARDED_BY(mu_);
  // Name changes (creations, removals, renames) no directory sync has made
  // durable yet, in the order they were made: Crash() applies a random
  // prefix of them.
  struct PendingName {
    enum Kind { kCreate, kRemove, kRename } kind;
    std::string path;  // the name created or removed; a rename's source
    std::string to;    // a rename's target
    std::shared_ptr<Inode> inode;
  };
  std::vector<PendingName> pending_names_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t appends_before_failure_ ABSL_GUARDED_BY(mu_) = -1;
  int append_errno_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t syncs_before_failure_ ABSL_GUARDED_BY(mu_) = -1;
  int sync_errno_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t capacity_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sync_count_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t ops_before_kill_ ABSL_GUARDED_BY(mu_) = -1;
  bool killed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t mutating_ops_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_MEM_FS_H_
