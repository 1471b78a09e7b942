#include "worker/partition.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "worker/key_hash.h"
#include "worker/coding.h"
#include "worker/crc32c.h"
#include "worker/record.h"

namespace segkv::worker {
namespace {

using format::RecordType;

// Decodes the header of a record already known to be valid (CRC-checked at
// recovery or written by this process).
RecordHeader PeekHeader(const char* p) {
  RecordHeader h;
  h.type = static_cast<RecordType>(p[format::kRecType]);
  h.key_len = DecodeFixed16(p + format::kRecKeyLen);
  h.value_len = DecodeFixed32(p + format::kRecValueLen);
  h.seq = DecodeFixed64(p + format::kRecSeq);
  h.prev_address = DecodeFixed64(p + format::kRecPrevAddress);
  return h;
}

}  // namespace

struct Partition::CheckpointJob {
  enum Stage { kAllocating, kReady, kFilled, kWritten, kCancelled };

  absl::Mutex mu;
  Stage stage ABSL_GUARDED_BY(mu) = kAllocating;
  uint64_t want = 0;  // buffer bytes to map
  std::unique_ptr<CheckpointBuffer> buffer;
  uint64_t size = 0;  // file bytes in the buffer
  CheckpointInfo info;
  absl::Status status;  // of the background write
  double write_seconds = 0;
  std::thread thread;

  // The background thread: maps the buffer, waits for the owner to fill
  // it, writes the file atomically.
  void Run(FileSystem* fs, const std::string& dir,
           const std::function<void()>& wake) {
    for (;;) {
      Stage st;
      {
        absl::MutexLock l(&mu);
        mu.Await(absl::Condition(
            +[](Stage* s) { return *s == kAllocating || *s == kFilled || *s == kCancelled; },
            &stage));
        st = stage;
      }
      if (st == kCancelled) return;
      if (st == kAllocating) {
        buffer.reset();
        auto b = std::make_unique<CheckpointBuffer>(want);
        absl::MutexLock l(&mu);
        buffer = std::move(b);
        stage = kReady;
      } else {
        const absl::Time t0 = absl::Now();
        info.crc = SealCheckpoint(buffer->data(), size);
        absl::Status s = WriteFileAtomically(
            fs, dir, CheckpointFileName(info.id),
            absl::string_view(buffer->data(), size));
        buffer.reset();  // give the memory back before the owner looks
        absl::MutexLock l(&mu);
        status = s;
        write_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
        stage = kWritten;
      }
      if (wake) wake();
      if (st == kFilled) return;
    }
  }
};

absl::StatusOr<Durability> ParseDurability(absl::string_view name) {
  if (name == "always") return Durability::kAlways;
  if (name == "interval") return Durability::kInterval;
  if (name == "none") return Durability::kNone;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown durability \"", name, "\" (want always, interval or none)"));
}

absl::string_view DurabilityName(Durability d) {
  switch (d) {
    case Durability::kAlways:
      return "always";
    case Durability::kInterval:
      return "interval";
    case Durability::kNone:
      return "none";
  }
  return "?";
}

Partition::Partition(const PartitionOptions& options) : options_(options) {}

Partition::~Partition() {
  if (absl::Status s = Close(); !s.ok()) {
    LOG(ERROR) << "closing partition " << options_.partition_id << ": " << s;
  }
}

absl::Status ValidatePartitionOptions(const PartitionOptions& options) {
  if (options.max_value_size > format::kMaxValueSizeLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max value size ", options.max_value_size, " exceeds the format's ",
        format::kMaxValueSizeLimit));
  }
  if (options.sync_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("sync interval must be positive");
  }
  if (options.checkpoints_to_keep < 1 || !(options.compaction_dead_ratio >= 0) ||
      !(options.compaction_work_ratio > 0 && options.compaction_work_ratio <= 1000) ||
      options.compaction_min_step == 0 ||
      !(options.compaction_space_limit == 0 || options.compaction_space_limit > 1) ||
      !(options.compaction_min_age_segments >= 0 && options.compaction_min_age_segments <= 1000) ||
      options.compaction_quiet_period < absl::ZeroDuration() ||
      options.checkpoint_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "checkpoints_to_keep must be >= 1, compaction ratios >= 0 (work in (0, 1000]), "
        "compaction min step > 0, space limit 0 or > 1, compaction min age in [0, 1000] "
        "segments, quiet period and checkpoint interval >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Partition>> Partition::Open(
    const PartitionOptions& options) {
  if (absl::Status s = ValidatePartitionOptions(options); !s.ok()) return s;
  std::unique_ptr<Partition> p(new Partition(options));
  if (absl::Status s = p->Recover(); !s.ok()) return s;
  return p;
}

absl::Status Partition::Recover() {
  const absl::Time start = absl::Now();
  LogOptions lo;
  lo.fs = options_.fs != nullptr ? options_.fs : DefaultFileSystem();
  lo.dir = options_.dir;
  lo.partition = options_.partition_id;
  lo.segment_size = options_.segment_size;
  lo.max_value_size = options_.max_value_size;
  lo.buffer_size = options_.write_buffer_size;
  lo.max_unsynced_bytes = options_.max_unsynced_bytes;
  lo.remove_in_background = options_.remove_in_background;
  log_ = std::make_unique<Log>(lo);
  if (absl::Status s = log_->Open(&recovery_); !s.ok()) return s;

  // A checkpoint is written only after the log below its covered address
  // was synced. A log that no longer reaches that far lost synced records,
  // which no older checkpoint or full replay would bring back: DATA_LOSS,
  // not a silent fallback. (The newest covers the most.)
  const std::vector<CheckpointInfo> checkpoints = log_->checkpoints();
  if (!checkpoints.empty()) {
    if (absl::Status s = log_->CheckReplayStart(checkpoints.back().covered_address);
        !s.ok()) {
      return absl::DataLossError(absl::StrCat(
          "checkpoint ", checkpoints.back().id, " covers the log up to address ",
          checkpoints.back().covered_address,
          ", which was synced before it was written, but the log is shorter: ",
          s.message()));
    }
  }
  // The newest checkpoint that loads whole; else the next older; else none.
  uint64_t replay_from = 0;
  std::vector<uint64_t> rejected;
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend(); ++it) {
    const absl::Time t0 = absl::Now();
    absl::Status s = LoadCheckpoint(*it);
    if (s.ok()) {
      recovered_.checkpoint_id = it->id;
      recovered_.load_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
      replay_from = it->covered_address;
      checkpointed_tail_ = it->covered_address;
      ckpt_stats_.last = *it;
      break;
    }
    ++recovered_.checkpoints_rejected;
    // Damaged or missing: it would fail the same way every time. Other
    // errors (a failed read or mapping, a newer format) may pass: kept.
    if (s.code() == absl::StatusCode::kDataLoss || s.code() == absl::StatusCode::kNotFound) {
      rejected.push_back(it->id);
    }
    ResetState();
    LOG(WARNING) << "partition " << options_.partition_id << ": checkpoint "
                 << it->id << " is unusable (" << s << "); falling back to "
                 << (std::next(it) != checkpoints.rend()
                         ? absl::StrCat("checkpoint ", std::next(it)->id)
                         : std::string("a full replay of the log"));
  }
  recovered_.start_address = replay_from;
  absl::Status s = log_->Replay(
      replay_from,
      [this](absl::Span<const Log::ScannedRecord> records) {
        return ReplayRecords(records);
      },
      &recovery_);
  if (!s.ok()) return s;
  // Tombstones only stood in the index so that replay could tell newer
  // from older; a deleted key has no entry.
  for (const auto& [fp, address] : replay_tombstones_) {
    index_.ReplaceExact(fp, address, 0);
  }
  replay_tombstones_ = {};
  // Versions never go back, even when compaction dropped the tombstone
  // that carried the newest one after the last checkpoint.
  next_version_ = std::max(next_version_, log_->version_floor());
  // A damaged or missing checkpoint would only be tried (and fail) again,
  // and it would hold a place in the MANIFEST that the next checkpoint
  // takes from a good one: drop it. If its MANIFEST write fails before the
  // rename, it stays listed (logged); after the rename the log has failed,
  // and the open fails with it rather than serve a log that refuses writes.
  for (uint64_t id : rejected) {
    if (absl::Status d = log_->DropCheckpoint(id); !d.ok()) {
      LOG(WARNING) << "partition " << options_.partition_id
                   << ": cannot drop unusable checkpoint " << id << ": " << d;
    }
  }
  if (!log_->failure().ok()) return log_->failure();
  if (options_.durability == Durability::kInterval) {
    next_sync_ = absl::Now() + options_.sync_interval;
  }
  if (options_.checkpoint_interval > absl::ZeroDuration()) {
    next_checkpoint_ = absl::Now() + options_.checkpoint_interval;
  }
  tail_at_last_step_ = log_->tail();
  recovery_seconds_ = absl::ToDoubleSeconds(absl::Now() - start);
  recovered_.seconds = recovery_seconds_;
  LOG(INFO) << "partition " << options_.partition_id << " recovered in "
            << recovery_seconds_ << " s from "
            << (recovered_.checkpoint_id.has_value()
                    ? absl::StrCat("checkpoint ", *recovered_.checkpoint_id,
                                   " (loaded in ", recovered_.load_seconds,
                                   " s) + replay from address ", replay_from)
                    : std::string("a full replay"))
            << ": " << recovery_.records << " records replayed, "
            << index_.size() << " keys";
  closed_ = false;
  return absl::OkStatus();
}

