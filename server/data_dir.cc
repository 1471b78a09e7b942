#include "server/data_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace segkv::server {
namespace {

constexpr char kIdentity[] = "SEGKV";
constexpr char kHeader[] = "segkv data directory";

}  // namespace

std::string PartitionDir(const std::string& dir, uint32_t partition) {
  return worker::JoinPath(dir, absl::StrCat("p", partition));
}

absl::StatusOr<std::unique_ptr<DataDirLock>> DataDirLock::Acquire(
    const std::string& dir) {
  const std::string path = worker::JoinPath(dir, "LOCK");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    return absl::UnavailableError(absl::StrCat("open ", path, ": ", std::strerror(err)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " is in use: another segkvd holds ", path));
    }
    return absl::UnavailableError(absl::StrCat("flock ", path, ": ", std::strerror(err)));
  }
  return std::unique_ptr<DataDirLock>(new DataDirLock(fd));
}

DataDirLock::~DataDirLock() { ::close(fd_); }

absl::StatusOr<bool> DataDirExists(worker::FileSystem* fs, const std::string& dir) {
  return fs->PathExists(worker::JoinPath(dir, kIdentity));
}

absl::StatusOr<uint32_t> OpenDataDir(worker::FileSystem* fs, const std::string& dir,
                                     uint32_t partitions, uint32_t new_partitions,
                                     std::unique_ptr<DataDirLock>* lock) {
  if (partitions == 0 && new_partitions == 0) {
    return absl::InvalidArgumentError("need at least one partition");
  }
  if (absl::Status s = fs->CreateDir(dir); !s.ok()) return s;
  // Make the directory's name durable in its parent, and its own entries
  // (the identity file a killed process may have renamed into place but not
  // synced): what is built on them must not vanish in a power loss.
  const size_t slash = dir.find_last_of('/', dir.find_last_not_of('/'));
  const std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
  if (absl::Status s = fs->SyncDir(parent); !s.ok()) return s;
  if (absl::Status s = fs->SyncDir(dir); !s.ok()) return s;
  if (lock != nullptr) {
    auto l = DataDirLock::Acquire(dir);
    if (!l.ok()) return l.status();
    *lock = std::move(*l);
  }
  const std::string path = worker::JoinPath(dir, kIdentity);
  // A lookup that fails (EIO, EACCES) is an error, not a new data dir: that
  // would rewrite the partition count of an existing one.
  auto exists = fs->PathExists(path);
  if (!exists.ok()) return exists.status();
  if (!*exists) {
    auto partitions_exist = fs->PathExists(PartitionDir(dir, 0));
    if (!partitions_exist.ok()) return partitions_exist.status();
    if (*partitions_exist) {
      return absl::DataLossError(absl::StrCat(
          dir, " holds partition directories but no ", kIdentity, " file"));
    }
    if (partitions == 0) partitions = new_partitions;
    absl::Status s = worker::WriteFileAtomically(
        fs, dir, kIdentity,
        absl::StrCat(kHeader, "\nformat 1\npartitions ", partitions, "\n"));
    if (!s.ok()) return s;
    return partitions;
  }
  auto data = fs->ReadFileToString(path);
  if (!data.ok()) return data.status();
  std::vector<absl::string_view> lines = absl::StrSplit(*data, '\n');
  uint32_t existing = 0;
  if (lines.size() < 3 || lines[0] != kHeader || lines[1] != "format 1" ||
      !absl::ConsumePrefix(&lines[2], "partitions ") ||
      !absl::SimpleAtoi(lines[2], &existing) || existing == 0) {
    return absl::DataLossError(absl::StrCat(path, " is damaged or not a segkv identity file"));
  }
  if (partitions == 0) return existing;
  if (existing != partitions) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " was created with ", existing, " partitions but ", partitions,
        " were asked for (--workers): keys are routed by partition count, so "
        "it cannot change; start with --workers=", existing, " (or 0)"));
  }
  return partitions;
}

}  // namespace segkv::server
