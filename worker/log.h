// The segmented append-only log of one partition (docs/format/log.md).
//
// One logical address space: address = segment_id * segment_size + offset.
// New records go to an in-memory tail buffer and reach the active segment's
// file in large sequential writes (Flush); Sync adds an fdatasync. A record
// never spans segments: when the next one does not fit, the caller Seals the
// active segment, which makes it durable, creates the next one and records
// both in the MANIFEST before any record is written to the new one.
//
// Failure handling: a failed write (EIO, ENOSPC) restores the file to its
// previous length and keeps the buffer, so the caller can retry or roll
// back; a failed fsync (or a failure that leaves the file or the manifest
// in an unknown state) puts the log in a failed state in which every write
// returns that error until the partition is reopened (recovery then decides
// what survived). Reads keep working.
//
// Not thread-safe: owned by the partition's worker thread.
#ifndef SEGKV_WORKER_LOG_H_
#define SEGKV_WORKER_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/fs.h"
#include "worker/manifest.h"
#include "worker/record.h"

namespace segkv::worker {

struct LogOptions {
  FileSystem* fs = nullptr;
  std::string dir;
  uint32_t partition = 0;
  // Used when the log is created; an existing log keeps the size recorded
  // in its MANIFEST.
  uint64_t segment_size = 128ull << 20;
  // The largest value new writes may carry: a segment must hold one such
  // record. Reading checks only the format's limit, so records written
  // under a larger setting stay readable.
  uint64_t max_value_size = 16ull << 20;
  // Flush() is due once this many bytes are buffered.
  size_t buffer_size = 1 << 20;
  // Flush() also syncs once this many written bytes are not yet durable
  // (0: never; only Sync() and Seal() do). Recovery relies on it to tell a
  // torn write from damage (TornWindow()), so the writer must honour it:
  // callers keep each group between Sync()s under it too.
  uint64_t max_unsynced_bytes = 8 << 20;
  // Unlink files the MANIFEST no longer lists (compacted segments, old
  // checkpoints) on a helper thread instead of in the call that dropped
  // them: unlinking a 128 MiB segment takes tens of milliseconds here
  // (ext4 frees its blocks there and then), which a worker must not spend
  // with requests waiting. A file whose unlink a crash prevents or undoes
  // is an orphan, which Open() removes. Off: removed in the call, with the
  // same result on disk (and a deterministic order of file operations,
  // which the kill-point tests rely on).
  bool remove_in_background = false;
};

// Removes files on a thread of its own, oldest first. The destructor
// finishes what is pending.
class FileRemover {
 public:
  explicit FileRemover(FileSystem* fs) : fs_(fs) {}
  ~FileRemover();
  FileRemover(const FileRemover&) = delete;
  FileRemover& operator=(const FileRemover&) = delete;

  void Remove(std::string path);
  // Returns once every file handed over before the call is removed (or its
  // removal failed, which is logged).
  void Flush();

 private:
  void Run();

  FileSystem* const fs_;
  absl::Mutex mu_;
  absl::CondVar cv_;  // pending_ grew, stop_ set, or done_ moved
  std::vector<std::string> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t handed_ ABSL_GUARDED_BY(mu_) = 0;  // paths ever passed to Remove()
  uint64_t done_ ABSL_GUARDED_BY(mu_) = 0;    // of those, finished
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // started by the first Remove()
};

struct LogRecoveryStats {
  uint64_t segments = 0;
  uint64_t records = 0;
  uint64_t bytes = 0;            // record bytes replayed
  uint64_t truncated_bytes = 0;  // torn tail cut off the active segment
  uint64_t removed_files = 0;    // orphaned segment/checkpoint files, tmp files
  // 1 if the active segment records another torn window than this
  // process's: the first write seals it (docs/format/log.md).
  uint64_t window_changed = 0;
};

// INVALID_ARGUMENT unless a segment of `segment_size` bytes is at most
// 1 TiB and holds a record of the largest key and a `max_value_size` value.
absl::Status CheckSegmentSize(uint64_t segment_size, uint64_t max_value_size);

class Log {
 public:
  // A valid record met during recovery. `record` is the whole record
  // (header, key, value).
  struct ScannedRecord {
    uint64_t address;
    RecordHeader header;
    absl::string_view record;
  };
  // Called with runs of valid records in address order during Recover(),
  // a few dozen at a time so the visitor can prefetch ahead. The views are
  // valid only during the call.
  using Visitor =
      absl::FunctionRef<absl::Status(absl::Span<const ScannedRecord> records)>;

  // A log over options.dir; does no I/O. Call Recover() before anything
  // else.
  explicit Log(const LogOptions& options);
  ~Log();