void Partition::ResetState() {
  index_.Clear();
  usage_.clear();
  next_version_ = 1;
  checkpointed_tail_ = 0;
  ckpt_stats_.last.reset();
}

absl::Status Partition::LoadCheckpoint(const CheckpointInfo& info) {
  if (absl::Status s = log_->CheckReplayStart(info.covered_address); !s.ok()) {
    return s;
  }
  FileSystem* fs = log_->fs();
  const std::string path = JoinPath(log_->dir(), CheckpointFileName(info.id));
  auto size = fs->FileSize(path);
  if (!size.ok()) return size.status();
  if (*size != info.file_size) {
    return absl::DataLossError(absl::StrCat(path, " is ", *size,
                                            " bytes; the MANIFEST says ",
                                            info.file_size));
  }
  auto file = fs->OpenReadable(path, *size);
  if (!file.ok()) return file.status();
  auto data = (*file)->Read(0, *size);
  if (!data.ok()) return data.status();
  // The body CRC is checked while the image is copied into the index (one
  // pass over a file of ~15 bytes per key), before anything is used.
  auto ckpt = ParseCheckpoint(*data, path, /*check_body=*/false);
  if (!ckpt.ok()) return ckpt.status();
  const CheckpointHeader& h = ckpt->header;
  if (ckpt->stored_crc != info.crc || h.id != info.id ||
      h.covered_address != info.covered_address ||
      h.next_version != info.next_version) {
    return absl::DataLossError(
        absl::StrCat(path, " does not match its MANIFEST entry"));
  }
  if (h.partition != options_.partition_id ||
      h.segment_size != log_->segment_size()) {
    return absl::DataLossError(absl::StrCat(
        path, " belongs to partition ", h.partition, " with ", h.segment_size,
        "-byte segments"));
  }
  // With the geometry consistent, LoadImage reads (and CRCs) the whole
  // image whatever it then finds, so a CRC mismatch is reported as such.
  if (absl::Status s = HashIndex::CheckGeometry(h.geometry, ckpt->image.size()); !s.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": ", s.message()));
  }
  uint32_t crc = 0;
  absl::Status loaded = index_.LoadImage(h.geometry, ckpt->image, h.covered_address, &crc);
  crc = crc32c::Extend(crc, ckpt->usage_bytes.data(), ckpt->usage_bytes.size());
  if (crc != ckpt->stored_crc) {
    index_.Clear();  // nothing unverified stays behind
    return absl::DataLossError(absl::StrCat("checkpoint ", path, ": body CRC mismatch"));
  }
  if (!loaded.ok()) return absl::DataLossError(absl::StrCat(path, ": ", loaded.message()));
  // Entries into segments compaction removed after the checkpoint: their
  // records were relocated past covered_address (or superseded there), so
  // the replay puts them back. Only a segment that held live records when
  // the checkpoint was taken can have such entries; without one, there is
  // no need to walk the index.
  bool segments_gone = false;
  ckpt->usage.ForEach([&](uint64_t id, const SegmentUsage& u) {
    segments_gone |= u.live_bytes > 0 && !log_->HasSegment(id);
  });
  if (segments_gone) {
    const uint64_t seg = log_->segment_size();
    std::vector<std::pair<uint32_t, uint64_t>> gone;
    index_.ForEach([&](uint32_t fp, uint64_t address) {
      if (!log_->HasSegment(address / seg)) gone.emplace_back(fp, address);
    });
    for (const auto& [fp, address] : gone) index_.ReplaceExact(fp, address, 0);
    recovered_.entries_dropped = gone.size();
  }
  usage_ = std::move(ckpt->usage);
  for (uint64_t id = usage_.begin_id(), end = usage_.end_id(); id < end; ++id) {
    if (!log_->HasSegment(id)) usage_.Remove(id);
  }
  next_version_ = h.next_version;
  return absl::OkStatus();
}

SegmentUsage& Partition::UsageOf(uint64_t address) {
  const uint64_t id = address / log_->segment_size();
  return usage_.At(id);
}

