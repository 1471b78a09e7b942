#include "worker/posix_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace segkv::worker {
namespace {

// pwrite(2) all of `data` at `offset` (retrying short writes and EINTR).
// Returns how many bytes were written in *written, also on error.
absl::Status PwriteAll(int fd, absl::string_view data, uint64_t offset,
                       const std::string& path, uint64_t* written) {
  *written = 0;
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), offset + *written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "write", path);
    }
    *written += n;
    data.remove_prefix(n);
  }
  return absl::OkStatus();
}

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixWritableFile() override { ::close(fd_); }

  absl::Status Append(absl::string_view data) override {
    uint64_t written = 0;
    absl::Status s = PwriteAll(fd_, data, size_, path_, &written);
    size_ += written;  // a failed append may have written a prefix
    return s;
  }

  absl::Status Sync() override {
    if (::fdatasync(fd_) != 0) return ErrnoToStatus(errno, "fdatasync", path_);
    return absl::OkStatus();
  }

  absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
    if (offset + data.size() > size_) {
      return absl::InvalidArgumentError(absl::StrCat("write past the end of ", path_));
    }
    uint64_t written = 0;
    return PwriteAll(fd_, data, offset, path_, &written);
  }

  void StartWriteback(uint64_t offset, uint64_t n) override {
    ::sync_file_range(fd_, offset, n, SYNC_FILE_RANGE_WRITE);
  }

  absl::Status Truncate(uint64_t size) override {
    if (::ftruncate(fd_, size) != 0) {
      return ErrnoToStatus(errno, "ftruncate", path_);
    }
    size_ = size;
    return absl::OkStatus();
  }

  uint64_t Size() const override { return size_; }

 private:
  const std::string path_;
  const int fd_;
  uint64_t size_;
};

class MappedReadableFile : public ReadableFile {
 public:
  MappedReadableFile(std::string path, const char* base, uint64_t len)
      : path_(std::move(path)), base_(base), len_(len) {}
  ~MappedReadableFile() override {
    if (len_ > 0) ::munmap(const_cast<char*>(base_), len_);
  }

  absl::StatusOr<absl::string_view> Read(uint64_t offset,
                                        size_t n) const override {
    if (offset > len_ || n > len_ - offset) {
      return absl::DataLossError(absl::StrCat("read of ", n, " bytes at ",
                                              offset, " past the end of ",
                                              path_));
    }
    return absl::string_view(base_ + offset, n);
  }

 private:
  const std::string path_;
  const char* const base_;
  const uint64_t len_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WritableFile>> PosixFileSystem::OpenWritable(
    const std::string& path, bool truncate) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0);
  int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "fstat", path);
  }
  return std::make_unique<PosixWritableFile>(path, fd, st.st_size);
}

absl::StatusOr<std::unique_ptr<ReadableFile>> PosixFileSystem::OpenReadable(
    const std::string& path, uint64_t max_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  const char* base = nullptr;
  if (max_size > 0) {
    // Mapping past EOF is allowed; only bytes below the (growing) file size
    // are ever touched.
    void* p = ::mmap(nullptr, max_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "mmap", path);
    }
    base = static_cast<const char*>(p);
  }
  ::close(fd);  // The mapping keeps the file referenced.
  return std::make_unique<MappedReadableFile>(path, base, max_size);
}

absl::StatusOr<std::string> PosixFileSystem::ReadFileToString(
    const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "read", path);
    }
    if (n == 0) break;
    out.append(buf, n);
  }
  ::close(fd);
  return out;
}

absl::StatusOr<std::vector<std::string>> PosixFileSystem::ListDir(
    const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoToStatus(errno, "opendir", dir);
  std::vector<std::string> names;
  // readdir() returns null at the end and on an error alike; only errno
  // tells them apart. A listing cut short must not pass for a whole one
  // (a partition directory without its MANIFEST would look new).
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (e == nullptr) break;
    absl::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoToStatus(err, "readdir", dir);
  return names;
}

absl::StatusOr<uint64_t> PosixFileSystem::FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat", path);
  return static_cast<uint64_t>(st.st_size);
}

absl::Status PosixFileSystem::Remove(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return ErrnoToStatus(errno, "unlink", path);
  return absl::OkStatus();
}

absl::Status PosixFileSystem::Rename(const std::string& from,
                                     const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoToStatus(errno, "rename", absl::StrCat(from, " -> ", to));
  }
  return absl::OkStatus();
}

absl::Status PosixFileSystem::SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoToStatus(err, "fsync", dir);
  return absl::OkStatus();
}

absl::Status PosixFileSystem::CreateDir(const std::string& dir) {
  // Create each missing component, parents first, and make each one
  // durable in its parent (fsync of the parent) before going deeper. One
  // that exists is synced in its parent too, as far as that works: a
  // process killed between its mkdir and that fsync left it visible but not
  // durable. (Where it fails, a read-only root or an unreadable parent, no
  // segkv process can have made the directory: its creation would have
  // failed the same way.)
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string prefix = dir.substr(0, pos);
    bool existed = false;
    if (::mkdir(prefix.c_str(), 0755) != 0) {
      if (errno != EEXIST) return ErrnoToStatus(errno, "mkdir", prefix);
      existed = true;
    }
    const size_t slash = prefix.find_last_of('/');
    const std::string parent =
        slash == std::string::npos ? "." : slash == 0 ? "/" : prefix.substr(0, slash);
    if (existed) {
      SyncDir(parent).IgnoreError();
    } else if (absl::Status s = SyncDir(parent); !s.ok()) {
      return s;
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat", dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " exists and is not a directory"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> PosixFileSystem::PathExists(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return true;
  const int err = errno;
  if (err == ENOENT) return false;
  return ErrnoToStatus(err, "stat", path);
}

FileSystem* DefaultFileSystem() {
  static PosixFileSystem* fs = new PosixFileSystem();
  return fs;
}

}  // namespace segkv::worker
