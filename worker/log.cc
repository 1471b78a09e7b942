#include "worker/log.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"

namespace segkv::worker {
namespace {

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

std::string ParentOf(const std::string& dir) {
  size_t slash = dir.find_last_not_of('/');
  slash = slash == std::string::npos ? slash : dir.rfind('/', slash);
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : dir.substr(0, slash);
}

// Why the bytes at `p` (n readable) are not a valid record, or "" if they
// are one; sets *size to the record's size when valid.
absl::string_view CheckRecord(const char* p, uint64_t n, uint64_t max_value,
                             RecordHeader* h) {
  if (n < format::kRecordHeaderSize) return "truncated record header";
  if (!DecodeRecordHeader(p, max_value, h)) {
    return AllZero(p, format::kRecordHeaderSize) ? "zero-filled record header"
                                                 : "invalid record header";
  }
  if (h->size() > n) return "record length past the end of the data";
  if (!RecordCrcMatches(p, *h)) return "record CRC mismatch";
  return "";
}

}  // namespace

void Log::Buffer::resize(size_t n) {
  if (n > capacity_) {
    size_t cap = std::max<size_t>(n, capacity_ * 2);
    auto bigger = std::make_unique<char[]>(cap);
    if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
    data_ = std::move(bigger);
    capacity_ = cap;
  }
  size_ = n;
}

Log::Log(const LogOptions& options)
    : options_(options),
      fs_(options.fs),
      segment_size_(options.segment_size),
      buffer_size_(options.buffer_size),
      remover_(options.remove_in_background ? std::make_unique<FileRemover>(options.fs)
                                            : nullptr) {}

Log::~Log() = default;

FileRemover::~FileRemover() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void FileRemover::Remove(std::string path) {
  absl::MutexLock l(&mu_);
  pending_.push_back(std::move(path));
  ++handed_;
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  cv_.SignalAll();
}

void FileRemover::Flush() {
  absl::MutexLock l(&mu_);
  const uint64_t target = handed_;
  while (done_ < target) cv_.Wait(&mu_);
}

void FileRemover::Run() {
  absl::MutexLock l(&mu_);
  for (;;) {
    while (!stop_ && pending_.empty()) cv_.Wait(&mu_);
    if (pending_.empty()) return;  // stopping, nothing left
    std::vector<std::string> batch = std::move(pending_);
    pending_.clear();
    mu_.Unlock();
    for (const std::string& path : batch) {
      absl::Status s = fs_->Remove(path);
      if (!s.ok() && s.code() != absl::StatusCode::kNotFound) {
        LOG(WARNING) << "removing " << path << " (no longer in the MANIFEST): " << s;
      }
    }
    mu_.Lock();
    done_ += batch.size();
    cv_.SignalAll();
  }
}

absl::Status Log::RemoveUnlisted(const std::string& path) {
  if (remover_ != nullptr) {
    remover_->Remove(path);
    return absl::OkStatus();
  }
  absl::Status s = fs_->Remove(path);
  if (s.code() == absl::StatusCode::kNotFound) return absl::OkStatus();
  return s;
}

std::string Log::PathOf(uint64_t id) const {
  return JoinPath(options_.dir, SegmentFileName(id));
}

uint64_t Log::FileEnd(const Segment& seg) const {
  if (seg.info.sealed) return seg.info.end_offset;
  if (tail_ == UINT64_MAX) return seg.scan_limit;  // recovering
  return buffer_base_ - active_base_;
}

uint64_t Log::TornWindow() const {
  if (options_.max_unsynced_bytes == 0) return UINT64_MAX;
  const uint64_t unit = std::max<uint64_t>(
      options_.max_unsynced_bytes,
      RecordSize(format::kMaxKeySize, options_.max_value_size));
  return 2 * unit + options_.buffer_size;
}

const Log::Segment* Log::SegmentById(uint64_t id) const {
  if (id < first_id_ || id - first_id_ >= segments_.size()) return nullptr;
  return segments_[id - first_id_].get();
}

absl::Status Log::Fail(absl::Status s) {
  if (failure_.ok()) {
    failure_ = absl::Status(
        s.code() == absl::StatusCode::kResourceExhausted
            ? absl::StatusCode::kUnavailable
            : s.code(),
        absl::StrCat("log of partition ", options_.partition,
                     " failed and accepts no writes until reopened: ",
                     s.message()));
  }
  return failure_;
}

absl::Status CheckSegmentSize(uint64_t segment_size, uint64_t max_value_size) {
  if (segment_size < format::kSegmentHeaderSize +
                         RecordSize(format::kMaxKeySize, max_value_size) ||
      segment_size > (uint64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment size ", segment_size, " must be at most 1 TiB and hold a "
        "record with a ", format::kMaxKeySize, "-byte key and a ",
        max_value_size, "-byte value"));
  }
  return absl::OkStatus();
}

