#include "worker/mem_fs.h"

#include <algorithm>
#include <cerrno>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace segkv::worker {

class MemFileSystem::File : public WritableFile {
 public:
  File(MemFileSystem* fs, std::string path, std::shared_ptr<Inode> inode,
       uint64_t generation)
      : fs_(fs), path_(std::move(path)), inode_(std::move(inode)),
        generation_(generation) {}

  absl::Status Append(absl::string_view data) override {
    absl::MutexLock l(&fs_->mu_);
    if (auto s = fs_->CheckGeneration(generation_); !s.ok()) return s;
    if (auto s = fs_->CheckKill(); !s.ok()) return s;
    size_t n = data.size();
    int err = 0;
    if (fs_->appends_before_failure_ == 0) {
      err = fs_->append_errno_;
      n /= 2;  // A failing write leaves a partial prefix behind.
    } else if (fs_->appends_before_failure_ > 0) {
      --fs_->appends_before_failure_;
    }
    if (fs_->capacity_ > 0) {
      uint64_t used = fs_->TotalBytes();
      uint64_t room = used >= fs_->capacity_ ? 0 : fs_->capacity_ - used;
      if (n > room) {
        n = room;
        err = ENOSPC;
      }
    }
    inode_->data.append(data.data(), n);
    if (err != 0) return ErrnoToStatus(err, "write", path_);
    fs_->CountOp();
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    absl::MutexLock l(&fs_->mu_);
    if (auto s = fs_->CheckGeneration(generation_); !s.ok()) return s;
    if (auto s = fs_->CheckKill(); !s.ok()) return s;
    Inode& f = *inode_;
    if (auto s = fs_->MaybeFailSync(path_); !s.ok()) {
      // The unsynced bytes' pages are now clean but not on the disk.
      if (f.data.size() > f.durable.size()) {
        const uint64_t b = f.durable.size(), e = f.data.size();
        f.lost_begin = f.lost_end > f.lost_begin ? std::min<uint64_t>(f.lost_begin, b) : b;
        f.lost_end = std::max<uint64_t>(f.lost_end, e);
      }
      return s;
    }
    f.durable = f.data;
    for (uint64_t i = f.lost_begin; i < std::min<uint64_t>(f.lost_end, f.durable.size()); ++i) {
      f.durable[i] = '\0';
    }
    f.rewritten = false;
    fs_->CountOp();
    return absl::OkStatus();
  }

  absl::Status Truncate(uint64_t size) override {
    absl::MutexLock l(&fs_->mu_);
    if (auto s = fs_->CheckGeneration(generation_); !s.ok()) return s;
    if (auto s = fs_->CheckKill(); !s.ok()) return s;
    Inode& f = *inode_;
    if (size < f.durable.size()) f.rewritten = true;
    f.data.resize(size, '\0');
    f.lost_end = std::min<uint64_t>(f.lost_end, size);
    if (f.lost_end <= f.lost_begin) f.lost_begin = f.lost_end = 0;
    fs_->CountOp();
    return absl::OkStatus();
  }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    absl::MutexLock l(&fs_->mu_);
    if (auto s = fs_->CheckGeneration(generation_); !s.ok()) return s;
    if (auto s = fs_->CheckKill(); !s.ok()) return s;
    Inode& f = *inode_;
    if (offset + data.size() > f.data.size()) {
      return absl::InvalidArgumentError(absl::StrCat("write past the end of ", path_));
    }
    f.data.replace(offset, data.size(), data.data(), data.size());
    if (offset < f.durable.size()) f.rewritten = true;
    // Written again: dirty. What is left lost is what this did not cover
    // (kept whole if the write fell in its middle).
    const uint64_t end = offset + data.size();
    if (offset <= f.lost_begin && end >= f.lost_end) {
      f.lost_begin = f.lost_end = 0;
    } else if (offset <= f.lost_begin && end > f.lost_begin) {
      f.lost_begin = end;
    } else if (end >= f.lost_end && offset < f.lost_end) {
      f.lost_end = offset;
    }
    fs_->CountOp();
    return absl::OkStatus();
  }

  uint64_t Size() const override {
    absl::MutexLock l(&fs_->mu_);
    return inode_->data.size();
  }

 private:
  MemFileSystem* const fs_;
  const std::string path_;
  const std::shared_ptr<Inode> inode_;
  const uint64_t generation_;
};

