#include "worker/partition.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "worker/key_hash.h"
#include "worker/coding.h"
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

absl::StatusOr<std::unique_ptr<Partition>> Partition::Open(
    const PartitionOptions& options) {
  if (options.max_value_size > format::kMaxValueSizeLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max value size ", options.max_value_size, " exceeds the format's ",
        format::kMaxValueSizeLimit));
  }
  if (options.sync_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("sync interval must be positive");
  }
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
  log_ = std::make_unique<Log>(lo);
  absl::Status s = log_->Recover(
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
  if (options_.durability == Durability::kInterval) {
    next_sync_ = absl::Now() + options_.sync_interval;
  }
  recovery_seconds_ = absl::ToDoubleSeconds(absl::Now() - start);
  closed_ = false;
  return absl::OkStatus();
}

SegmentUsage& Partition::UsageOf(uint64_t address) {
  const uint64_t id = address / log_->segment_size();
  if (id >= usage_.size()) usage_.resize(id + 1);
  return usage_[id];
}

absl::Status Partition::ReplayRecords(
    absl::Span<const Log::ScannedRecord> records) {
  // Replay is bound by two cache misses per record (its bucket, and the
  // record the bucket points at); start all the bucket loads of the run
  // first so they overlap.
  uint32_t fps[64];
  const size_t n = std::min<size_t>(records.size(), 64);
  for (size_t i = 0; i < n; ++i) {
    const auto& r = records[i];
    fps[i] = HashIndex::Fingerprint(KeyHash(
        r.record.substr(format::kRecordHeaderSize, r.header.key_len)));
    index_.Prefetch(fps[i]);
  }
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
  // The newest version wins whatever the order records are met in.
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
  if (op.return_previous && r.existed) {
    auto old = log_->Read(
        pos->address + format::kRecordHeaderSize + cur.key_len, cur.value_len);
    if (!old.ok()) {
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
    index_.Erase(*pos);
  }
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
    if (u.new_address != 0) {
      usage.live_bytes -= u.new_size;
      index_.ReplaceExact(u.fp, u.new_address, u.old_address);
    } else {
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
  auto fail_from = [&](size_t first, const absl::Status& s) {
    for (size_t k = first; k < ops.size(); ++k) {
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
    // Overlap the cache misses of the group's lookups.
    absl::string_view keys[64];
    size_t nkeys = 0;
    for (size_t k = i; k < j && nkeys < 64; ++k) keys[nkeys++] = ops[k].key;
    Prefetch(std::span<const absl::string_view>(keys, nkeys));
    const uint64_t group_address = log_->tail();
    const uint64_t group_version = next_version_;
    undo_.clear();
    for (size_t k = i; k < j; ++k) results[k] = ApplyOne(ops[k]);
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
  for (size_t i = 0; i < n; ++i) {
    index_.Find(fps[i], [&](uint64_t address) {
      auto rec = log_->Read(address, format::kRecordHeaderSize);
      if (rec.ok()) __builtin_prefetch(rec->data());
      return false;  // visit every candidate
    });
  }
}

absl::StatusOr<uint64_t> Partition::Scan(uint64_t cursor,
                                          absl::string_view prefix,
                                          size_t limit, bool keys_only,
                                          uint64_t max_scan_bytes,
                                          std::vector<ScanItem>* out,
                                          uint64_t* scanned_bytes) {
  uint64_t address = log_->Skip(cursor == 0 ? log_->First() : cursor);
  uint64_t scanned = 0;
  size_t found = 0;
  bool first = cursor != 0;  // the client chose this address
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
        out->push_back(std::move(item));
        ++found;
      }
    }
    scanned += h.size();
    address = log_->Skip(address + h.size());
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
  return MaybeIntervalSync();
}

absl::Status Partition::Close() {
  if (closed_) return absl::OkStatus();
  closed_ = true;
  return log_->Sync();
}

PartitionStats Partition::Stats() const {
  PartitionStats st;
  st.keys = index_.size();
  st.index_bytes = index_.MemoryBytes();
  for (const SegmentUsage& u : usage_) {
    st.live_bytes += u.live_bytes;
    st.dead_bytes += u.total_bytes - u.live_bytes;
  }
  st.segments = log_->Segments().size();
  st.next_version = next_version_;
  st.tail_address = log_->tail();
  st.synced_address = log_->synced();
  st.syncs = log_->sync_count();
  st.recovery = recovery_;
  st.recovery_seconds = recovery_seconds_;
  if (!log_->failure().ok()) st.error = std::string(log_->failure().message());
  return st;
}

}  // namespace segkv::worker
