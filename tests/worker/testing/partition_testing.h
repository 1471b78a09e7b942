// Helpers shared by the storage engine's tests.
#ifndef SEGKV_TESTS_WORKER_TESTING_PARTITION_TESTING_H_
#define SEGKV_TESTS_WORKER_TESTING_PARTITION_TESTING_H_

#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "worker/fs.h"
#include "worker/manifest.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"

namespace segkv::worker::testing {

inline const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

// Matches an absl::Status or absl::StatusOr<T> with the given code.
MATCHER_P(StatusIs, code,
          std::string("has status code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = StatusOf(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}

// The status code and a matcher of its message.
MATCHER_P2(StatusIs, code, message,
           std::string("has status code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = StatusOf(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message, std::string(s.message()), result_listener);
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = StatusOf(arg);
  *result_listener << "status is " << s;
  return s.ok();
}

inline constexpr char kDir[] = "/data/p0";

// Forwards every call to `base`: a test overrides the ones it changes.
class ForwardingFileSystem : public FileSystem {
 public:
  explicit ForwardingFileSystem(FileSystem* base) : base_(base) {}
  absl::StatusOr<std::unique_ptr<WritableFile>> OpenWritable(const std::string& path,
                                                             bool truncate) override {
    return base_->OpenWritable(path, truncate);
  }
  absl::StatusOr<std::unique_ptr<ReadableFile>> OpenReadable(const std::string& path,
                                                             uint64_t max_size) override {
    return base_->OpenReadable(path, max_size);
  }
  absl::StatusOr<std::string> ReadFileToString(const std::string& path) override {
    return base_->ReadFileToString(path);
  }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_->ListDir(dir);
  }
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    return base_->FileSize(path);
  }
  absl::Status Remove(const std::string& path) override { return base_->Remove(path); }
  absl::Status Rename(const std::string& from, const std::string& to) override {
    return base_->Rename(from, to);
  }
  absl::Status SyncDir(const std::string& dir) override { return base_->SyncDir(dir); }
  absl::Status CreateDir(const std::string& dir) override { return base_->CreateDir(dir); }
  absl::StatusOr<bool> PathExists(const std::string& path) override {
    return base_->PathExists(path);
  }

 private:
  FileSystem* const base_;
};

// Options for tests: the in-memory file system, tiny segments (8 KiB) and
// values of at most 512 bytes, so a few dozen records fill a segment.
inline PartitionOptions SmallOptions(FileSystem* fs,
                                     Durability d = Durability::kAlways) {
  PartitionOptions o;
  o.fs = fs;
  o.dir = kDir;
  o.segment_size = 8 << 10;
  o.max_value_size = 512;
  o.write_buffer_size = 1 << 10;
  o.durability = d;
  // Tests take checkpoints where they mean to; those about the checkpoint
  // a clean close takes turn it back on.
  o.checkpoint_on_close = false;
  // A victim compaction did not read is read before it goes, and any live
  // record in it is a crash.
  o.verify_compaction = true;
  return o;
}

inline std::string SegmentPath(uint64_t id, const std::string& dir = kDir) {
  return dir + "/" + SegmentFileName(id);
}

inline std::string CheckpointPath(uint64_t id, const std::string& dir = kDir) {
  return dir + "/" + CheckpointFileName(id);
}

// A key's value and version, as Get or Scan report them.
struct Stored {
  std::string value;
  uint64_t version = 0;

  bool operator==(const Stored&) const = default;
  friend std::ostream& operator<<(std::ostream& os, const Stored& s) {
    return os << "{\"" << (s.value.size() > 24 ? s.value.substr(0, 24) + "..." : s.value)
              << "\" (" << s.value.size() << " B), v" << s.version << "}";
  }
};
// Every live key of a partition.
using Dump = std::map<std::string, Stored>;

// Dumps every live key with Scan, in small pages. INTERNAL if a key comes
// back twice (nothing is written meanwhile, so each must come once) or if
// the key count disagrees with Stats().keys.
inline absl::StatusOr<Dump> DumpAll(Partition& p) {
  Dump out;
  uint64_t cursor = 0;
  do {
    std::vector<ScanItem> items;
    auto next = p.Scan(cursor, "", 7, /*keys_only=*/false, 1 << 20, &items);
    if (!next.ok()) return next.status();
    for (ScanItem& item : items) {
      auto [it, fresh] = out.emplace(item.key, Stored{item.value, item.version});
      if (!fresh) {
        return absl::InternalError(absl::StrCat("Scan returned key ", item.key, " twice"));
      }
    }
    cursor = *next;
  } while (cursor != 0);
  if (out.size() != p.Stats().keys) {
    return absl::InternalError(absl::StrCat("Scan found ", out.size(),
                                            " keys, Stats().keys is ",
                                            p.Stats().keys));
  }
  return out;
}

// Names in `dir` that start with `prefix` and end with `suffix`.
inline std::vector<std::string> FilesIn(FileSystem* fs, const std::string& dir,
                                        absl::string_view prefix,
                                        absl::string_view suffix = "") {
  std::vector<std::string> out;
  auto names = fs->ListDir(dir);
  if (!names.ok()) return out;
  for (const std::string& n : *names) {
    if (absl::StartsWith(n, prefix) && absl::EndsWith(n, suffix)) out.push_back(n);
  }
  return out;
}

inline std::vector<std::string> CheckpointFiles(FileSystem* fs,
                                                const std::string& dir = kDir) {
  return FilesIn(fs, dir, "ckpt-", ".idx");
}

// Removes every checkpoint file of `dir` (the MANIFEST still lists them).
inline absl::Status RemoveCheckpointFiles(FileSystem* fs,
                                          const std::string& dir = kDir) {
  for (const std::string& name : CheckpointFiles(fs, dir)) {
    if (absl::Status s = fs->Remove(dir + "/" + name); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Removes the checkpoint files, opens the partition (which must then
// replay the whole log), dumps it and closes it; then puts the checkpoint
// files and the MANIFEST back as they were (the open drops the checkpoints
// it could not load). The partition of `o` must not be open.
inline absl::StatusOr<Dump> FullReplayDump(const PartitionOptions& o) {
  std::vector<std::pair<std::string, std::string>> saved;  // name, bytes
  std::vector<std::string> names = CheckpointFiles(o.fs, o.dir);
  names.push_back("MANIFEST");
  for (const std::string& name : names) {
    auto bytes = o.fs->ReadFileToString(o.dir + "/" + name);
    if (!bytes.ok()) return bytes.status();
    saved.emplace_back(name, std::move(*bytes));
  }
  if (absl::Status s = RemoveCheckpointFiles(o.fs, o.dir); !s.ok()) return s;
  absl::StatusOr<Dump> dump;
  {
    auto p = Partition::Open(o);
    if (!p.ok()) return p.status();
    if ((*p)->Stats().recovered.checkpoint_id.has_value()) {
      return absl::InternalError(absl::StrCat(
          "with every checkpoint file removed, the partition still recovered from "
          "checkpoint ", *(*p)->Stats().recovered.checkpoint_id));
    }
    dump = DumpAll(**p);
    if (absl::Status s = (*p)->Close(); !s.ok()) return s;
  }
  for (const auto& [name, bytes] : saved) {
    if (absl::Status s = WriteFileAtomically(o.fs, o.dir, name, bytes); !s.ok()) return s;
  }
  return dump;
}

// Every key of `model` reads its value and version with Get, and Scan lists
// exactly `model` (so no other key is live). Use with
// ASSERT_NO_FATAL_FAILURE.
inline void ExpectContents(Partition& p, const Dump& model) {
  ReadResult r;
  for (const auto& [key, want] : model) {
    ASSERT_THAT(p.Get(key, &r), IsOk()) << key;
    ASSERT_TRUE(r.found) << key << " is missing";
    ASSERT_EQ(r.value, want.value) << key;
    ASSERT_EQ(r.version, want.version) << key;
  }
  auto dump = DumpAll(p);
  ASSERT_THAT(dump, IsOk());
  ASSERT_EQ(*dump, model);
}

}  // namespace segkv::worker::testing

#endif  // SEGKV_TESTS_WORKER_TESTING_PARTITION_TESTING_H_