class MemFileSystem::Reader : public ReadableFile {
 public:
  Reader(MemFileSystem* fs, std::string path, std::shared_ptr<Inode> inode,
         uint64_t generation)
      : fs_(fs), path_(std::move(path)), inode_(std::move(inode)),
        generation_(generation) {}

  absl::StatusOr<absl::string_view> Read(uint64_t offset,
                                        size_t n) const override {
    absl::MutexLock l(&fs_->mu_);
    if (auto s = fs_->CheckGeneration(generation_); !s.ok()) return s;
    const std::string& d = inode_->data;
    if (offset > d.size() || n > d.size() - offset) {
      return absl::DataLossError(absl::StrCat("read of ", n, " bytes at ",
                                              offset, " past the end of ",
                                              path_));
    }
    return absl::string_view(d.data() + offset, n);
  }

 private:
  MemFileSystem* const fs_;
  const std::string path_;
  const std::shared_ptr<Inode> inode_;
  const uint64_t generation_;
};

MemFileSystem::MemFileSystem() = default;
MemFileSystem::~MemFileSystem() = default;

std::string MemFileSystem::ParentDir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return "";
  return path.substr(0, slash);
}

absl::Status MemFileSystem::CheckGeneration(uint64_t generation) const {
  if (generation != generation_) {
    return absl::UnavailableError("file handle from before a simulated crash");
  }
  return absl::OkStatus();
}

uint64_t MemFileSystem::TotalBytes() const {
  uint64_t total = 0;
  for (const auto& [path, inode] : live_) total += inode->data.size();
  return total;
}

absl::Status MemFileSystem::MaybeFailSync(const std::string& what) {
  if (syncs_before_failure_ == 0) return ErrnoToStatus(sync_errno_, "fsync", what);
  if (syncs_before_failure_ > 0) --syncs_before_failure_;
  ++sync_count_;
  return absl::OkStatus();
}

absl::Status MemFileSystem::CheckKill() {
  if (!killed_ && ops_before_kill_ == 0) killed_ = true;
  if (killed_) return absl::UnavailableError("killed at kill point");
  return absl::OkStatus();
}

void MemFileSystem::CountOp() {
  ++mutating_ops_;
  if (ops_before_kill_ > 0) --ops_before_kill_;
}

absl::StatusOr<std::unique_ptr<WritableFile>> MemFileSystem::OpenWritable(
    const std::string& path, bool truncate) {
  absl::MutexLock l(&mu_);
  if (auto s = CheckKill(); !s.ok()) return s;
  if (!dirs_.contains(ParentDir(path))) return ErrnoToStatus(ENOENT, "open", path);
  auto& inode = live_[path];
  if (inode == nullptr) {
    inode = std::make_shared<Inode>();
    pending_names_.push_back({PendingName::kCreate, path, "", inode});
  } else if (truncate) {
    if (!inode->durable.empty()) inode->rewritten = true;
    inode->data.clear();
  }
  CountOp();
  return std::make_unique<File>(this, path, inode, generation_);
}

absl::StatusOr<std::unique_ptr<ReadableFile>> MemFileSystem::OpenReadable(
    const std::string& path, uint64_t max_size) {
  absl::MutexLock l(&mu_);
  auto it = live_.find(path);
  if (it == live_.end()) return ErrnoToStatus(ENOENT, "open", path);
  return std::make_unique<Reader>(this, path, it->second, generation_);
}