absl::Status Partition::ReplayRecords(
    absl::Span<const Log::ScannedRecord> records) {
  // Replay is bound by two cache misses per record (its bucket, and the
  // record the bucket points at, when the key is already known): start all
  // the bucket loads of the run, then all the record loads, so they overlap.
  uint32_t fps[64];
  const size_t n = std::min<size_t>(records.size(), 64);
  for (size_t i = 0; i < n; ++i) {
    const auto& r = records[i];
    fps[i] = HashIndex::Fingerprint(KeyHash(
        r.record.substr(format::kRecordHeaderSize, r.header.key_len)));
    index_.Prefetch(fps[i]);
  }
  PrefetchRecordsOf(std::span<const uint32_t>(fps, n));
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const uint32_t fp = i < n ? fps[i]
                              : HashIndex::Fingerprint(KeyHash(r.record.substr(
                                    format::kRecordHeaderSize, r.header.key_len)));
    if (absl::Status s = ReplayRecord(fp, r); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Partition::ReplayRecord(uint32_t fp,
                                     const Log::ScannedRecord& rec) {
  const RecordHeader& h = rec.header;
  const uint64_t address = rec.address;
  absl::string_view key = rec.record.substr(format::kRecordHeaderSize, h.key_len);
  RecordHeader cur;
  auto pos = FindKey(fp, key, &cur);
  if (!pos.ok()) return pos.status();
  if (h.seq >= next_version_) next_version_ = h.seq + 1;
  UsageOf(address).total_bytes += h.size();
  if (h.type != RecordType::kPut) UsageOf(address).tombstone_bytes += h.size();
  // The newest version wins whatever the order records are met in (a
  // record relocated by compaction keeps its version: the later copy
  // takes over).
  if (pos->found() && cur.seq > h.seq) return absl::OkStatus();
  if (pos->found()) {
    if (cur.type == RecordType::kPut) UsageOf(pos->address).live_bytes -= cur.size();
    index_.Update(*pos, address);
  } else {
    index_.Insert(fp, address);
  }
  if (h.type == RecordType::kPut) {
    UsageOf(address).live_bytes += h.size();
  } else {
    replay_tombstones_.emplace_back(fp, address);
  }
  return absl::OkStatus();
}

absl::StatusOr<HashIndex::Position> Partition::FindKey(uint32_t fp,
                                                       absl::string_view key,
                                                       RecordHeader* h) {
  absl::Status error;
  HashIndex::Position pos = index_.Find(fp, [&](uint64_t address) {
    auto hdr = log_->Read(address, format::kRecordHeaderSize);
    if (!hdr.ok()) {
      error = hdr.status();
      return true;  // stop the search; reported below
    }
    RecordHeader candidate = PeekHeader(hdr->data());
    // The key and value follow; start loading the lines they sit on.
    __builtin_prefetch(hdr->data() + 64);
    __builtin_prefetch(hdr->data() + 128);
    if (candidate.key_len != key.size()) return false;
    auto stored = log_->Read(address + format::kRecordHeaderSize, key.size());
    if (!stored.ok()) {
      error = stored.status();
      return true;
    }
    if (*stored != key) return false;
    *h = candidate;
    return true;
  });
  if (!error.ok()) return error;
  return pos;
}

absl::Status Partition::ValidateKey(absl::string_view key) const {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.size() > format::kMaxKeySize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key is ", key.size(), " bytes; the limit is ", format::kMaxKeySize));
  }
  return absl::OkStatus();
}

absl::Status Partition::Get(absl::string_view key, ReadResult* out) {
  ++requests_since_tick_;
  out->found = false;
  out->version = 0;
  out->value.clear();
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  RecordHeader h;
  auto pos = FindKey(HashIndex::Fingerprint(KeyHash(key)), key, &h);
  if (!pos.ok()) return pos.status();
  if (!pos->found()) return absl::OkStatus();
  auto value = log_->Read(pos->address + format::kRecordHeaderSize + h.key_len,
                          h.value_len);
  if (!value.ok()) return value.status();
  out->found = true;
  out->version = h.seq;
  out->value.assign(value->data(), value->size());
  return absl::OkStatus();
}

WriteResult Partition::ApplyOne(const WriteOp& op) {
  WriteResult r;
  if (r.status = ValidateKey(op.key); !r.status.ok()) return r;
  const bool put = op.type == WriteOp::Type::kPut;
  if (put && op.value.size() > options_.max_value_size) {
    r.status = absl::InvalidArgumentError(
        absl::StrCat("value is ", op.value.size(), " bytes; the limit is ",
                     options_.max_value_size));
    return r;
  }
  const uint32_t fp = HashIndex::Fingerprint(KeyHash(op.key));
  index_.Prefetch(fp);
  // Copy the record to the tail while the bucket loads; its version,
  // previous address and CRC follow once the lookup is done. If the op
  // turns out to write nothing, the bytes are dropped again.
  absl::string_view value = put ? op.value : absl::string_view();
  const uint64_t size = RecordSize(op.key.size(), value.size());
  const uint64_t address = log_->Append(size);
  EncodeRecordBody(put ? RecordType::kPut : RecordType::kDelete, op.key, value,
                   log_->BufferAt(address));
  auto drop = [&] { log_->TruncateTo(address).IgnoreError(); };

  RecordHeader cur;
  auto pos = FindKey(fp, op.key, &cur);
  if (!pos.ok()) {
    drop();
    r.status = pos.status();
    return r;
  }
  r.existed = pos->found();
  r.previous_version = r.existed ? cur.seq : 0;
  if (op.expected_version.has_value() &&
      *op.expected_version != r.previous_version) {
    drop();
    r.status = absl::FailedPreconditionError(
        absl::StrCat("version mismatch: expected ", *op.expected_version,
                     ", current ", r.previous_version));
    return r;
  }
  if (op.return_previous && r.existed && op.previous_budget != nullptr) {
    const int64_t n = cur.value_len;
    if (op.previous_budget->fetch_sub(n, std::memory_order_relaxed) < n) {
      op.previous_budget->fetch_add(n, std::memory_order_relaxed);
      drop();
      r.status = absl::InvalidArgumentError(absl::StrCat(
          "the previous values asked for do not fit in one response "
          "(--max_message_bytes); this op (previous value ", n,
          " bytes) was not applied"));
      return r;
    }
  }
  if (op.return_previous && r.existed) {
    auto old = log_->Read(
        pos->address + format::kRecordHeaderSize + cur.key_len, cur.value_len);
    if (!old.ok()) {
      if (op.previous_budget != nullptr) {
        op.previous_budget->fetch_add(cur.value_len, std::memory_order_relaxed);
      }
      drop();
      r.status = old.status();
      return r;
    }
    r.previous_value.assign(old->data(), old->size());
  }
  if (!put && !r.existed) {  // nothing to delete
    drop();
    return r;
  }

  FinishRecord(next_version_, pos->address, size, log_->BufferAt(address));
  r.version = next_version_++;
  UsageOf(address).total_bytes += size;
  if (r.existed) UsageOf(pos->address).live_bytes -= cur.size();
  if (put) {
    UsageOf(address).live_bytes += size;
    if (r.existed) {
      index_.Update(*pos, address);
    } else {
      index_.Insert(fp, address);
    }
  } else {
    UsageOf(address).tombstone_bytes += size;
    index_.Erase(*pos);
  }
  appended_bytes_ += size;
  undo_.push_back(Undo{fp, put ? address : 0, pos->address,
                       r.existed ? cur.size() : 0, size});
  return r;
}

void Partition::Rollback(uint64_t group_start_address,
                         uint64_t group_start_version) {
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
    const Undo& u = *it;
    const uint64_t new_address = group_start_address;  // any address in the group
    SegmentUsage& usage = UsageOf(new_address);
    usage.total_bytes -= u.new_size;
    appended_bytes_ -= u.new_size;
    if (u.new_address != 0) {
      usage.live_bytes -= u.new_size;
      index_.ReplaceExact(u.fp, u.new_address, u.old_address);
    } else {
      usage.tombstone_bytes -= u.new_size;
      index_.Insert(u.fp, u.old_address);
    }
    if (u.old_address != 0) UsageOf(u.old_address).live_bytes += u.old_size;
  }
  undo_.clear();
  next_version_ = group_start_version;
  // If this fails the log is in its failed state and refuses writes anyway.
  log_->TruncateTo(group_start_address).IgnoreError();
}

