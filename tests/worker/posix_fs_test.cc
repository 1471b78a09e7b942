#include "worker/posix_fs.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/fs.h"
#include "worker/partition.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

class PosixFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env = std::getenv("TEST_TMPDIR");
    std::string tmpl =
        absl::StrCat(env != nullptr && *env != '\0' ? env : "/tmp",
                     "/posix_fs_test.XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << "mkdtemp " << tmpl;
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string Path(absl::string_view name) const { return JoinPath(dir_, name); }
  bool Exists(const std::string& path) {
    auto e = fs_.PathExists(path);
    EXPECT_THAT(e, IsOk()) << path;
    return e.value_or(false);
  }
  void WriteFile(const std::string& path, const std::string& data) {
    auto f = fs_.OpenWritable(path, /*truncate=*/true);
    ASSERT_THAT(f, IsOk());
    ASSERT_THAT((*f)->Append(data), IsOk());
    ASSERT_THAT((*f)->Sync(), IsOk());
  }
  std::string Read(const std::string& path) {
    auto s = fs_.ReadFileToString(path);
    EXPECT_THAT(s, IsOk()) << path;
    return s.ok() ? *s : std::string();
  }

  PosixFileSystem fs_;
  std::string dir_;
};

TEST_F(PosixFsTest, DefaultFileSystemIsStable) {
  ASSERT_NE(DefaultFileSystem(), nullptr);
  EXPECT_EQ(DefaultFileSystem(), DefaultFileSystem());
}

TEST_F(PosixFsTest, AppendSizeSyncTruncate) {
  const std::string path = Path("file");
  auto f = fs_.OpenWritable(path, false);
  ASSERT_THAT(f, IsOk());
  WritableFile& w = **f;
  EXPECT_EQ(w.Size(), 0u);
  ASSERT_THAT(w.Append("hello"), IsOk());
  ASSERT_THAT(w.Append(" world"), IsOk());
  EXPECT_EQ(w.Size(), 11u);
  ASSERT_THAT(w.Sync(), IsOk());
  w.StartWriteback(0, 11);
  EXPECT_EQ(Read(path), "hello world");
  auto size = fs_.FileSize(path);
  ASSERT_THAT(size, IsOk());
  EXPECT_EQ(*size, 11u);

  ASSERT_THAT(w.Truncate(5), IsOk());
  EXPECT_EQ(w.Size(), 5u);
  ASSERT_THAT(w.Append("!"), IsOk());
  ASSERT_THAT(w.Sync(), IsOk());
  EXPECT_EQ(Read(path), "hello!");

  ASSERT_THAT(w.Truncate(8), IsOk());
  ASSERT_THAT(w.Append("?"), IsOk());
  EXPECT_EQ(Read(path), std::string("hello!\0\0?", 9));
}