absl::StatusOr<std::string> MemFileSystem::ReadFileToString(
    const std::string& path) {
  absl::MutexLock l(&mu_);
  auto it = live_.find(path);
  if (it == live_.end()) return ErrnoToStatus(ENOENT, "open", path);
  return it->second->data;
}

absl::StatusOr<std::vector<std::string>> MemFileSystem::ListDir(
    const std::string& dir) {
  absl::MutexLock l(&mu_);
  if (!dirs_.contains(dir)) return ErrnoToStatus(ENOENT, "opendir", dir);
  std::vector<std::string> names;
  for (const auto& [path, inode] : live_) {
    if (ParentDir(path) == dir) names.push_back(path.substr(dir.size() + 1));
  }
  for (const std::string& d : dirs_) {
    if (!d.empty() && ParentDir(d) == dir) names.push_back(d.substr(dir.size() + 1));
  }
  return names;
}

absl::StatusOr<uint64_t> MemFileSystem::FileSize(const std::string& path) {
  absl::MutexLock l(&mu_);
  auto it = live_.find(path);
  if (it == live_.end()) return ErrnoToStatus(ENOENT, "stat", path);
  return it->second->data.size();
}

absl::Status MemFileSystem::Remove(const std::string& path) {
  absl::MutexLock l(&mu_);
  if (auto s = CheckKill(); !s.ok()) return s;
  if (live_.erase(path) == 0) return ErrnoToStatus(ENOENT, "unlink", path);
  pending_names_.push_back({PendingName::kRemove, path, "", nullptr});
  CountOp();
  return absl::OkStatus();
}

absl::Status MemFileSystem::Rename(const std::string& from,
                                   const std::string& to) {
  absl::MutexLock l(&mu_);
  if (auto s = CheckKill(); !s.ok()) return s;
  auto it = live_.find(from);
  if (it == live_.end()) return ErrnoToStatus(ENOENT, "rename", from);
  auto inode = it->second;
  live_.erase(it);
  pending_names_.push_back({PendingName::kRename, from, to, inode});
  live_[to] = std::move(inode);
  CountOp();
  return absl::OkStatus();
}

absl::Status MemFileSystem::SyncDir(const std::string& dir) {
  absl::MutexLock l(&mu_);
  if (auto s = CheckKill(); !s.ok()) return s;
  if (!dirs_.contains(dir)) return ErrnoToStatus(ENOENT, "open", dir);
  if (auto s = MaybeFailSync(dir); !s.ok()) return s;
  for (auto it = durable_.begin(); it != durable_.end();) {
    it = ParentDir(it->first) == dir ? durable_.erase(it) : std::next(it);
  }
  for (const auto& [path, inode] : live_) {
    if (ParentDir(path) == dir) durable_[path] = inode;
  }
  // What this directory's pending changes did is durable now.
  std::erase_if(pending_names_, [&](const PendingName& p) {
    return ParentDir(p.path) == dir && (p.kind != PendingName::kRename || ParentDir(p.to) == dir);
  });
  CountOp();
  return absl::OkStatus();
}

absl::Status MemFileSystem::CreateDir(const std::string& dir) {
  absl::MutexLock l(&mu_);
  if (auto s = CheckKill(); !s.ok()) return s;
  // Directories are durable at once in this model, as FileSystem::CreateDir
  // promises (the POSIX one fsyncs the parent of each directory it makes).
  for (std::string d = dir; !d.empty(); d = ParentDir(d)) dirs_.insert(d);
  dirs_.insert("");
  CountOp();
  return absl::OkStatus();
}

absl::StatusOr<bool> MemFileSystem::PathExists(const std::string& path) {
  absl::MutexLock l(&mu_);
  return live_.contains(path) || dirs_.contains(path);
}