absl::Status Partition::MaybeIntervalSync() {
  if (options_.durability != Durability::kInterval) return absl::OkStatus();
  const absl::Time now = absl::Now();
  if (now < next_sync_) return absl::OkStatus();
  next_sync_ = now + options_.sync_interval;
  return log_->Sync();
}

absl::Status Partition::ApplyBatch(std::span<const WriteOp> ops,
                                   std::vector<WriteResult>* results) {
  results->clear();
  results->resize(ops.size());
  return ApplyOps(ops, results->data());
}

absl::Status Partition::ApplyOps(std::span<const WriteOp> ops,
                                 WriteResult* results) {
  ++requests_since_tick_;
  last_write_ = absl::Now();
  auto fail_from = [&](size_t first, const absl::Status& s) {
    for (size_t k = first; k < ops.size(); ++k) {
      // An op undone (or never run) returns no previous value: give back
      // what it took from its response's budget.
      if (ops[k].previous_budget != nullptr && !results[k].previous_value.empty()) {
        ops[k].previous_budget->fetch_add(
            static_cast<int64_t>(results[k].previous_value.size()),
            std::memory_order_relaxed);
      }
      results[k] = WriteResult{};
      results[k].status = s;
    }
    return s;
  };
  if (closed_) return fail_from(0, absl::UnavailableError("partition is closed"));
  if (!log_->failure().ok()) return fail_from(0, log_->failure());

  size_t i = 0;
  while (i < ops.size()) {
    if (absl::Status s = MaybeIntervalSync(); !s.ok()) return fail_from(i, s);
    // A group is the longest run of ops that surely fits in the active
    // segment, so that a record never spans segments and a failed commit
    // only has the active segment's unsynced tail to undo.
    const uint64_t room = log_->SpaceLeft();
    uint64_t need = 0;
    size_t j = i;
    for (; j < ops.size(); ++j) {
      const WriteOp& op = ops[j];
      const bool put = op.type == WriteOp::Type::kPut;
      uint64_t max_size = 0;
      if (!op.key.empty() && op.key.size() <= format::kMaxKeySize &&
          (!put || op.value.size() <= options_.max_value_size)) {
        max_size = RecordSize(op.key.size(), put ? op.value.size() : 0);
      }
      if (need + max_size > room) break;
      // Keep each group within the log's unsynced-bytes bound (one op at
      // least): recovery's torn-write window assumes it.
      if (j > i && options_.max_unsynced_bytes > 0 &&
          need + max_size > options_.max_unsynced_bytes) {
        break;
      }
      need += max_size;
    }
    if (j == i) {
      if (absl::Status s = log_->Seal(); !s.ok()) return fail_from(i, s);
      continue;
    }
    const uint64_t group_address = log_->tail();
    const uint64_t group_version = next_version_;
    undo_.clear();
    // Overlap the cache misses of the lookups, 64 ops at a time.
    for (size_t c = i; c < j; c += 64) {
      const size_t end = std::min(j, c + 64);
      absl::string_view keys[64];
      size_t nkeys = 0;
      for (size_t k = c; k < end; ++k) keys[nkeys++] = ops[k].key;
      Prefetch(std::span<const absl::string_view>(keys, nkeys));
      for (size_t k = c; k < end; ++k) results[k] = ApplyOne(ops[k]);
    }
    absl::Status commit = options_.durability == Durability::kAlways
                              ? log_->Sync()
                              : log_->FlushIfFull();
    if (!commit.ok()) {
      Rollback(group_address, group_version);
      return fail_from(i, commit);
    }
    undo_.clear();
    i = j;
  }
  return absl::OkStatus();
}

absl::StatusOr<WriteResult> Partition::Write(const WriteOp& op) {
  WriteResult result;
  ApplyOps(std::span<const WriteOp>(&op, 1), &result).IgnoreError();
  if (!result.status.ok()) return result.status;
  return result;
}

absl::StatusOr<WriteResult> Partition::Put(absl::string_view key,
                                           absl::string_view value) {
  return Write(WriteOp::Put(key, value));
}

absl::StatusOr<WriteResult> Partition::Delete(absl::string_view key) {
  return Write(WriteOp::Delete(key));
}

void Partition::Prefetch(std::span<const absl::string_view> keys) {
  uint32_t fps[64];
  const size_t n = std::min<size_t>(keys.size(), 64);
  for (size_t i = 0; i < n; ++i) {
    fps[i] = HashIndex::Fingerprint(KeyHash(keys[i]));
    index_.Prefetch(fps[i]);
  }
  PrefetchRecordsOf(std::span<const uint32_t>(fps, n));
}

void Partition::PrefetchRecordAt(uint64_t address) {
  auto rec = log_->Read(address, format::kRecordHeaderSize);
  if (rec.ok()) __builtin_prefetch(rec->data());
}

void Partition::PrefetchRecordsOf(std::span<const uint32_t> fps) {
  // The first candidate is the key but for a 32-bit fingerprint collision:
  // stop there. About one entry in ten lives in an overflow node, each a
  // cache miss of its own; walking the chains one at a time serialised
  // those misses, so every pass below moves each unfinished chain on by
  // one node.
  constexpr size_t kMax = 64;
  uint32_t chase_fp[kMax];
  uint32_t chase_next[kMax];
  for (size_t first = 0; first < fps.size(); first += kMax) {
    const size_t end = std::min(fps.size(), first + kMax);
    size_t m = 0;
    for (size_t i = first; i < end; ++i) {
      uint32_t next = 0;
      const uint64_t a = index_.ProbeBucket(fps[i], &next);
      if (a != 0) {
        PrefetchRecordAt(a);
      } else if (next != 0) {
        chase_fp[m] = fps[i];
        chase_next[m++] = next;
      }
    }
    while (m > 0) {
      size_t k = 0;
      for (size_t i = 0; i < m; ++i) {
        const uint64_t a = index_.ProbeNode(chase_fp[i], &chase_next[i]);
        if (a != 0) {
          PrefetchRecordAt(a);
        } else if (chase_next[i] != 0) {
          chase_fp[k] = chase_fp[i];
          chase_next[k++] = chase_next[i];
        }
      }
      m = k;
    }
  }
}