  // Opens (creating if missing) the log: reads the MANIFEST, removes files
  // it does not list (segments whose creation or removal did not complete,
  // stale tmp files, unlisted checkpoints) and opens every segment. Reads
  // nothing of the records. Errors: DATA_LOSS for a bad manifest or a
  // missing listed segment; FAILED_PRECONDITION if the directory belongs
  // to another partition; I/O errors from the seam.
  absl::Status Open(LogRecoveryStats* stats);
  // After Open(): replays every record at or after `start` through `visit`
  // (segments that end before it are only checked for their size and
  // header), finds the end of the active segment and truncates a torn
  // tail. Read() works during the replay for records already visited.
  // DATA_LOSS naming segment and offset for damage before the tail.
  absl::Status Replay(uint64_t start, Visitor visit, LogRecoveryStats* stats);
  // Open() + Replay(0).
  absl::Status Recover(Visitor visit, LogRecoveryStats* stats);
  // After Open(), before Replay(): OK if a replay may start at `address`
  // (a checkpoint's covered address), i.e. every byte below it that still
  // exists is in the log. FAILED_PRECONDITION naming the shortfall if not.
  absl::Status CheckReplayStart(uint64_t address);
  // Whether segment `id` exists (is listed in the manifest).
  bool HasSegment(uint64_t id) const { return SegmentById(id) != nullptr; }

  // Checkpoints listed in the manifest, oldest first.
  const std::vector<CheckpointInfo>& checkpoints() const { return checkpoints_; }
  // Hands out the id for a new checkpoint: above every id listed, dropped,
  // found on disk or handed out before since Open(), so a file still queued
  // for removal (in the background) never has the name of a new one.
  uint64_t TakeCheckpointId() { return ++max_checkpoint_id_; }
  // The MANIFEST's version floor: every version handed out before the
  // last RemoveSegments() is below it (0: none).
  uint64_t version_floor() const { return version_floor_; }
  // Records a written, durable checkpoint in the manifest, keeping only
  // the newest `keep` (>= 1) listed; then removes the files of those
  // dropped and syncs the directory. An error means the checkpoint is not
  // listed (the MANIFEST write failed); failures of the cleanup after it
  // are logged (the next Open() removes unlisted files).
  absl::Status AddCheckpoint(const CheckpointInfo& info, size_t keep);
  // Removes the file of checkpoint `id`, which must not be listed (one that
  // was written but could not be recorded). NotFound counts as removed.
  absl::Status RemoveUnlistedCheckpoint(uint64_t id);
  // Removes checkpoint `id` from the manifest and deletes its file (one
  // that failed to load: it would only be tried again). An error means it
  // is still listed; a failure to delete the file is logged.
  absl::Status DropCheckpoint(uint64_t id);
  // Deletes sealed segments (not the active one): first one manifest
  // write stops listing them, then the files are unlinked (a failure is
  // logged: the file is an orphan the next Open() removes; the directory
  // is not synced for the unlinks, for the same reason). Anything that
  // must outlive the segments must be durable before. That manifest
  // write also records `version_floor` (when higher than the one it holds):
  // the caller's next version, so the highest version ever handed out
  // survives a tombstone that goes with the segments.
  absl::Status RemoveSegments(const std::vector<uint64_t>& ids,
                              uint64_t version_floor = 0);
  absl::Status RemoveSegment(uint64_t id);
  // Returns once files dropped so far are unlinked (remove_in_background);
  // else at once.
  void FlushRemovals() {
    if (remover_ != nullptr) remover_->Flush();
  }
  std::string dir() const { return options_.dir; }
  FileSystem* fs() const { return fs_; }

  // Bytes a record may still occupy in the active segment.
  // 0 while the active segment records another process's torn window (see
  // Replay()): writers Seal() first.
  uint64_t SpaceLeft() const {
    return window_seal_pending_ ? 0 : active_base_ + segment_size_ - tail_;
  }
  // Reserves `size` <= SpaceLeft() bytes at the tail and returns their
  // address; the caller writes the record at BufferAt(address) at once.
  uint64_t Append(uint64_t size);
  char* BufferAt(uint64_t address) {
    return buffer_.data() + (address - buffer_base_);
  }

  // A view of [address, address + n), which must lie in one segment and
  // below tail(). Valid until the next Append/Flush/TruncateTo.
  absl::StatusOr<absl::string_view> Read(uint64_t address, uint64_t n) const;

  // Writes the buffer to the active segment (no fsync).
  absl::Status Flush();
  // Flush() if at least buffer_size bytes are buffered.
  absl::Status FlushIfFull() {
    return buffer_.size() >= buffer_size_ ? Flush() : absl::OkStatus();
  }
  // Iteration for scans. First(): address of the first record slot. Skip(a):
  // `a` itself if a record may start there, else the next address where one
  // may (the first record slot of the next segment that exists and holds
  // data), or tail() at the end.
  uint64_t First() const;
  uint64_t Skip(uint64_t address) const;
  // The record at `address`, fully checked (lies within written data,
  // valid header, CRC). INVALID_ARGUMENT if no valid record starts there.
  absl::Status RecordAt(uint64_t address, RecordHeader* header,
                        absl::string_view* record) const;

