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

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/checkpoint.h"
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
  // See LogOptions::remove_in_background (segkvd turns it on).
  bool remove_in_background = false;
  Durability durability = Durability::kAlways;
  absl::Duration sync_interval = absl::Milliseconds(100);  // must be > 0

  // Checkpoints (docs/format/checkpoint.md). Tick() starts one this often
  // if the log has grown since the last; zero: only on demand.
  absl::Duration checkpoint_interval = absl::Seconds(60);
  size_t checkpoints_to_keep = 2;  // at least 1
  // Close() takes a checkpoint if the log grew since the last one, so the
  // next open replays nothing (a failure is logged; Close goes on).
  bool checkpoint_on_close = true;
  // Compaction: Tick() compacts a sealed segment once this fraction of its
  // bytes is dead (overwritten, deleted, or a tombstone no older segment
  // needs). Above 1: never on its own (Compact() still works).
  double compaction_dead_ratio = 0.5;
  // Foreground-first pacing: while writes come in, compaction may scan
  // this many bytes of the segment being compacted per record byte
  // written (a credit that Tick() spends once it reaches
  // compaction_min_step, so steps stay efficient). A Tick() with no
  // request (Get, Scan, ApplyBatch) since the last one is idle and scans
  // compaction_min_step whatever the credit (the worker keeps ticking
  // while HasBackgroundWork(), so an idle partition catches up). A pass
  // started by StartCompaction() scans at least compaction_min_step per
  // Tick, busy or not.
  double compaction_work_ratio = 1.0;
  uint64_t compaction_min_step = 256 << 10;
  // Bound on space amplification (record bytes in the log / live record
  // bytes) under sustained writes: once the log's record bytes exceed
  // this x live bytes plus one segment (the active one, which compaction
  // cannot reclaim), busy Ticks compact at least as fast as writes add
  // bytes (scanning written / (1 - the victim's live fraction)), so the
  // log stops growing. 0: no bound (the work ratio alone paces compaction
  // while busy).
  double compaction_space_limit = 3.0;
  // While writes come in (not when idle, not in a forced pass, not over
  // the space limit), automatic compaction leaves a sealed segment alone
  // until this many segments' worth of log has been written after it: its
  // live records are the newest, the likeliest to be overwritten soon, so
  // copying them early is mostly wasted work. 0: no wait.
  double compaction_min_age_segments = 1.0;
  // For that wait, a Tick counts as idle only once no write came for this
  // long: a worker whose queue drains between batches is not idle.
  absl::Duration compaction_quiet_period = absl::Seconds(1);
  // Compaction shortcuts, all from the segment usage table: a victim with
  // nothing to keep (no live record, no tombstone an older segment needs)
  // is deleted unread; a victim whose tombstones no older segment needs is
  // compacted by walking the index for the entries that point into it
  // when the index is smaller than half the segment and at most an eighth
  // of the segment is live (walking visits live records in hash order,
  // not in the order they were written, so with many of them a scan, which
  // reaches each at the same age, copies fewer); and a scan or walk
  // stops once nothing in the victim is left to keep. Off: every victim is
  // read record by record to its end (what the shortcuts must agree with).
  bool compaction_shortcuts = true;
  // After a failed compaction step, automatic compaction waits this long
  // before the next (an error that repeats, like a full disk, must not
  // spin).
  absl::Duration compaction_retry_delay = absl::Seconds(1);
  // Tests: before a victim that was not read is deleted, read it and
  // CHECK that no index entry points at a record in it.
  bool verify_compaction = false;
  // Called from a background thread when Tick() has something to finish
  // (a checkpoint buffer ready or a checkpoint file written). May be empty.
  std::function<void()> wake;
};

// INVALID_ARGUMENT naming the bad options, if any (Partition::Open checks
// this first). Not the segment size: it is checked when a new log is
// created (CheckSegmentSize), as an existing one keeps its own.
absl::Status ValidatePartitionOptions(const PartitionOptions& options);

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
  // With return_previous: bytes of previous values the caller can still
  // carry (one response for a whole batch), shared by the ops that point
  // at it. An op whose previous value does not fit fails with
  // INVALID_ARGUMENT and writes nothing.
  std::atomic<int64_t>* previous_budget = nullptr;

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
  // disk, UNAVAILABLE otherwise). A failed op changed nothing this process
  // will show; but after a failed fdatasync its record may still have
  // reached the disk, so after a restart it may be there (its outcome is
  // unknown, as for any write whose answer was an I/O error).
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
  uint64_t address = 0;  // of its record: a scan continued here starts with it
};

struct CheckpointStats {
  uint64_t taken = 0;   // written and recorded since open
  uint64_t failed = 0;  // attempts that failed since open
  std::optional<CheckpointInfo> last;  // newest in the manifest
  double last_copy_ms = 0;       // the worker's stall copying the index
  double last_sync_ms = 0;       // its fdatasync of the log just before
  double last_write_seconds = 0; // background write, fsync, rename
  std::string last_error;
};