void MemFileSystem::Crash(uint64_t seed, bool keep_unsynced) {
  absl::MutexLock l(&mu_);
  std::mt19937_64 rng(seed);
  ++generation_;
  // A journaling file system commits name changes in order: any prefix of
  // those not yet made durable by a directory sync may have reached the
  // disk (none without keep_unsynced).
  const size_t names_kept = keep_unsynced ? rng() % (pending_names_.size() + 1) : 0;
  for (size_t i = 0; i < names_kept; ++i) {
    const PendingName& p = pending_names_[i];
    switch (p.kind) {
      case PendingName::kCreate:
        durable_[p.path] = p.inode;
        break;
      case PendingName::kRemove:
        durable_.erase(p.path);
        break;
      case PendingName::kRename:
        durable_.erase(p.path);
        durable_[p.to] = p.inode;
        break;
    }
  }
  pending_names_.clear();
  live_ = durable_;
  for (auto& [path, inode] : live_) {
    std::string& d = inode->data;
    const std::string& durable = inode->durable;
    if (inode->rewritten || d.size() < durable.size() || !keep_unsynced) {
      d = durable;
    } else {
      // Appends only extend the durable prefix; keep a random part of them
      // (none of what a failed sync lost: those pages are never written).
      size_t extra = d.size() - durable.size();
      if (inode->lost_end > inode->lost_begin && inode->lost_begin >= durable.size()) {
        extra = std::min<size_t>(extra, inode->lost_begin - durable.size());
      }
      size_t keep = extra == 0 ? 0 : rng() % (extra + 1);
      d = durable + d.substr(durable.size(), keep);
      // Pages reach the disk in any order: within what is kept, one 4 KiB
      // page in four (by file offset) never made it and reads as zeros.
      constexpr uint64_t kPage = 4096;
      for (uint64_t page = durable.size() / kPage * kPage; page < d.size(); page += kPage) {
        if (rng() % 4 != 0) continue;
        const uint64_t from = std::max<uint64_t>(page, durable.size());
        const uint64_t to = std::min<uint64_t>(page + kPage, d.size());
        std::fill(d.begin() + from, d.begin() + to, '\0');
      }
    }
    inode->durable = d;
    inode->rewritten = false;
    inode->lost_begin = inode->lost_end = 0;
  }
  appends_before_failure_ = -1;
  syncs_before_failure_ = -1;
  ops_before_kill_ = -1;
  killed_ = false;
}

void MemFileSystem::FailAppendsAfter(int64_t n, int err) {
  absl::MutexLock l(&mu_);
  appends_before_failure_ = n;
  append_errno_ = err;
}

void MemFileSystem::FailSyncsAfter(int64_t n, int err) {
  absl::MutexLock l(&mu_);
  syncs_before_failure_ = n;
  sync_errno_ = err;
}

void MemFileSystem::KillAfterOps(int64_t n) {
  absl::MutexLock l(&mu_);
  ops_before_kill_ = n < 0 ? -1 : n;
  killed_ = false;
}

uint64_t MemFileSystem::MutatingOps() {
  absl::MutexLock l(&mu_);
  return mutating_ops_;
}

bool MemFileSystem::killed() {
  absl::MutexLock l(&mu_);
  return killed_ || ops_before_kill_ == 0;
}

void MemFileSystem::SetCapacity(uint64_t bytes) {
  absl::MutexLock l(&mu_);
  capacity_ = bytes;
}

bool MemFileSystem::OverwriteFile(const std::string& path,
                                  std::string contents) {
  absl::MutexLock l(&mu_);
  auto it = live_.find(path);
  if (it == live_.end()) return false;
  it->second->data = contents;
  it->second->durable = std::move(contents);
  return true;
}

std::string MemFileSystem::Contents(const std::string& path) {
  absl::MutexLock l(&mu_);
  auto it = live_.find(path);
  return it == live_.end() ? std::string() : it->second->data;
}

uint64_t MemFileSystem::SyncCount() {
  absl::MutexLock l(&mu_);
  return sync_count_;
}

}  // namespace segkv::worker