TEST_F(PosixFsTest, WriteAtOverwritesInPlaceWithinTheFile) {
  const std::string path = Path("w");
  auto f = fs_.OpenWritable(path, false);
  ASSERT_THAT(f, IsOk());
  ASSERT_THAT((*f)->Append("abcdefgh"), IsOk());
  ASSERT_THAT((*f)->WriteAt(2, "XY"), IsOk());
  ASSERT_THAT((*f)->WriteAt(6, "gh"), IsOk());
  EXPECT_THAT((*f)->WriteAt(7, "zz"), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT((*f)->Sync(), IsOk());
  EXPECT_EQ((*f)->Size(), 8u);
  ASSERT_THAT((*f)->Append("i"), IsOk());  // appends still go to the end
  EXPECT_EQ(Read(path), "abXYefghi");
}

TEST_F(PosixFsTest, ReopenAppendsAtEndOrTruncates) {
  const std::string path = Path("file");
  WriteFile(path, "abc");
  {
    auto f = fs_.OpenWritable(path, /*truncate=*/false);
    ASSERT_THAT(f, IsOk());
    EXPECT_EQ((*f)->Size(), 3u);
    ASSERT_THAT((*f)->Append("def"), IsOk());
  }
  EXPECT_EQ(Read(path), "abcdef");
  {
    auto f = fs_.OpenWritable(path, /*truncate=*/true);
    ASSERT_THAT(f, IsOk());
    EXPECT_EQ((*f)->Size(), 0u);
  }
  EXPECT_EQ(Read(path), "");
}

TEST_F(PosixFsTest, OpenReadableReadsThroughMapping) {
  const std::string path = Path("data");
  std::string data(10000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  WriteFile(path, data);
  auto r = fs_.OpenReadable(path, data.size());
  ASSERT_THAT(r, IsOk());
  auto all = (*r)->Read(0, data.size());
  ASSERT_THAT(all, IsOk());
  EXPECT_EQ(*all, data);
  auto mid = (*r)->Read(4097, 100);
  ASSERT_THAT(mid, IsOk());
  EXPECT_EQ(*mid, data.substr(4097, 100));
  EXPECT_THAT((*r)->Read(data.size() - 1, 2),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT((*r)->Read(data.size() + 1, 0),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(PosixFsTest, MappingSeesBytesAppendedAfterOpen) {
  const std::string path = Path("growing");
  auto w = fs_.OpenWritable(path, false);
  ASSERT_THAT(w, IsOk());
  ASSERT_THAT((*w)->Append("first"), IsOk());
  auto r = fs_.OpenReadable(path, 1 << 20);
  ASSERT_THAT(r, IsOk());
  const std::string more(20000, 'm');
  ASSERT_THAT((*w)->Append(more), IsOk());
  ASSERT_THAT((*w)->Append("last"), IsOk());
  auto first = (*r)->Read(0, 5);
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(*first, "first");
  auto tail = (*r)->Read(5 + more.size(), 4);
  ASSERT_THAT(tail, IsOk());
  EXPECT_EQ(*tail, "last");
  EXPECT_THAT((*r)->Read((1 << 20) - 1, 2),
              StatusIs(absl::StatusCode::kDataLoss));
}

// A lookup that fails is an error, never "missing": the data dir and
// partition open decide from it whether to start afresh.
TEST_F(PosixFsTest, ALookupThatFailsIsAnErrorNotMissing) {
  WriteFile(Path("file"), "x");
  EXPECT_TRUE(Exists(Path("file")));
  EXPECT_THAT(fs_.PathExists(Path("file/child")), StatusIs(absl::StatusCode::kUnavailable));
  ASSERT_EQ(::symlink("loop", Path("loop").c_str()), 0);
  EXPECT_TRUE(Exists(Path("loop")));  // the link itself
  EXPECT_THAT(fs_.PathExists(Path("loop/child")), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(PosixFsTest, MissingFilesAreNotFound) {
  const std::string missing = Path("missing");
  EXPECT_FALSE(Exists(missing));
  EXPECT_THAT(fs_.OpenReadable(missing, 100),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.ReadFileToString(missing),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.FileSize(missing), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.Remove(missing), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.Rename(missing, Path("x")),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.ListDir(missing), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.SyncDir(missing), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.OpenWritable(Path("missing/file"), false),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(PosixFsTest, ErrorMessagesNamePath) {
  const std::string missing = Path("no-such-file");
  auto s = fs_.ReadFileToString(missing);
  ASSERT_THAT(s, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(missing));
}

TEST_F(PosixFsTest, ListDirNamesEntries) {
  auto empty = fs_.ListDir(dir_);
  ASSERT_THAT(empty, IsOk());
  EXPECT_TRUE(empty->empty());
  WriteFile(Path("a"), "1");
  WriteFile(Path("b"), "22");
  ASSERT_THAT(fs_.CreateDir(Path("sub")), IsOk());
  WriteFile(Path("sub/inner"), "3");
  auto names = fs_.ListDir(dir_);
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, UnorderedElementsAre("a", "b", "sub"));
}

TEST_F(PosixFsTest, RenameReplacesTarget) {
  WriteFile(Path("from"), "new");
  WriteFile(Path("to"), "old");
  ASSERT_THAT(fs_.Rename(Path("from"), Path("to")), IsOk());
  ASSERT_THAT(fs_.SyncDir(dir_), IsOk());
  EXPECT_FALSE(Exists(Path("from")));
  EXPECT_EQ(Read(Path("to")), "new");
}

TEST_F(PosixFsTest, RemoveDeletesFile) {
  WriteFile(Path("f"), "x");
  EXPECT_TRUE(Exists(Path("f")));
  ASSERT_THAT(fs_.Remove(Path("f")), IsOk());
  ASSERT_THAT(fs_.SyncDir(dir_), IsOk());
  EXPECT_FALSE(Exists(Path("f")));
  EXPECT_THAT(fs_.Remove(Path("f")), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(PosixFsTest, CreateDirMakesMissingParents) {
  const std::string nested = Path("a/b/c/d");
  ASSERT_THAT(fs_.CreateDir(nested), IsOk());
  EXPECT_TRUE(Exists(Path("a")));
  EXPECT_TRUE(Exists(Path("a/b/c")));
  EXPECT_TRUE(std::filesystem::is_directory(nested));
  EXPECT_THAT(fs_.CreateDir(nested), IsOk());
  EXPECT_THAT(fs_.CreateDir(nested + "/"), IsOk());
  WriteFile(nested + "/f", "x");
  EXPECT_THAT(fs_.SyncDir(nested), IsOk());
  EXPECT_EQ(Read(nested + "/f"), "x");
}

TEST_F(PosixFsTest, CreateDirOverAFileIsFailedPrecondition) {
  WriteFile(Path("plain"), "x");
  EXPECT_THAT(fs_.CreateDir(Path("plain")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(PosixFsTest, ErrnoToStatusMapping) {
  const struct {
    int err;
    absl::StatusCode code;
  } cases[] = {
      {ENOSPC, absl::StatusCode::kResourceExhausted},
      {EDQUOT, absl::StatusCode::kResourceExhausted},
      {ENOENT, absl::StatusCode::kNotFound},
      {EIO, absl::StatusCode::kUnavailable},
      {EBADF, absl::StatusCode::kUnavailable},
      {EACCES, absl::StatusCode::kPermissionDenied},
      {EPERM, absl::StatusCode::kPermissionDenied},
      {EROFS, absl::StatusCode::kPermissionDenied},
  };
  for (const auto& c : cases) {
    const absl::Status s = ErrnoToStatus(c.err, "fsync", "/some/path");
    EXPECT_THAT(s, StatusIs(c.code)) << "errno " << c.err;
    EXPECT_THAT(std::string(s.message()), HasSubstr("fsync"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("/some/path"));
  }
}

TEST_F(PosixFsTest, JoinPathAddsOneSlash) {
  EXPECT_EQ(JoinPath("/a", "b"), "/a/b");
  EXPECT_EQ(JoinPath("/a/", "b"), "/a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
}

TEST_F(PosixFsTest, WriteFileAtomicallyReplacesContentsAndLeavesNoTmp) {
  bool renamed = false;
  ASSERT_THAT(WriteFileAtomically(&fs_, dir_, "MANIFEST", "v1", &renamed),
              IsOk());
  EXPECT_TRUE(renamed);
  EXPECT_EQ(Read(Path("MANIFEST")), "v1");
  ASSERT_THAT(WriteFileAtomically(&fs_, dir_, "MANIFEST", "version two"),
              IsOk());
  EXPECT_EQ(Read(Path("MANIFEST")), "version two");
  EXPECT_FALSE(Exists(Path("MANIFEST.tmp")));
  auto names = fs_.ListDir(dir_);
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, UnorderedElementsAre("MANIFEST"));
}

TEST_F(PosixFsTest, WriteFileAtomicallyIntoMissingDirIsNotFound) {
  bool renamed = true;
  EXPECT_THAT(WriteFileAtomically(&fs_, Path("nope"), "MANIFEST", "x", &renamed),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(renamed);
}

TEST_F(PosixFsTest, PartitionSurvivesReopenOnRealDisk) {
  PartitionOptions o;
  o.fs = nullptr;
  o.dir = Path("p0");
  o.segment_size = 64 << 10;
  o.max_value_size = 1024;
  o.durability = Durability::kAlways;

  constexpr int kKeys = 5000;
  constexpr int kBatch = 100;
  auto key = [](int i) { return absl::StrCat("key-", i); };
  auto value = [](int i) {
    return absl::StrCat("value-", i, "-", std::string(i % 97, 'a' + i % 26));
  };
  std::vector<uint64_t> versions(kKeys);
  {
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    for (int start = 0; start < kKeys; start += kBatch) {
      std::vector<std::string> keys, values;
      for (int i = start; i < start + kBatch; ++i) {
        keys.push_back(key(i));
        values.push_back(value(i));
      }
      std::vector<WriteOp> ops;
      for (int j = 0; j < kBatch; ++j) ops.push_back(WriteOp::Put(keys[j], values[j]));
      std::vector<WriteResult> results;
      ASSERT_THAT((*p)->ApplyBatch(ops, &results), IsOk());
      ASSERT_EQ(results.size(), static_cast<size_t>(kBatch));
      for (int j = 0; j < kBatch; ++j) {
        ASSERT_THAT(results[j].status, IsOk()) << keys[j];
        EXPECT_GT(results[j].version, 0u);
        versions[start + j] = results[j].version;
      }
    }
    EXPECT_GT((*p)->Segments().size(), 5u);
    ASSERT_THAT((*p)->Close(), IsOk());
  }
  auto p = Partition::Open(o);
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ((*p)->Stats().keys, static_cast<uint64_t>(kKeys));
  int wrong = 0;
  for (int i = 0; i < kKeys; ++i) {
    ReadResult r;
    ASSERT_THAT((*p)->Get(key(i), &r), IsOk());
    if (!r.found || r.value != value(i) || r.version != versions[i]) {
      ADD_FAILURE() << key(i) << ": found=" << r.found << " version "
                    << r.version << " want " << versions[i];
      if (++wrong > 10) break;
    }
  }
  EXPECT_EQ(wrong, 0);
}

}  // namespace
}  // namespace segkv::worker