struct RecoveryInfo {
  // The checkpoint the last open started from; none = full replay.
  std::optional<uint64_t> checkpoint_id;
  uint64_t start_address = 0;         // where the log replay started
  uint64_t checkpoints_rejected = 0;  // damaged/unusable ones skipped
  uint64_t entries_dropped = 0;  // checkpoint entries into removed segments
  double load_seconds = 0;       // reading and checking the checkpoint
  double seconds = 0;            // the whole open
};

struct CompactionStats {
  uint64_t segments_compacted = 0;
  uint64_t bytes_reclaimed = 0;      // segment file bytes deleted
  uint64_t errors = 0;               // failed steps since open
  absl::StatusCode last_error_code = absl::StatusCode::kOk;
  uint64_t records_relocated = 0;    // live records and kept tombstones
  uint64_t bytes_relocated = 0;
  uint64_t tombstones_dropped = 0;
  // Segments deleted without being read: their usage showed no live record
  // and no tombstone an older segment needs.
  uint64_t segments_dropped_unread = 0;
  // Segments compacted by walking the index for entries pointing into them
  // instead of reading them (the index was the smaller of the two).
  uint64_t segments_walked = 0;
  std::optional<uint64_t> current;   // segment being compacted
  std::string last_error;
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
  RecoveryInfo recovered;
  CheckpointStats checkpoints;
  CompactionStats compaction;
  std::string error;  // why writes are refused; empty if they are not
};

class Partition {
 public:
  // Opens the partition in options.dir, creating it if missing. Loads the
  // newest valid checkpoint listed in the manifest and replays the log
  // after its covered address; a damaged or unusable checkpoint is logged
  // and skipped for the next older one, then for a full replay. Errors as
  // Log::Open/Replay, plus INVALID_ARGUMENT for bad options.
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
  // A key not written during a whole scan is returned at least once (again,
  // with the same version, if compaction moves its record to the tail after
  // the scan passed it); one written during it may appear twice or not at
  // all (its record moves to the tail). INVALID_ARGUMENT if `cursor` is not an address this scan
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
  // The owner calls this after every batch and when idle: runs an
  // interval sync if due, advances a running checkpoint (copies the index
  // once its buffer is ready, records the written file in the manifest),
  // starts a periodic checkpoint if due, and does one paced step of
  // compaction. Errors of the background work are logged and kept in
  // Stats(), not returned; the status is the interval sync's.
  absl::Status Tick();
  // True while Tick() has work it can do right away (compaction pending,
  // checkpoint stage waiting for it): the owner should not sleep.
  bool HasBackgroundWork() const;

  // Starts a checkpoint unless one is running (then OK). The worker pays
  // only for copying the index, in a later Tick(); a background thread
  // writes the file.
  absl::Status StartCheckpoint();
  bool checkpoint_running() const { return ckpt_ != nullptr; }
  // How the last finished checkpoint attempt ended.
  const absl::Status& last_checkpoint_status() const { return last_checkpoint_status_; }
  // Takes a checkpoint now and returns once it is durable and listed in the
  // manifest (joins one already running first).
  absl::StatusOr<CheckpointInfo> Checkpoint();
  // Starts a pass that compacts, in Tick() steps, every sealed segment with
  // at least `min_dead_ratio` of dead bytes (and any dead byte at 0). If a
  // pass is running, it goes on with the lower of the two thresholds.
  void StartCompaction(double min_dead_ratio);
  // With remove_in_background: returns once every file dropped so far is
  // unlinked. Otherwise returns at once.
  void FlushRemovals() { log_->FlushRemovals(); }
  bool compaction_running() const { return forced_ratio_.has_value() || victim_.has_value(); }
  // Runs StartCompaction(min_dead_ratio) to the end now.
  absl::Status Compact(double min_dead_ratio);
  // Finishes a running checkpoint, takes one more if
  // checkpoint_on_close and the log grew since the last, syncs and stops
  // accepting writes. Idempotent.
  absl::Status Close();

  PartitionStats Stats() const;
  std::vector<SegmentInfo> Segments() const { return log_->Segments(); }
  // Record bytes per segment.
  const SegmentUsageTable& SegmentUsages() const { return usage_; }
  // Fraction of segment `id`'s bytes compaction would reclaim.
  double DeadRatio(uint64_t id) const;
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

  struct CheckpointJob;