absl::Status Log::CheckSegmentSize() const {
  return segkv::worker::CheckSegmentSize(segment_size_, options_.max_value_size);
}

absl::StatusOr<std::unique_ptr<WritableFile>> Log::CreateSegmentFile(
    uint64_t id, int64_t now_ms) {
  if (id >= (format::kMaxAddress + 1) / segment_size_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "partition ", options_.partition,
        " has used its whole 2^48-byte log address space"));
  }
  const std::string path = PathOf(id);
  auto file = fs_->OpenWritable(path, /*truncate=*/true);
  if (!file.ok()) return file.status();
  absl::Status s = (*file)->Append(
      EncodeSegmentHeader(options_.partition, id, segment_size_, now_ms, TornWindow()));
  if (s.ok()) s = (*file)->Sync();
  if (s.ok()) s = fs_->SyncDir(options_.dir);
  if (!s.ok()) {
    fs_->Remove(path).IgnoreError();  // holds no record; recovery removes it
    return s;
  }
  return file;
}

absl::Status Log::WriteManifest(const std::vector<SegmentInfo>& segments,
                                const std::vector<CheckpointInfo>& checkpoints) {
  if (!failure_.ok()) return failure_;
  Manifest m;
  m.partition = options_.partition;
  m.segment_size = segment_size_;
  m.segments = segments;
  m.checkpoints = checkpoints;
  m.version_floor = version_floor_;
  bool renamed = false;
  absl::Status s = WriteFileAtomically(fs_, options_.dir, kManifestName,
                                       EncodeManifest(m), &renamed);
  // After the rename the manifest on disk may be old or new: only a reopen
  // can tell, so stop writing.
  if (!s.ok() && renamed) return Fail(s);
  return s;
}

absl::Status Log::CreateFirstSegment() {
  const int64_t now = NowMs();
  auto file = CreateSegmentFile(0, now);
  if (!file.ok()) return file.status();
  SegmentInfo info{.id = 0, .created_ms = now};
  if (absl::Status s = WriteManifest({info}); !s.ok()) return s;
  auto reader = fs_->OpenReadable(PathOf(0), segment_size_);
  if (!reader.ok()) return reader.status();
  auto seg = std::make_unique<Segment>();
  seg->info = info;
  seg->reader = std::move(*reader);
  segments_.push_back(std::move(seg));
  first_id_ = active_id_ = 0;
  active_base_ = 0;
  active_file_ = std::move(*file);
  buffer_base_ = tail_ = synced_ = format::kSegmentHeaderSize;
  return absl::OkStatus();
}

absl::Status Log::RemoveOrphan(const std::string& name, uint64_t id,
                               bool must_be_empty) {
  const std::string path = JoinPath(options_.dir, name);
  if (must_be_empty) {
    // A segment file the manifest does not know yet can only come from a
    // seal or a first open that crashed before its manifest update, and so
    // holds no record. If it holds one, something else wrote it.
    auto data = fs_->ReadFileToString(path);
    if (!data.ok()) return data.status();
    for (uint64_t off = format::kSegmentHeaderSize; off < data->size(); ++off) {
      RecordHeader h;
      if (CheckRecord(data->data() + off, data->size() - off,
                      format::kMaxValueSizeLimit, &h)
              .empty()) {
        return absl::DataLossError(absl::StrCat(
            path, ": segment ", id, " is not in the MANIFEST but holds records"));
      }
    }
  }
  LOG(WARNING) << "removing " << path << ": not in the MANIFEST";
  return fs_->Remove(path);
}

