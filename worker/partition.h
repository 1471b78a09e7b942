// A partition: the key-value store one worker thread owns alone. A
// segmented append-only log (worker/log.h) holds every record; an in-memory
// hash index (worker/hash_index.h) maps each live key to its newest record.
//
// Versions: every write gets the partition's next sequence number, which is
// the key's version. A missing key has version 0, so a compare-and-set with
// expected version 0 means "create only".
//
// Durability (PartitionOptions::durability):
//  - kAlways: a write returns only after fdatasync; ApplyBatch pays one
//    fdatasync for the whole batch (group commit).
//  - kInterval: writes reach the file and fdatasync at most
//    `sync_interval` apart; the owner calls Tick() when idle so an idle
//    partition still syncs. A crash loses at most about one interval.
//  - kNone: no fdatasync per write; a crash can lose the tail buffer and
//    the unsynced bytes in the page cache.
// Whatever the policy, the log syncs once max_unsynced_bytes have been
// written since the last sync (bounding what a crash can lose and keeping
// each fdatasync short), when it seals a segment, and in Close().
//
// Reads see every applied write, including those still in the tail buffer.
//
// Threading: not thread-safe. One thread (the worker) owns the partition
// and makes every call; nothing inside takes a lock.
#ifndef SEGKV_WORKER_PARTITION_H_
#define SEGKV_WORKER_PARTITION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/fs.h"
#include "worker/hash_index.h"
#include "worker/log.h"

namespace segkv::worker {

enum class Durability { kAlways, kInterval, kNone };
absl::StatusOr<Durability> ParseDurability(absl::string_view name);
absl::string_view DurabilityName(Durability d);

struct PartitionOptions {
  FileSystem* fs = nullptr;  // null: the POSIX file system
  std::string dir;           // created if missing
  uint32_t partition_id = 0;
  uint64_t segment_size = 128ull << 20;
  uint64_t max_value_size = 16ull << 20;  // at most 1 GiB
  size_t write_buffer_size = 1 << 20;
  uint64_t max_unsynced_bytes = 8 << 20;  // 0: no such bound
  Durability durability = Durability::kAlways;
  absl::Duration sync_interval = absl::Milliseconds(100);  // must be > 0
};

struct WriteOp {
  enum class Type : uint8_t { kPut, kDelete };

  Type type = Type::kPut;
  absl::string_view key;
  absl::string_view value;  // ignored for deletes
  // Compare-and-set: apply only if the key's version equals this
  // (0 = the key must not exist).
  std::optional<uint64_t> expected_version;
  // Fill WriteResult::previous_value with the value this op replaces.
  bool return_previous = false;

  static WriteOp Put(absl::string_view key, absl::string_view value) {
    WriteOp op;
    op.key = key;
    op.value = value;
    return op;
  }
  static WriteOp Delete(absl::string_view key) {
    WriteOp op;
    op.type = Type::kDelete;
    op.key = key;
    return op;
  }
};

struct WriteResult {
  // OK; INVALID_ARGUMENT (empty or oversized key/value); FAILED_PRECONDITION
  // (expected_version did not match: previous_version has the current one);
  // or the I/O error that failed the commit (RESOURCE_EXHAUSTED for a full
  // disk, UNAVAILABLE otherwise). A failed op changed nothing.
  absl::Status status;
  uint64_t version = 0;  // the new record's version; 0 if none was written
  bool existed = false;  // the key existed before the op
  uint64_t previous_version = 0;
  std::string previous_value;  // with return_previous, if it existed
};

struct ReadResult {
  bool found = false;
  uint64_t version = 0;
  std::string value;
};

struct ScanItem {
  std::string key;
  std::string value;  // empty with keys_only
  uint64_t version = 0;
};

struct SegmentUsage {
  uint64_t total_bytes = 0;  // record bytes in the segment
  uint64_t live_bytes = 0;   // bytes of records the index points at
};

struct PartitionStats {
  uint64_t keys = 0;
  uint64_t index_bytes = 0;
  uint64_t live_bytes = 0;
  uint64_t dead_bytes = 0;
  uint64_t segments = 0;
  uint64_t next_version = 0;
  uint64_t tail_address = 0;
  uint64_t synced_address = 0;
  uint64_t syncs = 0;  // fdatasync calls on the write path
  LogRecoveryStats recovery;
  double recovery_seconds = 0;
  std::string error;  // why writes are refused; empty if they are not
};

class Partition {
 public:
  // Opens the partition in options.dir, creating it if missing, and
  // rebuilds the index by replaying the log. Errors as Log::Recover, plus
  // INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<Partition>> Open(
      const PartitionOptions& options);
  // Close()s, logging (not returning) any error.
  ~Partition();
  Partition(const Partition&) = delete;
  Partition& operator=(const Partition&) = delete;