  explicit Partition(const PartitionOptions& options);
  absl::Status Recover();
  // Loads checkpoint `info` into a fresh index/usage/next_version.
  absl::Status LoadCheckpoint(const CheckpointInfo& info);
  void ResetState();
  // Checkpoint stages run by the owner's thread (see Tick()).
  void AdvanceCheckpoint(bool wait);
  void FinishCheckpoint(const absl::Status& s);
  // Starts loading, for each fingerprint, the record of its first index
  // entry (the key but for a 32-bit collision). Their buckets should
  // already be on their way. Overflow chains are walked one node per pass
  // over all of them, so those misses overlap as well.
  void PrefetchRecordsOf(std::span<const uint32_t> fps);
  void PrefetchRecordAt(uint64_t address);
  // Compaction.
  // The sealed segment with the largest dead ratio >= min_ratio, not
  // damaged or already done; with young_segments_wait, not one written
  // less than compaction_min_age_segments ago.
  std::optional<uint64_t> PickVictim(double min_ratio, bool young_segments_wait) const;
  // Log bytes written after segment `id`'s address range.
  uint64_t SegmentAge(uint64_t id) const;
  // Record bytes over compaction_space_limit x live bytes, plus a segment.
  bool OverSpaceLimit() const;
  // Whether young segments wait now (see compaction_min_age_segments);
  // `idle_tick`: no request came since the last Tick().
  bool YoungSegmentsWait(bool idle_tick) const;
  // Scans up to `budget` bytes of the victim (picking one if needed);
  // *scanned, if given, gets the bytes scanned.
  absl::Status CompactionStep(uint64_t budget, uint64_t* scanned = nullptr);
  // Copies the record at `address` (key fingerprint `fp`) to the tail if
  // it is still needed.
  absl::Status RelocateRecord(uint64_t address, uint32_t fp, const RecordHeader& h,
                              absl::string_view rec);
  // The victim is scanned: it waits in finishing_ until its copies are
  // durable, then RemoveFinished() deletes it.
  absl::Status FinishVictim();
  // Deletes the finished victims whose copies are durable; with `force`,
  // syncs the log first so all of them are.
  absl::Status RemoveFinished(bool force);
  // Counts and reports a failed compaction step, ends a forced pass and
  // pauses automatic compaction for a second.
  void CompactionFailed(const absl::Status& s);
  bool HasOlderSegment(uint64_t id) const;
  // True when segment `id`'s usage shows nothing compaction would keep.
  bool NothingToKeep(uint64_t id) const;
  // True when compacting segment `id` by walking the index (entries that
  // point into it) costs less than reading it, and finds all it must keep.
  bool WalkIsCheaper(uint64_t id) const;
  // A compaction step of a victim compacted by walking the index.
  absl::Status WalkStep(uint64_t base, uint64_t end, uint64_t budget, uint64_t* scanned_out);
  // Debug builds: checks that no index entry points at a put in segment
  // `id` (bytes up to `end`) before it is deleted unread.
  void VerifyNothingLive(uint64_t id, uint64_t end);
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
  SegmentUsageTable usage_;
  std::vector<Undo> undo_;
  // Tombstones that were a key's newest record during replay.
  std::vector<std::pair<uint32_t, uint64_t>> replay_tombstones_;
  uint64_t next_version_ = 1;
  absl::Time next_sync_ = absl::InfiniteFuture();
  bool closed_ = true;  // until Recover() succeeds
  LogRecoveryStats recovery_;
  double recovery_seconds_ = 0;
  RecoveryInfo recovered_;

  std::unique_ptr<CheckpointJob> ckpt_;
  CheckpointStats ckpt_stats_;
  absl::Time next_checkpoint_ = absl::InfiniteFuture();
  uint64_t checkpointed_tail_ = 0;  // log tail covered by the newest one

  std::optional<double> forced_ratio_;  // a Compact()/StartCompaction pass
  std::optional<uint64_t> victim_;      // segment being compacted
  struct Finishing {
    uint64_t id;
    uint64_t durable_at;  // the log tail when its scan ended
    uint64_t bytes;       // its file size
  };
  std::vector<Finishing> finishing_;  // scanned, awaiting a log sync
  uint64_t victim_offset_ = 0;          // next record to look at in it
  // A victim compacted by walking the index instead of reading it: the
  // next bucket to look at.
  bool victim_by_walk_ = false;
  uint64_t walk_bucket_ = 0;
  std::vector<std::pair<uint32_t, uint64_t>> walk_entries_;
  uint64_t tail_at_last_step_ = 0;
  uint64_t appended_bytes_ = 0;         // foreground record bytes, for pacing
  uint64_t appended_at_last_step_ = 0;
  double compaction_credit_ = 0;        // bytes the pacing allows to scan
  uint64_t written_since_look_ = 0;  // see Tick()
  uint64_t requests_since_tick_ = 0;  // Get/Scan/ApplyBatch calls
  bool look_now_ = true;
  bool pick_pending_ = false;
  // After a failed step, automatic compaction waits until then (a forced
  // pass ends at its first failure), so a persistent error neither spins
  // the worker nor floods the log.
  absl::Time compaction_retry_at_ = absl::InfinitePast();
  bool over_space_limit_ = false;
  bool idle_tick_ = false;  // the Tick() running now had no request before it
  absl::Time last_write_ = absl::InfinitePast();  // the last ApplyBatch
  double victim_dead_fraction_ = 1;  // the victim's DeadRatio() when picked
  absl::flat_hash_set<uint64_t> bad_segments_;  // damaged: not compacted
  CompactionStats compaction_;
  absl::Status last_checkpoint_status_;
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_PARTITION_H_