absl::Status Log::Open(LogRecoveryStats* stats) {
  if (fs_ == nullptr || options_.dir.empty()) {
    return absl::InvalidArgumentError("log options need a file system and a dir");
  }
  if (opened_) return absl::FailedPreconditionError("log already opened");
  opened_ = true;
  const std::string& dir = options_.dir;
  if (absl::Status s = fs_->CreateDir(dir); !s.ok()) return s;
  // A process killed between a rename (or create) and the fsync of its
  // directory leaves a name that is visible but not durable. Recovery
  // builds on what it sees, so it first makes it durable: the directory's
  // own entry in its parent, and the directory's entries.
  if (absl::Status s = fs_->SyncDir(ParentOf(dir)); !s.ok()) return s;
  if (absl::Status s = fs_->SyncDir(dir); !s.ok()) return s;
  auto names = fs_->ListDir(dir);
  if (!names.ok()) return names.status();
  std::map<uint64_t, std::string> files;  // segment files by id
  std::map<uint64_t, std::string> checkpoint_files;
  bool has_manifest = false;
  for (const std::string& name : *names) {
    uint64_t id;
    if (ParseSegmentFileName(name, &id)) {
      files[id] = name;
    } else if (ParseCheckpointFileName(name, &id)) {
      checkpoint_files[id] = name;
    } else if (name == kManifestName) {
      has_manifest = true;
    } else if (absl::EndsWith(name, ".tmp")) {
      // An atomic replacement (manifest, checkpoint) that never got
      // renamed: never authoritative.
      if (absl::Status s = fs_->Remove(JoinPath(dir, name)); !s.ok()) return s;
      ++stats->removed_files;
    }
  }

  if (!has_manifest) {
    // The listing missed a MANIFEST that is there: never treat that as a
    // new partition (its path truncates segment 0 and replaces the
    // MANIFEST). Nor a MANIFEST that cannot be looked up.
    auto exists = fs_->PathExists(JoinPath(dir, kManifestName));
    if (!exists.ok()) return exists.status();
    if (*exists) {
      return absl::DataLossError(absl::StrCat(
          "listing ", dir, " did not show its MANIFEST, which exists; not opening"));
    }
  }
  if (!has_manifest) {
    if (absl::Status s = CheckSegmentSize(); !s.ok()) return s;
    for (const auto& [id, name] : files) {
      if (absl::Status s = RemoveOrphan(name, id, true); !s.ok()) return s;
      ++stats->removed_files;
    }
    for (const auto& [id, name] : checkpoint_files) {
      LOG(WARNING) << "removing " << JoinPath(dir, name) << ": not in the MANIFEST";
      if (absl::Status s = fs_->Remove(JoinPath(dir, name)); !s.ok()) return s;
      ++stats->removed_files;
    }
    fresh_ = true;
    absl::Status s = CreateFirstSegment();
    if (s.ok()) s = failure_;
    return s;
  }

  const std::string manifest_path = JoinPath(dir, kManifestName);
  auto data = fs_->ReadFileToString(manifest_path);
  if (!data.ok()) return data.status();
  auto manifest = DecodeManifest(*data, manifest_path);
  if (!manifest.ok()) return manifest.status();
  if (manifest->partition != options_.partition) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " holds partition ", manifest->partition, ", not partition ",
        options_.partition));
  }
  if (manifest->segment_size != segment_size_) {
    LOG(INFO) << dir << ": keeping its segment size of "
              << manifest->segment_size << " bytes (the option says "
              << segment_size_ << ")";
    segment_size_ = manifest->segment_size;
  }
  if (absl::Status s = CheckSegmentSize(); !s.ok()) return s;
  checkpoints_ = manifest->checkpoints;
  for (const CheckpointInfo& c : checkpoints_) {
    max_checkpoint_id_ = std::max(max_checkpoint_id_, c.id);
  }
  for (const auto& [id, name] : checkpoint_files) {
    max_checkpoint_id_ = std::max(max_checkpoint_id_, id);
  }
  version_floor_ = manifest->version_floor;

  const uint64_t last_id = manifest->segments.back().id;
  for (const auto& [id, name] : files) {
    bool listed = std::any_of(manifest->segments.begin(), manifest->segments.end(),
                              [id = id](const SegmentInfo& s) { return s.id == id; });
    if (listed) continue;
    // Below the last id: a segment whose removal was not yet durable.
    if (absl::Status s = RemoveOrphan(name, id, id > last_id); !s.ok()) return s;
    ++stats->removed_files;
  }
  for (const auto& [id, name] : checkpoint_files) {
    bool listed = std::any_of(checkpoints_.begin(), checkpoints_.end(),
                              [id = id](const CheckpointInfo& c) { return c.id == id; });
    if (listed) continue;
    // Written but never recorded, or pruned before the crash: unused.
    LOG(WARNING) << "removing " << JoinPath(dir, name) << ": not in the MANIFEST";
    if (absl::Status s = fs_->Remove(JoinPath(dir, name)); !s.ok()) return s;
    ++stats->removed_files;
  }

  first_id_ = manifest->segments.front().id;
  segments_.resize(last_id - first_id_ + 1);
  for (const SegmentInfo& info : manifest->segments) {
    const std::string path = PathOf(info.id);
    if (!files.contains(info.id)) {
      return absl::DataLossError(absl::StrCat(
          "segment ", info.id, " listed in ", manifest_path, " is missing (",
          path, ")"));
    }
    auto reader = fs_->OpenReadable(path, segment_size_);
    if (!reader.ok()) return reader.status();
    auto seg = std::make_unique<Segment>();
    seg->info = info;
    seg->reader = std::move(*reader);
    if (!info.sealed) {
      // Checkpointed index entries may point into the active segment
      // before its replay reaches them.
      auto size = fs_->FileSize(path);
      if (!size.ok()) return size.status();
      seg->scan_limit = *size;
    }
    segments_[info.id - first_id_] = std::move(seg);
  }
  active_id_ = last_id;
  return absl::OkStatus();
}