absl::StatusOr<uint64_t> Partition::Scan(uint64_t cursor,
                                          absl::string_view prefix,
                                          size_t limit, bool keys_only,
                                          uint64_t max_scan_bytes,
                                          std::vector<ScanItem>* out,
                                          uint64_t* scanned_bytes) {
  ++requests_since_tick_;
  uint64_t address = log_->Skip(cursor == 0 ? log_->First() : cursor);
  uint64_t scanned = 0;
  size_t found = 0;
  // Only an address the client gave may be "no record here" (a bad
  // cursor); one Skip() moved to (past a removed segment) is the log's.
  bool first = cursor != 0 && address == cursor;
  while (address < log_->tail() && found < limit && scanned < max_scan_bytes) {
    RecordHeader h;
    absl::string_view rec;
    if (absl::Status s = log_->RecordAt(address, &h, &rec); !s.ok()) {
      // At an address the scan reached by itself, no record means damage.
      if (!first && s.code() == absl::StatusCode::kInvalidArgument) {
        return absl::DataLossError(s.message());
      }
      return s;
    }
    first = false;
    absl::string_view key = rec.substr(format::kRecordHeaderSize, h.key_len);
    if (h.type == RecordType::kPut && absl::StartsWith(key, prefix)) {
      RecordHeader cur;
      auto pos = FindKey(HashIndex::Fingerprint(KeyHash(key)), key, &cur);
      if (!pos.ok()) return pos.status();
      if (pos->found() && pos->address == address) {
        ScanItem item;
        item.key.assign(key.data(), key.size());
        if (!keys_only) {
          absl::string_view value = rec.substr(format::kRecordHeaderSize + h.key_len);
          item.value.assign(value.data(), value.size());
        }
        item.version = h.seq;
        item.address = address;
        out->push_back(std::move(item));
        ++found;
      }
    }
    scanned += h.size();
    address = log_->Skip(address + h.size());
  }
  // The cursor this returns comes back as a client's address, where "no
  // record here" means a bad cursor. So a page that ends right before a
  // damaged record reports the damage now, as one that ran into it would.
  if (scanned > 0 && address < log_->tail()) {
    RecordHeader h;
    absl::string_view rec;
    if (absl::Status s = log_->RecordAt(address, &h, &rec); !s.ok()) {
      if (s.code() == absl::StatusCode::kInvalidArgument) {
        return absl::DataLossError(s.message());
      }
      return s;
    }
  }
  if (scanned_bytes != nullptr) *scanned_bytes = scanned;
  return address >= log_->tail() ? 0 : address;
}

absl::Status Partition::Sync() {
  if (closed_) return absl::UnavailableError("partition is closed");
  return log_->Sync();
}

absl::Status Partition::Tick() {
  if (closed_) return absl::OkStatus();
  absl::Status sync = MaybeIntervalSync();
  if (ckpt_ != nullptr) {
    AdvanceCheckpoint(/*wait=*/false);
  } else if (absl::Now() >= next_checkpoint_) {
    next_checkpoint_ = absl::Now() + options_.checkpoint_interval;
    if (log_->tail() != checkpointed_tail_) {
      if (absl::Status s = StartCheckpoint(); !s.ok()) {
        LOG_EVERY_N(ERROR, 10) << "partition " << options_.partition_id
                               << ": cannot start a checkpoint: " << s;
      }
    }
  }
  // Compaction pacing (see PartitionOptions::compaction_work_ratio and
  // compaction_space_limit).
  const uint64_t written = appended_bytes_ - appended_at_last_step_;
  appended_at_last_step_ = appended_bytes_;
  // Idle: no request at all since the last Tick (a batch of reads is not
  // idle time; it just earns no compaction credit).
  const bool idle = requests_since_tick_ == 0;
  idle_tick_ = idle;
  requests_since_tick_ = 0;
  if (!finishing_.empty() && log_->failure().ok() && absl::Now() >= compaction_retry_at_) {
    // Compacted segments whose copies the log has since synced go; an
    // idle Tick syncs for the rest.
    if (absl::Status s = RemoveFinished(/*force=*/idle); !s.ok()) CompactionFailed(s);
  }
  const double step = static_cast<double>(options_.compaction_min_step);
  double ratio = options_.compaction_work_ratio;
  // Looking for a victim and measuring the space amplification walk every
  // segment: while busy, once per compaction_min_step bytes written (and
  // right after a victim is done), not after every batch.
  written_since_look_ += written;
  if (!idle && (look_now_ || written_since_look_ >= options_.compaction_min_step)) {
    written_since_look_ = 0;
    look_now_ = false;
    over_space_limit_ = OverSpaceLimit();
    pick_pending_ = true;
  }
  if (over_space_limit_ && !idle) {
    // Keep up: scanning S bytes of the victim frees S x its dead fraction
    // (as it was when picked: relocating its live records as the scan
    // goes lowers what its usage says is live). Before a victim is picked,
    // the least dead one could be is the threshold.
    const double dead = victim_.has_value()
                            ? victim_dead_fraction_
                            : std::min(options_.compaction_dead_ratio, 1.0);
    ratio = std::max(ratio, 1.0 / std::max(dead, 0.05));
  }
  // Credit beyond a few steps is not banked: a burst of writes after a
  // quiet spell must not be met by a burst of compaction.
  compaction_credit_ = std::min(compaction_credit_ + static_cast<double>(written) * ratio,
                                std::max(4 * step, 2.0 * static_cast<double>(written) * ratio));
  const bool forced = forced_ratio_.has_value();
  uint64_t budget =
      idle ? options_.compaction_min_step
           : (compaction_credit_ >= step ? static_cast<uint64_t>(compaction_credit_) : 0);
  // A pass an operator asked for advances at least a step per Tick, busy
  // or not (bounded work per batch), so it ends under any load.
  if (forced) budget = std::max(budget, options_.compaction_min_step);
  bool work = budget > 0 && (victim_.has_value() || forced) &&
              (forced || absl::Now() >= compaction_retry_at_);
  if (!work && budget > 0 && !forced && options_.compaction_dead_ratio <= 1.0 &&
      absl::Now() >= compaction_retry_at_ && (idle || pick_pending_)) {
    work = true;
    pick_pending_ = false;
  }
  if (work) {
    uint64_t scanned = 0;
    absl::Status s = CompactionStep(budget, &scanned);
    compaction_credit_ = std::max(0.0, compaction_credit_ - static_cast<double>(scanned));
    if (!s.ok()) CompactionFailed(s);
  }
  return sync;
}

void Partition::CompactionFailed(const absl::Status& s) {
  ++compaction_.errors;
  compaction_.last_error = std::string(s.message());
  compaction_.last_error_code = s.code();
  compaction_retry_at_ = absl::Now() + options_.compaction_retry_delay;
  forced_ratio_.reset();  // a forced pass ends here; the caller sees the error
  // The victim is let go too (so compaction_running() turns false): what it
  // relocated so far stays relocated, and a later pass rescans it from the
  // start, skipping those records as dead.
  victim_.reset();
  compaction_.current.reset();
  LOG_EVERY_N(ERROR, 10) << "partition " << options_.partition_id << " compaction: " << s;
}

bool Partition::HasBackgroundWork() const {
  if (closed_) return false;
  if (forced_ratio_.has_value() ||
      ((victim_.has_value() || !finishing_.empty() ||
        (options_.compaction_dead_ratio <= 1.0 &&
         PickVictim(options_.compaction_dead_ratio, YoungSegmentsWait(/*idle_tick=*/true))
             .has_value())) &&
       absl::Now() >= compaction_retry_at_)) {
    return log_->failure().ok();
  }
  if (ckpt_ == nullptr) return false;
  absl::MutexLock l(&ckpt_->mu);
  return ckpt_->stage == CheckpointJob::kReady ||
         ckpt_->stage == CheckpointJob::kWritten;
}

absl::Status Partition::Close() {
  if (closed_) return absl::OkStatus();
  while (ckpt_ != nullptr) AdvanceCheckpoint(/*wait=*/true);
  if (absl::Status s = RemoveFinished(/*force=*/true); !s.ok()) {
    // The segments stay; the next open compacts them again (all dead).
    LOG(WARNING) << "partition " << options_.partition_id
                 << ": compacted segments not deleted at close: " << s;
  }
  const bool written = next_version_ > 1;  // ever, by anyone
  if (options_.checkpoint_on_close && written && log_->failure().ok() &&
      log_->tail() != checkpointed_tail_) {
    // Failure here costs the next open a longer replay, nothing else.
    if (auto c = Checkpoint(); !c.ok()) {
      LOG(WARNING) << "partition " << options_.partition_id
                   << ": no checkpoint at close: " << c.status();
    }
  }
  closed_ = true;
  return log_->Sync();
}