  // Flush() + fdatasync: everything below tail() is durable on success.
  absl::Status Sync();
  // Makes the active segment durable and sealed and starts the next one.
  absl::Status Seal();
  // Drops everything from `address` (>= synced(), in the active segment) to
  // the tail: undoes appends whose commit failed.
  absl::Status TruncateTo(uint64_t address);

  uint64_t tail() const { return tail_; }
  uint64_t synced() const { return synced_; }
  uint64_t segment_size() const { return segment_size_; }
  uint64_t active_segment() const { return active_id_; }
  uint64_t buffered_bytes() const { return buffer_.size(); }
  uint64_t sync_count() const { return sync_count_; }  // fdatasyncs done
  // OK, or the error that failed the log (see file comment).
  const absl::Status& failure() const { return failure_; }
  // Segments in id order; the last is active (its end_offset is live).
  std::vector<SegmentInfo> Segments() const;

 private:
  // A growable byte buffer that does not zero what it hands out.
  class Buffer {
   public:
    char* data() { return data_.get(); }
    const char* data() const { return data_.get(); }
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    void clear() { size_ = 0; }
    void resize(size_t n);  // may reallocate
   private:
    std::unique_ptr<char[]> data_;
    size_t size_ = 0;
    size_t capacity_ = 0;
  };

  struct Segment {
    SegmentInfo info;
    std::unique_ptr<ReadableFile> reader;
    uint64_t scan_limit = 0;  // while recovering: bytes being scanned
  };

  absl::Status CheckSegmentSize() const;
  absl::Status CreateFirstSegment();
  absl::Status ScanSegment(Segment& seg, bool active, uint64_t from,
                           Visitor visit, LogRecoveryStats* stats);
  absl::Status RemoveOrphan(const std::string& name, uint64_t id,
                            bool must_be_empty);
  absl::StatusOr<std::unique_ptr<WritableFile>> CreateSegmentFile(uint64_t id,
                                                                  int64_t now_ms);
  absl::Status WriteManifest(const std::vector<SegmentInfo>& segments,
                             const std::vector<CheckpointInfo>& checkpoints);
  absl::Status WriteManifest(const std::vector<SegmentInfo>& segments) {
    return WriteManifest(segments, checkpoints_);
  }
  std::string PathOf(uint64_t id) const;
  // Unlinks a file the MANIFEST no longer lists: now, or on the remover's
  // thread (then always OK; a failure is logged there).
  absl::Status RemoveUnlisted(const std::string& path);
  const Segment* SegmentById(uint64_t id) const;
  // Offset just past the bytes of segment `id` that are in its file.
  uint64_t FileEnd(const Segment& seg) const;
  // How far before the end of the active segment a torn write can reach:
  // damage there may be followed by bytes that reached the disk out of
  // order, and is truncated rather than reported.
  uint64_t TornWindow() const;
  absl::Status Fail(absl::Status s);

  const LogOptions options_;
  FileSystem* const fs_;
  uint64_t segment_size_;
  const size_t buffer_size_;

  // segments_[id - first_id_]; null for ids that no longer exist.
  std::vector<std::unique_ptr<Segment>> segments_;
  uint64_t first_id_ = 0;
  uint64_t active_id_ = 0;
  uint64_t active_base_ = 0;  // address of the active segment's byte 0
  std::unique_ptr<WritableFile> active_file_;
  std::vector<CheckpointInfo> checkpoints_;
  uint64_t max_checkpoint_id_ = 0;
  uint64_t version_floor_ = 0;
  bool opened_ = false;
  bool fresh_ = false;  // Open() created the log
  // The torn window the active segment's header records (0: none), and
  // whether it differs from this process's, so nothing may be appended to
  // it before a Seal().
  uint64_t active_window_ = 0;
  bool window_seal_pending_ = false;

  Buffer buffer_;
  // Address of buffer_[0] = end of the active file. Reads at or above it
  // come from the buffer; during recovery everything is read from files.
  uint64_t buffer_base_ = UINT64_MAX;
  uint64_t tail_ = UINT64_MAX;  // next record's address
  uint64_t synced_ = 0;       // everything below is durable
  uint64_t sync_count_ = 0;
  absl::Status failure_;
  // Unlinks files no longer listed (see remove_in_background); null when
  // they are removed in the call. Last member: joined first.
  std::unique_ptr<FileRemover> remover_;
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_LOG_H_