absl::Status Log::CheckReplayStart(uint64_t address) {
  if (fresh_) {
    return address <= tail_ ? absl::OkStatus()
                            : absl::FailedPreconditionError(absl::StrCat(
                                  "address ", address, " is past the end of a new log"));
  }
  uint64_t id = address / segment_size_;
  uint64_t offset = address - id * segment_size_;
  if (offset == 0 && id > 0) {
    // A tail at the very end of a full segment (the next one is made only
    // by the next write): the address is that segment's end.
    --id;
    offset = segment_size_;
  }
  const Segment* seg = SegmentById(id);
  if (seg == nullptr) {
    // A segment removed since (compacted away) is fine; one past the
    // active segment is not.
    if (id < active_id_) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "address ", address, " is in segment ", id, ", past the log's last segment ",
        active_id_));
  }
  uint64_t end = seg->info.end_offset;
  if (!seg->info.sealed) {
    auto size = fs_->FileSize(PathOf(id));
    if (!size.ok()) return size.status();
    end = *size;
  }
  if (offset < format::kSegmentHeaderSize || offset > end) {
    return absl::FailedPreconditionError(absl::StrCat(
        "address ", address, " is offset ", offset, " of segment ", id,
        ", which holds ", end, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status Log::Replay(uint64_t start, Visitor visit, LogRecoveryStats* stats) {
  if (!opened_) return absl::FailedPreconditionError("log not opened");
  if (fresh_) return absl::OkStatus();  // Open() made the first segment
  for (auto& seg : segments_) {
    if (seg == nullptr) continue;
    const uint64_t base = seg->info.id * segment_size_;
    const uint64_t from = start > base ? start - base : 0;
    absl::Status s = ScanSegment(*seg, !seg->info.sealed, from, visit, stats);
    if (!s.ok()) return s;
    ++stats->segments;
  }
  // One writer window per segment: a process whose window differs from the
  // one the active segment records (its limits changed, or the segment
  // predates the field) appends nothing to it. SpaceLeft() is 0 until a
  // Seal() has started a segment that records this process's window: the
  // first write seals (and fails with the seal's error, to be retried, if
  // that fails); an open with no write after it changes nothing.
  if (active_window_ != TornWindow()) {
    window_seal_pending_ = true;
    LOG(INFO) << "partition " << options_.partition << ": segment " << active_id_
              << " records a torn window of " << active_window_
              << " bytes, this process's is " << TornWindow()
              << ": the first write goes to a new segment";
    ++stats->window_changed;
  }
  return absl::OkStatus();
}

absl::Status Log::Recover(Visitor visit, LogRecoveryStats* stats) {
  if (absl::Status s = Open(stats); !s.ok()) return s;
  return Replay(0, visit, stats);
}

absl::Status Log::ScanSegment(Segment& seg, bool active, uint64_t from,
                              Visitor visit, LogRecoveryStats* stats) {
  const uint64_t id = seg.info.id;
  const std::string path = PathOf(id);
  auto size = fs_->FileSize(path);
  if (!size.ok()) return size.status();
  auto where = [&](uint64_t off) {
    return absl::StrCat("segment ", id, " (", path, ") offset ", off);
  };
  if (*size < format::kSegmentHeaderSize) {
    return absl::DataLossError(absl::StrCat(where(0), ": file shorter than a segment header"));
  }
  uint64_t limit = *size;
  if (!active) {
    if (*size != seg.info.end_offset) {
      return absl::DataLossError(absl::StrCat(
          where(0), ": sealed segment is ", *size, " bytes, MANIFEST says ",
          seg.info.end_offset));
    }
  }
  seg.scan_limit = limit;
  auto view = seg.reader->Read(0, limit);
  if (!view.ok()) return view.status();
  const char* base = view->data();
  if (absl::Status s = CheckSegmentHeader(
          absl::string_view(base, format::kSegmentHeaderSize), path,
          options_.partition, id, segment_size_);
      !s.ok()) {
    return s;
  }

  // The window of the process that wrote the active segment's tail, not
  // this one's: a restart with larger limits (--max_value_size,
  // --write_buffer_size) would otherwise truncate synced damage as torn,
  // and one with smaller limits report a real torn write as damage. A
  // header from before the field was recorded falls back to this process's.
  const uint64_t recorded_window = SegmentHeaderTornWindow(
      absl::string_view(base, format::kSegmentHeaderSize));
  const uint64_t window = recorded_window != 0 ? recorded_window : TornWindow();
  const uint64_t seg_base = id * segment_size_;
  constexpr size_t kRun = 32;
  ScannedRecord run[kRun];
  size_t in_run = 0;
  auto deliver = [&]() -> absl::Status {
    absl::Status s = in_run > 0 ? visit(absl::MakeConstSpan(run, in_run))
                                : absl::OkStatus();
    in_run = 0;
    return s;
  };
  uint64_t off = std::max<uint64_t>(format::kSegmentHeaderSize, from);
  if (!active && off > limit) off = limit;  // wholly before the replay start
  if (off > limit) {
    return absl::FailedPreconditionError(absl::StrCat(
        where(off), ": replay would start past the segment's ", limit, " bytes"));
  }
  while (off < limit) {
    RecordHeader h;
    absl::string_view why =
        CheckRecord(base + off, limit - off, format::kMaxValueSizeLimit, &h);
    if (!why.empty()) {
      if (absl::Status s = deliver(); !s.ok()) return s;
      if (!active) return absl::DataLossError(absl::StrCat(where(off), ": ", why));
      // Active segment. Damage with no valid record after it is a torn
      // tail. Damage followed by valid records is a torn write too if it
      // lies in the last `window` bytes, which may not have been synced
      // (pages reach the disk in any order); further back it is real damage.
      if (limit - off > window) {
        for (uint64_t p = off + 1; p + format::kRecordHeaderSize <= limit; ++p) {
          RecordHeader later;
          if (CheckRecord(base + p, limit - p, format::kMaxValueSizeLimit, &later)
                  .empty()) {
            return absl::DataLossError(absl::StrCat(
                where(off), ": ", why, ", followed by a valid record at offset ",
                p, " (damage before the tail, not a torn write)"));
          }
        }
      }
      LOG(WARNING) << where(off) << ": " << why << "; truncating the torn tail of "
                   << (limit - off) << " bytes";
      stats->truncated_bytes += limit - off;
      limit = off;
      break;
    }
    run[in_run++] = ScannedRecord{seg_base + off, h,
                                  absl::string_view(base + off, h.size())};
    if (in_run == kRun) {
      if (absl::Status s = deliver(); !s.ok()) return s;
    }
    ++stats->records;
    stats->bytes += h.size();
    off += h.size();
  }
  if (absl::Status s = deliver(); !s.ok()) return s;

  if (!active) return absl::OkStatus();
  auto file = fs_->OpenWritable(path, /*truncate=*/false);
  if (!file.ok()) return file.status();
  if ((*file)->Size() != limit) {
    if (absl::Status s = (*file)->Truncate(limit); !s.ok()) return s;
  }
  // Always: a killed process may have left appended bytes that were never
  // synced (a commit whose fdatasync it did not live to make, or writes
  // under `interval`). They are counted as synced from here on, and seals,
  // checkpoints and compaction rely on that. A sync alone is not enough
  // after a failed one: Linux marks the pages of a failed writeback clean,
  // and they stay readable but never reach the disk. So the bytes the last
  // process may not have synced (at most the torn window) are first
  // written again, in place, with themselves.
  const uint64_t window_start =
      limit - std::min<uint64_t>(window, limit - format::kSegmentHeaderSize);
  std::string chunk;
  for (uint64_t off = window_start; off < limit;) {
    const uint64_t n = std::min<uint64_t>(limit - off, 1 << 20);
    auto bytes = seg.reader->Read(off, n);
    if (!bytes.ok()) return bytes.status();
    chunk.assign(bytes->data(), bytes->size());
    if (absl::Status s = (*file)->WriteAt(off, chunk); !s.ok()) return s;
    off += n;
  }
  if (absl::Status s = (*file)->Sync(); !s.ok()) return s;
  active_id_ = id;
  active_base_ = seg_base;
  active_file_ = std::move(*file);
  buffer_base_ = tail_ = synced_ = seg_base + limit;
  active_window_ = recorded_window;
  return absl::OkStatus();
}

uint64_t Log::Append(uint64_t size) {
  DCHECK_LE(size, SpaceLeft());
  const uint64_t address = tail_;
  buffer_.resize(buffer_.size() + size);
  tail_ += size;
  return address;
}

absl::StatusOr<absl::string_view> Log::Read(uint64_t address, uint64_t n) const {
  if (address >= buffer_base_) {
    if (address + n > tail_) {
      return absl::InvalidArgumentError(absl::StrCat("read past the log tail at ", address));
    }
    return absl::string_view(buffer_.data() + (address - buffer_base_), n);
  }
  const uint64_t id = address / segment_size_;
  const Segment* seg = SegmentById(id);
  if (seg == nullptr) {
    return absl::DataLossError(absl::StrCat("address ", address, " is in segment ",
                                            id, ", which does not exist"));
  }
  // Never touch a mapping past the end of its file (SIGBUS), nor read file
  // bytes where the data is still in the buffer.
  const uint64_t offset = address - id * segment_size_;
  if (offset + n > FileEnd(*seg)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "read of ", n, " bytes at address ", address, " crosses the end of segment ",
        id, "'s written data"));
  }
  return seg->reader->Read(offset, n);
}

absl::Status Log::Flush() {
  if (!failure_.ok()) return failure_;
  if (buffer_.empty()) return absl::OkStatus();
  absl::Status s = active_file_->Append(absl::string_view(buffer_.data(), buffer_.size()));
  if (!s.ok()) {
    // Put the file back where it was so the buffer can be retried or
    // rolled back; if that fails its length is unknown. The cut is synced:
    // an unsynced truncation may not survive a power loss, and the part of
    // the failed write that reached the disk would then come back (a write
    // answered RESOURCE_EXHAUSTED that reappears, with a version the next
    // write reuses).
    absl::Status t = active_file_->Truncate(buffer_base_ - active_base_);
    if (t.ok()) t = active_file_->Sync();
    if (!t.ok()) return Fail(t);
    if (synced_ < buffer_base_) {
      ++sync_count_;
      synced_ = buffer_base_;
    }
    return s;
  }
  // Let the disk start on these bytes while the worker goes on.
  active_file_->StartWriteback(buffer_base_ - active_base_, buffer_.size());
  buffer_base_ += buffer_.size();
  buffer_.clear();
  // An fdatasync costs about as much per byte whenever it runs, so syncing
  // every max_unsynced_bytes keeps each one short (no long stall when a
  // segment is sealed) and bounds what a crash can take under any policy.
  if (options_.max_unsynced_bytes > 0 &&
      buffer_base_ - synced_ >= options_.max_unsynced_bytes) {
    return Sync();
  }
  return absl::OkStatus();
}

absl::Status Log::Sync() {
  if (absl::Status s = Flush(); !s.ok()) return s;
  if (synced_ == tail_) return absl::OkStatus();
  // After a failed fdatasync the kernel may have dropped the dirty pages:
  // nothing since the last good sync can be trusted.
  if (absl::Status s = active_file_->Sync(); !s.ok()) return Fail(s);
  ++sync_count_;
  synced_ = tail_;
  return absl::OkStatus();
}

absl::Status Log::Seal() {
  if (absl::Status s = Sync(); !s.ok()) return s;
  const int64_t now = NowMs();
  const uint64_t next_id = active_id_ + 1;
  auto file = CreateSegmentFile(next_id, now);
  if (!file.ok()) return file.status();
  std::vector<SegmentInfo> infos = Segments();
  infos.back().sealed = true;
  infos.back().end_offset = tail_ - active_base_;
  infos.back().sealed_ms = now;
  infos.push_back(SegmentInfo{.id = next_id, .created_ms = now});
  absl::Status s = WriteManifest(infos);
  if (s.ok()) {
    auto reader = fs_->OpenReadable(PathOf(next_id), segment_size_);
    if (!reader.ok()) {
      s = Fail(reader.status());
    } else {
      Segment* active = segments_.back().get();
      active->info = infos[infos.size() - 2];
      auto seg = std::make_unique<Segment>();
      seg->info = infos.back();
      seg->reader = std::move(*reader);
      segments_.push_back(std::move(seg));
      active_id_ = next_id;
      active_base_ = next_id * segment_size_;
      active_file_ = std::move(*file);
      buffer_base_ = tail_ = synced_ = active_base_ + format::kSegmentHeaderSize;
      window_seal_pending_ = false;
      return absl::OkStatus();
    }
  }
  if (failure_.ok()) fs_->Remove(PathOf(next_id)).IgnoreError();
  return s;
}

absl::Status Log::TruncateTo(uint64_t address) {
  DCHECK_GE(address, synced_);
  DCHECK_LE(address, tail_);
  if (address >= buffer_base_) {
    buffer_.resize(address - buffer_base_);
  } else {
    if (!failure_.ok()) return failure_;
    // Synced, as in Flush(): bytes rolled back must not come back after a
    // power loss. (Only a failed log gets here today: a group is written in
    // one Flush(), which cuts back a failed write itself.)
    absl::Status s = active_file_->Truncate(address - active_base_);
    if (s.ok()) s = active_file_->Sync();
    if (!s.ok()) return Fail(s);
    ++sync_count_;
    synced_ = address;
    buffer_.clear();
    buffer_base_ = address;
  }
  tail_ = address;
  return absl::OkStatus();
}

uint64_t Log::First() const {
  for (const auto& seg : segments_) {
    if (seg != nullptr) {
      return seg->info.id * segment_size_ + format::kSegmentHeaderSize;
    }
  }
  return tail_;
}

uint64_t Log::Skip(uint64_t address) const {
  if (address >= tail_) return tail_;
  uint64_t id = address / segment_size_;
  uint64_t offset = address - id * segment_size_;
  // The first address at or after `address` in a segment that exists and
  // holds data there (a sealed segment may hold none: one sealed for a new
  // torn window before any record went into it).
  for (; id <= active_id_; ++id, offset = 0) {
    const Segment* seg = SegmentById(id);
    if (seg == nullptr) continue;
    const uint64_t start = std::max<uint64_t>(offset, format::kSegmentHeaderSize);
    if (id == active_id_ || start < seg->info.end_offset) return id * segment_size_ + start;
  }
  return tail_;
}

absl::Status Log::RecordAt(uint64_t address, RecordHeader* header,
                           absl::string_view* record) const {
  const uint64_t id = address / segment_size_;
  const Segment* seg = SegmentById(id);
  const uint64_t offset = address - id * segment_size_;
  uint64_t end = 0;  // end of the data a record starting there may use
  if (seg != nullptr) {
    end = FileEnd(*seg);
    // In the active segment a record lies wholly in the file or wholly in
    // the buffer.
    if (id == active_id_ && offset >= end) end = tail_ - id * segment_size_;
  }
  if (seg == nullptr || offset < format::kSegmentHeaderSize || offset >= end) {
    return absl::InvalidArgumentError(absl::StrCat("no record at address ", address));
  }
  const uint64_t avail = end - offset;
  auto hdr = Read(address, std::min<uint64_t>(avail, format::kRecordHeaderSize));
  if (!hdr.ok()) return hdr.status();
  if (hdr->size() < format::kRecordHeaderSize ||
      !DecodeRecordHeader(hdr->data(), format::kMaxValueSizeLimit, header) ||
      header->size() > avail) {
    return absl::InvalidArgumentError(absl::StrCat("no record at address ", address));
  }
  auto rec = Read(address, header->size());
  if (!rec.ok()) return rec.status();
  if (!RecordCrcMatches(rec->data(), *header)) {
    return absl::InvalidArgumentError(absl::StrCat("no record at address ", address));
  }
  *record = *rec;
  return absl::OkStatus();
}

absl::Status Log::AddCheckpoint(const CheckpointInfo& info, size_t keep) {
  max_checkpoint_id_ = std::max(max_checkpoint_id_, info.id);
  std::vector<CheckpointInfo> list = checkpoints_;
  list.push_back(info);
  std::vector<CheckpointInfo> dropped;
  while (list.size() > std::max<size_t>(keep, 1)) {
    dropped.push_back(list.front());
    list.erase(list.begin());
  }
  if (absl::Status s = WriteManifest(Segments(), list); !s.ok()) return s;
  checkpoints_ = std::move(list);
  // The checkpoint is listed, durably: it is taken. What follows is
  // cleanup, and a file it leaves (or that a crash brings back) is not
  // listed, so the next Open() removes it: a failure is only logged.
  for (const CheckpointInfo& c : dropped) {
    const std::string path = JoinPath(options_.dir, CheckpointFileName(c.id));
    if (absl::Status s = RemoveUnlisted(path); !s.ok()) {
      LOG(WARNING) << "removing " << path << " (no longer in the MANIFEST): " << s;
    }
  }
  // (A removal in the background has no unlink to sync yet.)
  if (!dropped.empty() && remover_ == nullptr) {
    if (absl::Status s = fs_->SyncDir(options_.dir); !s.ok()) {
      LOG(WARNING) << "syncing " << options_.dir << " after removing checkpoints: " << s;
    }
  }
  return absl::OkStatus();
}

absl::Status Log::RemoveUnlistedCheckpoint(uint64_t id) {
  for (const CheckpointInfo& c : checkpoints_) {
    if (c.id == id) {
      return absl::FailedPreconditionError(absl::StrCat("checkpoint ", id, " is listed"));
    }
  }
  return RemoveUnlisted(JoinPath(options_.dir, CheckpointFileName(id)));
}

absl::Status Log::DropCheckpoint(uint64_t id) {
  std::vector<CheckpointInfo> list;
  for (const CheckpointInfo& c : checkpoints_) {
    if (c.id != id) list.push_back(c);
  }
  if (list.size() == checkpoints_.size()) return absl::OkStatus();
  if (absl::Status s = WriteManifest(Segments(), list); !s.ok()) return s;
  checkpoints_ = std::move(list);
  // Dropped from the MANIFEST: done. The file is cleanup (see AddCheckpoint).
  const std::string path = JoinPath(options_.dir, CheckpointFileName(id));
  absl::Status s = RemoveUnlisted(path);
  if (s.ok() && remover_ == nullptr) s = fs_->SyncDir(options_.dir);
  if (!s.ok()) LOG(WARNING) << "removing " << path << " (no longer in the MANIFEST): " << s;
  return absl::OkStatus();
}

absl::Status Log::RemoveSegment(uint64_t id) { return RemoveSegments({id}); }

absl::Status Log::RemoveSegments(const std::vector<uint64_t>& ids,
                                 uint64_t version_floor) {
  for (uint64_t id : ids) {
    if (id >= active_id_ || SegmentById(id) == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("segment ", id, " is not a sealed segment of this log"));
    }
  }
  std::vector<SegmentInfo> infos;
  for (const SegmentInfo& info : Segments()) {
    if (std::find(ids.begin(), ids.end(), info.id) == ids.end()) infos.push_back(info);
  }
  // A floor kept after a failed write is still true: nothing is lost.
  version_floor_ = std::max(version_floor_, version_floor);
  if (absl::Status s = WriteManifest(infos); !s.ok()) return s;
  // The manifest no longer lists them: from here on, a file that survives
  // (a failed unlink, or an unlink a crash undoes: the directory is not
  // synced for it) is an orphan, which Open() removes.
  for (uint64_t id : ids) segments_[id - first_id_].reset();
  while (!segments_.empty() && segments_.front() == nullptr) {
    segments_.erase(segments_.begin());
    ++first_id_;
  }
  for (uint64_t id : ids) {
    absl::Status s = RemoveUnlisted(PathOf(id));
    if (!s.ok()) {
      LOG(WARNING) << "removing " << PathOf(id) << " (no longer in the MANIFEST): " << s;
    }
  }
  return absl::OkStatus();
}

std::vector<SegmentInfo> Log::Segments() const {
  std::vector<SegmentInfo> out;
  for (const auto& seg : segments_) {
    if (seg != nullptr) out.push_back(seg->info);
  }
  if (!out.empty()) out.back().end_offset = tail_ - active_base_;
  return out;
}

}  // namespace segkv::worker