// ---- Checkpoints ----

absl::Status Partition::StartCheckpoint() {
  if (closed_) return absl::UnavailableError("partition is closed");
  if (ckpt_ != nullptr) return absl::OkStatus();
  if (!log_->failure().ok()) return log_->failure();
  ckpt_ = std::make_unique<CheckpointJob>();
  CheckpointHeader estimate;
  estimate.geometry = index_.geometry();
  estimate.usage_count = CountUsageEntries(usage_) + 16;
  const uint64_t size = CheckpointFileSize(estimate);
  // Room for what the index may grow by before the copy.
  ckpt_->want = size + size / 16 + (1 << 20);
  CheckpointJob* job = ckpt_.get();
  job->thread = std::thread([job, fs = log_->fs(), dir = log_->dir(),
                             wake = options_.wake] { job->Run(fs, dir, wake); });
  return absl::OkStatus();
}

void Partition::AdvanceCheckpoint(bool wait) {
  CheckpointJob* job = ckpt_.get();
  CheckpointJob::Stage stage;
  {
    absl::MutexLock l(&job->mu);
    if (wait) {
      job->mu.Await(absl::Condition(
          +[](CheckpointJob::Stage* s) {
            return *s == CheckpointJob::kReady || *s == CheckpointJob::kWritten;
          },
          &job->stage));
    }
    stage = job->stage;
  }
  if (stage == CheckpointJob::kReady) {
    absl::Status s = log_->failure();
    if (s.ok() && job->buffer->data() == nullptr) {
      s = absl::ResourceExhaustedError(
          absl::StrCat("cannot map ", job->want, " bytes for a checkpoint"));
    }
    // Everything the checkpoint covers must be durable before it exists.
    if (s.ok()) {
      const absl::Time t0 = absl::Now();
      s = log_->Sync();
      ckpt_stats_.last_sync_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    }
    if (!s.ok()) {
      {
        absl::MutexLock l(&job->mu);
        job->stage = CheckpointJob::kCancelled;
      }
      job->thread.join();
      FinishCheckpoint(s);
      return;
    }
    CheckpointHeader h;
    h.partition = options_.partition_id;
    h.segment_size = log_->segment_size();
    h.id = log_->TakeCheckpointId();
    h.covered_address = log_->tail();
    h.next_version = next_version_;
    h.created_ms = absl::ToUnixMillis(absl::Now());
    h.geometry = index_.geometry();
    h.usage_count = CountUsageEntries(usage_);
    const uint64_t size = CheckpointFileSize(h);
    absl::MutexLock l(&job->mu);
    if (size > job->buffer->capacity()) {
      job->want = size + size / 8;  // the index outgrew it: map a bigger one
      job->stage = CheckpointJob::kAllocating;
      return;
    }
    const absl::Time t0 = absl::Now();
    BuildCheckpoint(&h, index_, usage_, job->buffer->data());
    ckpt_stats_.last_copy_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    job->size = size;
    job->info = CheckpointInfo{.id = h.id,
                               .covered_address = h.covered_address,
                               .next_version = h.next_version,
                               .file_size = size,
                               .created_ms = h.created_ms};
    job->stage = CheckpointJob::kFilled;
    return;
  }
  if (stage == CheckpointJob::kWritten) {
    job->thread.join();
    ckpt_stats_.last_write_seconds = job->write_seconds;
    absl::Status s = job->status;
    // Recorded in the manifest only once the file is durable.
    if (s.ok()) s = log_->AddCheckpoint(job->info, options_.checkpoints_to_keep);
    // Not recorded: the file (if its rename happened) is of no use, and the
    // retry would need room for a second copy on a disk that may be full.
    // After a failed MANIFEST rename (the log has failed) the MANIFEST on
    // disk may list it: leave it for the next Open() to decide.
    if (!s.ok() && log_->failure().ok()) {
      if (absl::Status r = log_->RemoveUnlistedCheckpoint(job->info.id); !r.ok()) {
        LOG(WARNING) << "partition " << options_.partition_id
                     << ": removing unrecorded checkpoint " << job->info.id << ": " << r;
      }
    }
    FinishCheckpoint(s);
  }
}

void Partition::FinishCheckpoint(const absl::Status& s) {
  if (s.ok()) {
    ++ckpt_stats_.taken;
    ckpt_stats_.last = ckpt_->info;
    checkpointed_tail_ = ckpt_->info.covered_address;
  } else {
    ++ckpt_stats_.failed;
    ckpt_stats_.last_error = std::string(s.message());
    LOG(ERROR) << "partition " << options_.partition_id << ": checkpoint failed: " << s;
  }
  last_checkpoint_status_ = s;
  ckpt_.reset();
}

absl::StatusOr<CheckpointInfo> Partition::Checkpoint() {
  while (ckpt_ != nullptr) AdvanceCheckpoint(/*wait=*/true);
  if (absl::Status s = StartCheckpoint(); !s.ok()) return s;
  while (ckpt_ != nullptr) AdvanceCheckpoint(/*wait=*/true);
  if (!last_checkpoint_status_.ok()) return last_checkpoint_status_;
  return *ckpt_stats_.last;
}

// ---- Compaction ----

bool Partition::HasOlderSegment(uint64_t id) const {
  const std::vector<SegmentInfo> segments = log_->Segments();
  return !segments.empty() && segments.front().id < id;
}

bool Partition::NothingToKeep(uint64_t id) const {
  const SegmentUsage u = usage_.Get(id);
  return u.total_bytes > 0 && u.live_bytes == 0 &&
         (u.tombstone_bytes == 0 || !HasOlderSegment(id));
}

void Partition::VerifyNothingLive(uint64_t id, uint64_t end) {
  const uint64_t base = id * log_->segment_size();
  for (uint64_t off = format::kSegmentHeaderSize; off < end;) {
    RecordHeader h;
    absl::string_view rec;
    if (!log_->RecordAt(base + off, &h, &rec).ok()) return;  // damage: not our question
    if (h.type == RecordType::kPut) {
      const uint64_t address = base + off;
      const uint32_t fp =
          HashIndex::Fingerprint(KeyHash(rec.substr(format::kRecordHeaderSize, h.key_len)));
      CHECK(!index_.Find(fp, [address](uint64_t a) { return a == address; }).found())
          << "segment " << id << " has a live record at offset " << off
          << " that compaction was about to delete";
    }
    off += h.size();
  }
}

bool Partition::YoungSegmentsWait(bool idle_tick) const {
  if (forced_ratio_.has_value() || over_space_limit_) return false;
  return !idle_tick || absl::Now() - last_write_ < options_.compaction_quiet_period;
}

bool Partition::OverSpaceLimit() const {
  if (options_.compaction_space_limit <= 0) return false;
  uint64_t total = 0, live = 0;
  usage_.ForEach([&](uint64_t, const SegmentUsage& u) {
    total += u.total_bytes;
    live += u.live_bytes;
  });
  // One segment of slack: the active segment is not compaction's to
  // reclaim, and without it a data set much smaller than a segment would
  // hold compaction in keep-up mode for ever.
  return static_cast<double>(total) >
         options_.compaction_space_limit * static_cast<double>(live) +
             static_cast<double>(log_->segment_size());
}