  // Looks `key` up. A missing key is OK with out->found = false.
  // INVALID_ARGUMENT for an empty or oversized key.
  absl::Status Get(absl::string_view key, ReadResult* out);

  // Applies `ops` in order and fills one result per op. Under kAlways the
  // ops share one fdatasync (one per segment when the batch spans
  // segments). Per-op failures (bad input, version mismatch) fail only that
  // op. An I/O failure fails every op of the group being committed and
  // every later op, rolls them back, and is also returned; ops in groups
  // committed before it stay applied.
  absl::Status ApplyBatch(std::span<const WriteOp> ops,
                          std::vector<WriteResult>* results);
  // One-op conveniences over ApplyBatch; the op's status is returned.
  absl::StatusOr<WriteResult> Write(const WriteOp& op);
  absl::StatusOr<WriteResult> Put(absl::string_view key, absl::string_view value);
  absl::StatusOr<WriteResult> Delete(absl::string_view key);

  // Appends to `out` the live keys whose records lie at or after `cursor`
  // (0 = the beginning) in log order, that start with `prefix`, until
  // `limit` items or about `max_scan_bytes` of log have been looked at
  // (reported in *scanned_bytes if not null). Returns where to continue, 0
  // when the end of the log was reached. DATA_LOSS if damage is met.
  // A key not written during a whole scan is returned exactly once; one
  // written during it may appear twice or not at all (its record moves to
  // the tail). INVALID_ARGUMENT if `cursor` is not an address this scan
  // returned.
  absl::StatusOr<uint64_t> Scan(uint64_t cursor, absl::string_view prefix,
                                size_t limit, bool keys_only,
                                uint64_t max_scan_bytes,
                                std::vector<ScanItem>* out,
                                uint64_t* scanned_bytes = nullptr);

  // Starts loading what looking these keys up will touch: their index
  // buckets, then the records their fingerprints point at. Lookups are
  // bound by those cache misses; issued together they overlap. A hint
  // only: it changes nothing and reports nothing.
  void Prefetch(std::span<const absl::string_view> keys);

  // Makes every applied write durable now.
  absl::Status Sync();
  // Under kInterval, syncs if the interval has passed; no-op otherwise.
  absl::Status Tick();
  // Syncs and stops accepting writes. Idempotent.
  absl::Status Close();

  PartitionStats Stats() const;
  std::vector<SegmentInfo> Segments() const { return log_->Segments(); }
  // Record bytes per segment id (index = id; ids past the end hold none).
  std::vector<SegmentUsage> SegmentUsages() const { return usage_; }
  // The segment size in force (an existing partition keeps its own).
  uint64_t segment_size() const { return log_->segment_size(); }
  const HashIndex& index() const { return index_; }
  const PartitionOptions& options() const { return options_; }

 private:
  // What must be undone if the commit of the current group fails.
  struct Undo {
    uint32_t fp;
    uint64_t new_address;  // 0 for a delete
    uint64_t old_address;  // 0 if the key was absent
    uint64_t old_size;
    uint64_t new_size;
  };

  explicit Partition(const PartitionOptions& options);
  absl::Status Recover();
  absl::Status ReplayRecords(absl::Span<const Log::ScannedRecord> records);
  absl::Status ReplayRecord(uint32_t fp, const Log::ScannedRecord& rec);
  // Finds the index entry for `key`; fills *h with its record's header.
  absl::StatusOr<HashIndex::Position> FindKey(uint32_t fp, absl::string_view key,
                                              RecordHeader* h);
  absl::Status ValidateKey(absl::string_view key) const;
  absl::Status ApplyOps(std::span<const WriteOp> ops, WriteResult* results);
  WriteResult ApplyOne(const WriteOp& op);
  void Rollback(uint64_t group_start_address, uint64_t group_start_version);
  absl::Status MaybeIntervalSync();
  SegmentUsage& UsageOf(uint64_t address);

  const PartitionOptions options_;
  std::unique_ptr<Log> log_;
  HashIndex index_;
  std::vector<SegmentUsage> usage_;  // by segment id
  std::vector<Undo> undo_;
  // Tombstones that were a key's newest record during replay.
  std::vector<std::pair<uint32_t, uint64_t>> replay_tombstones_;
  uint64_t next_version_ = 1;
  absl::Time next_sync_ = absl::InfiniteFuture();
  bool closed_ = true;  // until Recover() succeeds
  LogRecoveryStats recovery_;
  double recovery_seconds_ = 0;
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_PARTITION_H_
