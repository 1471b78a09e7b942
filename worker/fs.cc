#include "worker/fs.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace segkv::worker {

absl::Status ErrnoToStatus(int err, absl::string_view op,
                           absl::string_view path) {
  std::string msg = absl::StrCat(op, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::Status WriteFileAtomically(FileSystem* fs, const std::string& dir,
                                 const std::string& name,
                                 absl::string_view contents, bool* renamed) {
  if (renamed != nullptr) *renamed = false;
  const std::string path = JoinPath(dir, name);
  const std::string tmp = path + ".tmp";
  {
    auto file = fs->OpenWritable(tmp, /*truncate=*/true);
    if (!file.ok()) return file.status();
    absl::Status s = (*file)->Append(contents);
    if (s.ok()) s = (*file)->Sync();
    if (!s.ok()) {
      fs->Remove(tmp).IgnoreError();  // Best effort: a stale tmp is harmless.
      return s;
    }
  }
  if (absl::Status s = fs->Rename(tmp, path); !s.ok()) {
    fs->Remove(tmp).IgnoreError();
    return s;
  }
  if (renamed != nullptr) *renamed = true;
  return fs->SyncDir(dir);
}

}  // namespace segkv::worker