double Partition::DeadRatio(uint64_t id) const {
  const SegmentUsage u = usage_.Get(id);
  if (u.total_bytes == 0) return 1.0;
  uint64_t kept = u.live_bytes;
  if (HasOlderSegment(id)) kept += u.tombstone_bytes;
  return static_cast<double>(u.total_bytes - std::min(kept, u.total_bytes)) /
         static_cast<double>(u.total_bytes);
}

uint64_t Partition::SegmentAge(uint64_t id) const {
  const uint64_t end = (id + 1) * log_->segment_size();
  return log_->tail() > end ? log_->tail() - end : 0;
}

std::optional<uint64_t> Partition::PickVictim(double min_ratio, bool young_segments_wait) const {
  const double min_age =
      options_.compaction_min_age_segments * static_cast<double>(log_->segment_size());
  young_segments_wait = young_segments_wait && min_age > 0;
  std::optional<uint64_t> best;
  double best_ratio = -1;
  const std::vector<SegmentInfo> segments = log_->Segments();
  const uint64_t oldest = segments.empty() ? 0 : segments.front().id;
  for (const SegmentInfo& info : segments) {
    if (!info.sealed || bad_segments_.contains(info.id)) continue;
    if (young_segments_wait && SegmentAge(info.id) < min_age) continue;
    if (std::any_of(finishing_.begin(), finishing_.end(),
                    [&](const Finishing& f) { return f.id == info.id; })) {
      continue;  // compacted already, waiting to be deleted
    }
    const SegmentUsage u = usage_.Get(info.id);
    uint64_t kept = u.live_bytes + (info.id > oldest ? u.tombstone_bytes : 0);
    kept = std::min(kept, u.total_bytes);
    const double ratio =
        u.total_bytes == 0 ? 1.0
                           : static_cast<double>(u.total_bytes - kept) /
                                 static_cast<double>(u.total_bytes);
    const bool dead_bytes = u.total_bytes == 0 || kept < u.total_bytes;
    if (ratio >= min_ratio && dead_bytes && ratio > best_ratio) {
      best = info.id;
      best_ratio = ratio;
    }
  }
  return best;
}

void Partition::StartCompaction(double min_dead_ratio) {
  // A call while a pass runs lowers its threshold, never raises it: the
  // running pass then does what both callers asked for (each waits for it).
  const double ratio = std::max(0.0, min_dead_ratio);
  forced_ratio_ = std::min(forced_ratio_.value_or(ratio), ratio);
}

absl::Status Partition::Compact(double min_dead_ratio) {
  if (closed_) return absl::UnavailableError("partition is closed");
  StartCompaction(min_dead_ratio);
  while (compaction_running()) {
    if (absl::Status s = CompactionStep(UINT64_MAX); !s.ok()) {
      CompactionFailed(s);
      return s;
    }
  }
  // Also segments automatic compaction finished earlier.
  if (absl::Status s = RemoveFinished(/*force=*/true); !s.ok()) {
    CompactionFailed(s);
    return s;
  }
  return absl::OkStatus();
}

absl::Status Partition::CompactionStep(uint64_t budget, uint64_t* scanned_out) {
  if (!log_->failure().ok()) return log_->failure();
  if (!victim_.has_value()) {
    // While writes come in, a segment written recently waits (unless the
    // log is over its space limit): its live records are the newest, the
    // likeliest to be overwritten soon, so copying them now is mostly
    // wasted. A forced pass and an idle partition (no write for
    // compaction_quiet_period) take any segment.
    victim_ = PickVictim(forced_ratio_.value_or(options_.compaction_dead_ratio),
                         YoungSegmentsWait(idle_tick_));
    if (!victim_.has_value()) {
      if (!forced_ratio_.has_value()) return absl::OkStatus();
      // A forced pass is over once every segment it (or automatic
      // compaction before it) compacted is deleted.
      absl::Status s = RemoveFinished(/*force=*/true);
      forced_ratio_.reset();
      return s;
    }
    victim_offset_ = format::kSegmentHeaderSize;
    compaction_.current = victim_;
    victim_dead_fraction_ = DeadRatio(*victim_);
    walk_bucket_ = 0;
    victim_by_walk_ = options_.compaction_shortcuts && WalkIsCheaper(*victim_);
  }
  uint64_t end = 0;
  for (const SegmentInfo& info : log_->Segments()) {
    if (info.id == *victim_) end = info.end_offset;
  }
  const uint64_t base = *victim_ * log_->segment_size();
  if (options_.compaction_shortcuts && victim_offset_ == format::kSegmentHeaderSize &&
      walk_bucket_ == 0 && NothingToKeep(*victim_)) {
    // The usage table says no record here is live and no tombstone is
    // needed: delete the segment without reading it (reading it would cost
    // an index probe, often a cache miss, per record, to find nothing).
    if (options_.verify_compaction) VerifyNothingLive(*victim_, end);
    ++compaction_.segments_dropped_unread;
    victim_offset_ = end;
    return FinishVictim();
  }
  if (victim_by_walk_) return WalkStep(base, end, budget, scanned_out);
  uint64_t scanned = 0;
  // Records are looked at in runs of up to 16: the index buckets of a run
  // are loaded together so their cache misses overlap.
  struct Scanned {
    RecordHeader h;
    absl::string_view rec;
    uint32_t fp;
  };
  Scanned run[16];
  // Once nothing in the victim is left to keep (its last live records were
  // overwritten or relocated), the rest need not be read.
  auto done = [&] {
    return victim_offset_ >= end || (options_.compaction_shortcuts && NothingToKeep(*victim_));
  };
  while (!done() && scanned < budget) {
    size_t n = 0;
    uint64_t off = victim_offset_;
    absl::Status damage;
    while (n < 16 && off < end && scanned + (off - victim_offset_) < budget) {
      Scanned& r = run[n];
      damage = log_->RecordAt(base + off, &r.h, &r.rec);
      if (!damage.ok()) break;
      r.fp = HashIndex::Fingerprint(
          KeyHash(r.rec.substr(format::kRecordHeaderSize, r.h.key_len)));
      index_.Prefetch(r.fp);
      off += r.h.size();
      ++n;
    }
    for (size_t i = 0; i < n; ++i) {
      if (absl::Status s = RelocateRecord(base + victim_offset_, run[i].fp, run[i].h, run[i].rec);
          !s.ok()) {
        return s;  // retried from this record by a later step
      }
      victim_offset_ += run[i].h.size();
      scanned += run[i].h.size();
      if (scanned_out != nullptr) *scanned_out = scanned;
    }
    if (!damage.ok()) {
      // Damage in a sealed segment: leave it alone and say so.
      bad_segments_.insert(*victim_);
      victim_.reset();
      compaction_.current.reset();
      return absl::DataLossError(absl::StrCat(
          "compaction of segment ", base / log_->segment_size(), " stopped at offset ",
          victim_offset_, ": ", damage.message()));
    }
  }
  if (!done()) return absl::OkStatus();
  if (options_.verify_compaction && victim_offset_ < end) VerifyNothingLive(*victim_, end);
  victim_offset_ = end;
  return FinishVictim();
}

bool Partition::WalkIsCheaper(uint64_t id) const {
  const SegmentUsage u = usage_.Get(id);
  // Only puts have index entries: tombstones an older segment may still
  // need are found by reading the segment.
  if (u.tombstone_bytes > 0 && HasOlderSegment(id)) return false;
  // A scan reads the segment in order and probes a random bucket per
  // record; a walk reads the index in order and only the live records.
  return index_.WalkBytes() <= u.total_bytes / 2 && u.live_bytes <= u.total_bytes / 8;
}

absl::Status Partition::WalkStep(uint64_t base, uint64_t end, uint64_t budget,
                                 uint64_t* scanned_out) {
  // The walk is charged as the scan it replaces: visiting a fraction of
  // the buckets costs that fraction of the segment's bytes, so pacing (and
  // the space bound's arithmetic) stays the same.
  const uint64_t span = std::max<uint64_t>(end - format::kSegmentHeaderSize, 1);
  uint64_t scanned = 0;
  // As in a scan, the walk stops once nothing in the victim is left to keep.
  auto done = [&] {
    return walk_bucket_ >= index_.num_buckets() || NothingToKeep(*victim_);
  };
  while (!done() && scanned < budget) {
    const uint64_t buckets = index_.num_buckets();
    const uint64_t first = walk_bucket_;
    // Runs of up to 64 buckets, fewer when the budget left covers fewer.
    const uint64_t left = budget - scanned;
    const uint64_t want =
        left >= span ? 64
                     : std::clamp<uint64_t>((left * buckets + span - 1) / span, 1, 64);
    const uint64_t last = std::min(first + want, buckets);
    walk_entries_.clear();
    index_.EntriesIn(first, last, base + format::kSegmentHeaderSize, base + end,
                     &walk_entries_);
    for (const auto& [fp, address] : walk_entries_) {
      RecordHeader h;
      absl::string_view rec;
      if (absl::Status damage = log_->RecordAt(address, &h, &rec); !damage.ok()) {
        // A live record in a sealed segment is damaged: leave the segment
        // alone and say so.
        bad_segments_.insert(*victim_);
        const uint64_t id = *victim_;
        victim_.reset();
        compaction_.current.reset();
        return absl::DataLossError(absl::StrCat("compaction of segment ", id,
                                                ": live record at offset ", address - base,
                                                ": ", damage.message()));
      }
      // Still live is checked again there (the entry points at exactly
      // this address).
      if (absl::Status s = RelocateRecord(address, fp, h, rec); !s.ok()) {
        return s;  // this run is walked again by a later step
      }
    }
    walk_bucket_ = last;
    scanned += std::max<uint64_t>((last - first) * span / buckets, 1);
    if (scanned_out != nullptr) *scanned_out = scanned;
  }
  if (!done()) return absl::OkStatus();
  if (options_.verify_compaction) VerifyNothingLive(*victim_, end);
  ++compaction_.segments_walked;
  victim_offset_ = end;
  return FinishVictim();
}

absl::Status Partition::RelocateRecord(uint64_t address, uint32_t fp, const RecordHeader& h,
                                       absl::string_view rec) {
  absl::string_view key = rec.substr(format::kRecordHeaderSize, h.key_len);
  const bool put = h.type == RecordType::kPut;
  HashIndex::Position pos;
  if (put) {
    // A put is live iff an entry points at exactly this address: one
    // address holds one record, so no key comparison (and no read of the
    // record a same-fingerprint entry points at) is needed.
    pos = index_.Find(fp, [address](uint64_t a) { return a == address; });
    if (!pos.found()) return absl::OkStatus();  // dead
  } else {
    RecordHeader cur;
    auto found = FindKey(fp, key, &cur);
    if (!found.ok()) return found.status();
    pos = *found;
    if (pos.found() || !HasOlderSegment(*victim_)) {
      // Superseded by a newer put, or no older segment can hold a value
      // it would have to hide: the tombstone has done its job.
      ++compaction_.tombstones_dropped;
      return absl::OkStatus();
    }
  }
  const uint64_t size = h.size();
  if (log_->SpaceLeft() < size) {
    if (absl::Status s = log_->Seal(); !s.ok()) return s;
  }
  // The record moves byte for byte: same version, same CRC. Replay keeps
  // whichever copy it meets last, and both say the same.
  const uint64_t to = log_->Append(size);
  std::memcpy(log_->BufferAt(to), rec.data(), size);
  SegmentUsage& dst = UsageOf(to);
  dst.total_bytes += size;
  if (put) {
    dst.live_bytes += size;
    UsageOf(address).live_bytes -= size;
    index_.Update(pos, to);
  } else {
    dst.tombstone_bytes += size;
  }
  ++compaction_.records_relocated;
  compaction_.bytes_relocated += size;
  // A failed write keeps the bytes buffered (and the index pointing at
  // them); the victim stays until a later step has made them durable.
  return log_->FlushIfFull();
}

absl::Status Partition::FinishVictim() {
  const uint64_t id = *victim_;
  uint64_t bytes = 0;
  for (const SegmentInfo& info : log_->Segments()) {
    if (info.id == id) bytes = info.end_offset;
  }
  finishing_.push_back(Finishing{id, log_->tail(), bytes});
  victim_.reset();
  compaction_.current.reset();
  look_now_ = true;  // the next victim may be waiting
  // A forced pass finishes now; otherwise the log's own next sync (each
  // batch under `always`, every max_unsynced_bytes otherwise, or the
  // first idle Tick) makes the copies durable, saving an fdatasync per
  // segment.
  return RemoveFinished(/*force=*/forced_ratio_.has_value());
}

absl::Status Partition::RemoveFinished(bool force) {
  if (finishing_.empty()) return absl::OkStatus();
  // The copies must be durable before the manifest forgets the original.
  if (force && log_->synced() < finishing_.back().durable_at) {
    if (absl::Status s = log_->Sync(); !s.ok()) return s;
  }
  std::vector<uint64_t> ids;
  for (const Finishing& f : finishing_) {
    if (f.durable_at <= log_->synced()) ids.push_back(f.id);
  }
  if (ids.empty()) return absl::OkStatus();
  // A dropped tombstone may have carried the newest version: the MANIFEST
  // that stops listing the segments keeps the next version instead.
  if (absl::Status s = log_->RemoveSegments(ids, next_version_); !s.ok()) return s;
  std::erase_if(finishing_, [&](const Finishing& f) {
    if (f.durable_at > log_->synced()) return false;
    usage_.Remove(f.id);
    ++compaction_.segments_compacted;
    compaction_.bytes_reclaimed += f.bytes;
    return true;
  });
  return absl::OkStatus();
}

PartitionStats Partition::Stats() const {
  PartitionStats st;
  st.keys = index_.size();
  st.index_bytes = index_.MemoryBytes();
  usage_.ForEach([&](uint64_t, const SegmentUsage& u) {
    st.live_bytes += u.live_bytes;
    st.dead_bytes += u.total_bytes - u.live_bytes;
  });
  st.segments = log_->Segments().size();
  st.next_version = next_version_;
  st.tail_address = log_->tail();
  st.synced_address = log_->synced();
  st.syncs = log_->sync_count();
  st.recovery = recovery_;
  st.recovery_seconds = recovery_seconds_;
  st.recovered = recovered_;
  st.checkpoints = ckpt_stats_;
  st.compaction = compaction_;
  if (!log_->failure().ok()) st.error = std::string(log_->failure().message());
  return st;
}

}  // namespace segkv::worker
