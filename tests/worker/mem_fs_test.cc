#include "worker/mem_fs.h"

#include <cerrno>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/fs.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::StatusIs;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr char kDir[] = "/d";
constexpr char kA[] = "/d/a";
constexpr char kB[] = "/d/b";

class MemFsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_THAT(fs_.CreateDir(kDir), IsOk()); }

  std::unique_ptr<WritableFile> Open(const std::string& path,
                                     bool truncate = false) {
    auto f = fs_.OpenWritable(path, truncate);
    EXPECT_THAT(f, IsOk());
    return f.ok() ? std::move(*f) : nullptr;
  }
  // Creates `path` with `data` synced and its name made durable.
  void MakeDurable(const std::string& path, const std::string& data) {
    auto f = Open(path, /*truncate=*/true);
    ASSERT_NE(f, nullptr);
    ASSERT_THAT(f->Append(data), IsOk());
    ASSERT_THAT(f->Sync(), IsOk());
    ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  }
  std::string Read(const std::string& path) {
    auto s = fs_.ReadFileToString(path);
    EXPECT_THAT(s, IsOk()) << path;
    return s.ok() ? *s : std::string();
  }

  MemFileSystem fs_;
};

TEST_F(MemFsTest, SyncedFileWithoutSyncDirVanishesOnCrash) {
  auto f = Open(kA);
  ASSERT_THAT(f->Append("hello"), IsOk());
  ASSERT_THAT(f->Sync(), IsOk());
  EXPECT_TRUE(fs_.Exists(kA));
  fs_.Crash(1, /*keep_unsynced=*/false);  // (with it, a prefix may stay)
  EXPECT_FALSE(fs_.Exists(kA));
  EXPECT_THAT(fs_.ReadFileToString(kA), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.FileSize(kA), StatusIs(absl::StatusCode::kNotFound));
  auto names = fs_.ListDir(kDir);
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, IsEmpty());
}

// Unsynced name changes reach the disk in order: a crash keeps a prefix of
// them (with keep_unsynced), never a later one without the earlier ones.
TEST_F(MemFsTest, CrashKeepsAPrefixOfUnsyncedNameChanges) {
  std::set<std::pair<bool, bool>> outcomes;  // (a exists, b exists)
  for (uint64_t seed = 0; seed < 64; ++seed) {
    MemFileSystem fs;
    ASSERT_THAT(fs.CreateDir(kDir), IsOk());
    ASSERT_THAT(fs.OpenWritable(kA, false), IsOk());  // 1: create a
    ASSERT_THAT(fs.OpenWritable(kB, false), IsOk());  // 2: create b
    ASSERT_THAT(fs.Remove(kA), IsOk());               // 3: remove a
    fs.Crash(seed, /*keep_unsynced=*/true);
    outcomes.insert({fs.Exists(kA), fs.Exists(kB)});
  }
  // Prefixes 0..3: {}, {a}, {a, b}, {b}; every one seen.
  EXPECT_EQ(outcomes, (std::set<std::pair<bool, bool>>{
                          {false, false}, {true, false}, {true, true}, {false, true}}));
  // Without keep_unsynced none survives; a directory sync makes them durable.
  MemFileSystem fs;
  ASSERT_THAT(fs.CreateDir(kDir), IsOk());
  ASSERT_THAT(fs.OpenWritable(kA, false), IsOk());
  fs.Crash(1, /*keep_unsynced=*/false);
  EXPECT_FALSE(fs.Exists(kA));
  ASSERT_THAT(fs.OpenWritable(kA, false), IsOk());
  ASSERT_THAT(fs.SyncDir(kDir), IsOk());
  fs.Crash(2, /*keep_unsynced=*/true);
  EXPECT_TRUE(fs.Exists(kA));
}

TEST_F(MemFsTest, SyncDirMakesSyncedFileSurviveCrash) {
  auto f = Open(kA);
  ASSERT_THAT(f->Append("hello"), IsOk());
  ASSERT_THAT(f->Sync(), IsOk());
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  fs_.Crash(1);
  EXPECT_EQ(Read(kA), "hello");
  auto names = fs_.ListDir(kDir);
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, ElementsAre("a"));
}

TEST_F(MemFsTest, DurableNameWithUnsyncedBytesSurvivesEmpty) {
  auto f = Open(kA);
  ASSERT_THAT(f->Append("never synced"), IsOk());
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  fs_.Crash(1, /*keep_unsynced=*/false);
  EXPECT_TRUE(fs_.Exists(kA));
  EXPECT_EQ(Read(kA), "");
}

TEST_F(MemFsTest, CrashWithoutKeepUnsyncedDropsUnsyncedAppends) {
  MakeDurable(kA, "durable");
  auto f = Open(kA);
  ASSERT_EQ(f->Size(), 7u);
  ASSERT_THAT(f->Append("-tail-1"), IsOk());
  ASSERT_THAT(f->Append("-tail-2"), IsOk());
  EXPECT_EQ(Read(kA), "durable-tail-1-tail-2");
  for (uint64_t seed = 0; seed < 20; ++seed) {
    fs_.Crash(seed, /*keep_unsynced=*/false);
    EXPECT_EQ(Read(kA), "durable") << "seed " << seed;
  }
}

TEST_F(MemFsTest, CrashKeepsDurableBytesPlusPrefixOfUnsyncedAppends) {
  const std::string durable = "durable-part|";
  const std::string tail = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::set<size_t> kept_lengths;
  int with_bytes = 0, zeroed = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    MemFileSystem fs;
    ASSERT_THAT(fs.CreateDir(kDir), IsOk());
    auto f = fs.OpenWritable(kA, false);
    ASSERT_THAT(f, IsOk());
    ASSERT_THAT((*f)->Append(durable), IsOk());
    ASSERT_THAT((*f)->Sync(), IsOk());
    ASSERT_THAT(fs.SyncDir(kDir), IsOk());
    ASSERT_THAT((*f)->Append(tail.substr(0, 10)), IsOk());
    ASSERT_THAT((*f)->Append(tail.substr(10)), IsOk());
    fs.Crash(seed, /*keep_unsynced=*/true);
    const std::string got = fs.Contents(kA);
    ASSERT_GE(got.size(), durable.size()) << "seed " << seed;
    ASSERT_LE(got.size(), durable.size() + tail.size()) << "seed " << seed;
    const std::string kept = tail.substr(0, got.size() - durable.size());
    // The unsynced part is on one 4 KiB page: all there, or all zeros.
    const std::string zeros(kept.size(), '\0');
    EXPECT_TRUE(got == durable + kept || got == durable + zeros) << "seed " << seed;
    if (!kept.empty()) (got == durable + kept ? with_bytes : zeroed)++;
    kept_lengths.insert(got.size() - durable.size());
  }
  EXPECT_GT(kept_lengths.size(), 5u);
  EXPECT_GT(with_bytes, 0);
  EXPECT_GT(zeroed, 0);
}

// Unsynced bytes spanning pages: each kept page is there whole or zeros.
TEST_F(MemFsTest, CrashLosesUnsyncedPagesOutOfOrder) {
  bool hole_before_data = false;
  for (uint64_t seed = 0; seed < 100 && !hole_before_data; ++seed) {
    MemFileSystem fs;
    ASSERT_THAT(fs.CreateDir(kDir), IsOk());
    auto f = fs.OpenWritable(kA, false);
    ASSERT_THAT(f, IsOk());
    ASSERT_THAT(fs.SyncDir(kDir), IsOk());
    const std::string data(4 * 4096, 'x');
    ASSERT_THAT((*f)->Append(data), IsOk());
    fs.Crash(seed, /*keep_unsynced=*/true);
    const std::string got = fs.Contents(kA);
    for (size_t page = 0; page < got.size(); page += 4096) {
      const std::string p = got.substr(page, 4096);
      ASSERT_TRUE(p == data.substr(page, p.size()) || p == std::string(p.size(), '\0'))
          << "seed " << seed << " page " << page / 4096;
      if (p[0] == '\0' && got.find('x', page) != std::string::npos) hole_before_data = true;
    }
  }
  EXPECT_TRUE(hole_before_data) << "no crash kept a page after a lost one";
}

TEST_F(MemFsTest, CrashedStateIsTheNewDurableState) {
  MakeDurable(kA, "base");
  auto f = Open(kA);
  ASSERT_THAT(f->Append("0123456789"), IsOk());
  fs_.Crash(3, /*keep_unsynced=*/true);
  const std::string after_first = Read(kA);
  fs_.Crash(4, /*keep_unsynced=*/false);
  EXPECT_EQ(Read(kA), after_first);
}

TEST_F(MemFsTest, TruncateIntoDurableBytesRestoresThemOnCrash) {
  MakeDurable(kA, "abcdef");
  auto f = Open(kA);
  ASSERT_THAT(f->Truncate(3), IsOk());
  ASSERT_THAT(f->Append("XY"), IsOk());
  EXPECT_EQ(Read(kA), "abcXY");
  fs_.Crash(9, /*keep_unsynced=*/true);
  EXPECT_EQ(Read(kA), "abcdef");
}

TEST_F(MemFsTest, RenameWithoutSyncDirRevertsOnCrash) {
  MakeDurable(kA, "A");
  MakeDurable(kB, "B");
  ASSERT_THAT(fs_.Rename(kA, kB), IsOk());
  EXPECT_FALSE(fs_.Exists(kA));
  EXPECT_EQ(Read(kB), "A");
  fs_.Crash(1, /*keep_unsynced=*/false);  // (with it, a prefix may stay)
  EXPECT_EQ(Read(kA), "A");
  EXPECT_EQ(Read(kB), "B");
}

TEST_F(MemFsTest, RenameWithSyncDirSurvivesCrash) {
  MakeDurable(kA, "A");
  MakeDurable(kB, "B");
  ASSERT_THAT(fs_.Rename(kA, kB), IsOk());
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  fs_.Crash(1);
  EXPECT_FALSE(fs_.Exists(kA));
  EXPECT_EQ(Read(kB), "A");
}

TEST_F(MemFsTest, RemoveWithoutSyncDirRevertsOnCrash) {
  MakeDurable(kA, "A");
  ASSERT_THAT(fs_.Remove(kA), IsOk());
  EXPECT_FALSE(fs_.Exists(kA));
  fs_.Crash(1, /*keep_unsynced=*/false);  // (with it, a prefix may stay)
  EXPECT_EQ(Read(kA), "A");
}

TEST_F(MemFsTest, RemoveWithSyncDirSurvivesCrash) {
  MakeDurable(kA, "A");
  ASSERT_THAT(fs_.Remove(kA), IsOk());
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  fs_.Crash(1);
  EXPECT_FALSE(fs_.Exists(kA));
  EXPECT_THAT(fs_.Remove(kA), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(MemFsTest, HandlesOpenedBeforeCrashAreUnavailable) {
  MakeDurable(kA, "data");
  auto w = Open(kA);
  auto r = fs_.OpenReadable(kA, 4);
  ASSERT_THAT(r, IsOk());
  ASSERT_THAT((*r)->Read(0, 4), IsOk());
  fs_.Crash(1);
  EXPECT_THAT(w->Append("x"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(w->Sync(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(w->Truncate(0), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT((*r)->Read(0, 4), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(Read(kA), "data");
  auto fresh = Open(kA);
  EXPECT_THAT(fresh->Append("+"), IsOk());
  EXPECT_EQ(Read(kA), "data+");
}

TEST_F(MemFsTest, OpenInMissingDirIsNotFound) {
  EXPECT_THAT(fs_.OpenWritable("/missing/a", false),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.OpenReadable(kA, 10), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(MemFsTest, ReadPastEndIsDataLoss) {
  MakeDurable(kA, "0123");
  auto r = fs_.OpenReadable(kA, 100);
  ASSERT_THAT(r, IsOk());
  auto ok = (*r)->Read(1, 3);
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(*ok, "123");
  EXPECT_THAT((*r)->Read(2, 3), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT((*r)->Read(5, 0), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(MemFsTest, FailAppendsAfterFailsLaterAppendsAfterPartialWrite) {
  auto f = Open(kA);
  fs_.FailAppendsAfter(2, EIO);
  ASSERT_THAT(f->Append("one|"), IsOk());
  ASSERT_THAT(f->Append("two|"), IsOk());
  const std::string third = "three-three-three";
  EXPECT_THAT(f->Append(third), StatusIs(absl::StatusCode::kUnavailable));
  const std::string got = Read(kA);
  ASSERT_GE(got.size(), 8u);
  EXPECT_LT(got.size(), 8 + third.size());
  EXPECT_EQ(got, "one|two|" + third.substr(0, got.size() - 8));
  EXPECT_EQ(f->Size(), got.size());
  EXPECT_THAT(f->Append("four"), StatusIs(absl::StatusCode::kUnavailable));
  fs_.FailAppendsAfter(-1, 0);
  ASSERT_THAT(f->Truncate(8), IsOk());
  EXPECT_THAT(f->Append("five"), IsOk());
  EXPECT_EQ(Read(kA), "one|two|five");
}

TEST_F(MemFsTest, FailAppendsWithEnospcIsResourceExhausted) {
  auto f = Open(kA);
  fs_.FailAppendsAfter(0, ENOSPC);
  EXPECT_THAT(f->Append("data"),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(MemFsTest, FailSyncsAfterFailsFileSyncs) {
  auto f = Open(kA);
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  fs_.FailSyncsAfter(1, EIO);
  ASSERT_THAT(f->Append("first"), IsOk());
  ASSERT_THAT(f->Sync(), IsOk());
  ASSERT_THAT(f->Append("second"), IsOk());
  EXPECT_THAT(f->Sync(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(f->Sync(), StatusIs(absl::StatusCode::kUnavailable));
  fs_.Crash(1, /*keep_unsynced=*/false);
  EXPECT_EQ(Read(kA), "first");
}

// Like Linux after a writeback error: the bytes a failed sync covered stay
// readable, but a later successful sync does not make them durable (their
// pages count as clean); written again, they are.
TEST_F(MemFsTest, BytesAFailedSyncLostNeverBecomeDurableUntilWrittenAgain) {
  auto f = Open(kA);
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  ASSERT_THAT(f->Append("first"), IsOk());
  ASSERT_THAT(f->Sync(), IsOk());
  ASSERT_THAT(f->Append("second"), IsOk());
  fs_.FailSyncsAfter(0, EIO);
  EXPECT_FALSE(f->Sync().ok());
  fs_.FailSyncsAfter(-1, 0);
  EXPECT_EQ(Read(kA), "firstsecond");
  ASSERT_THAT(f->Append("third"), IsOk());
  ASSERT_THAT(f->Sync(), IsOk());
  fs_.Crash(1, /*keep_unsynced=*/true);
  EXPECT_EQ(Read(kA), std::string("first") + std::string(6, '\0') + "third");

  auto g = Open(kA);
  ASSERT_THAT(g->Append("fourth"), IsOk());
  fs_.FailSyncsAfter(0, EIO);
  EXPECT_FALSE(g->Sync().ok());
  fs_.FailSyncsAfter(-1, 0);
  ASSERT_THAT(g->WriteAt(16, "fourth"), IsOk());  // written again
  ASSERT_THAT(g->Sync(), IsOk());
  fs_.Crash(2, /*keep_unsynced=*/false);
  EXPECT_EQ(Read(kA), std::string("first") + std::string(6, '\0') + "thirdfourth");
}

TEST_F(MemFsTest, FailSyncsAfterFailsSyncDir) {
  MakeDurable(kA, "A");
  fs_.FailSyncsAfter(1, EIO);
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  ASSERT_THAT(fs_.Remove(kA), IsOk());
  EXPECT_THAT(fs_.SyncDir(kDir), StatusIs(absl::StatusCode::kUnavailable));
  fs_.Crash(1);
  EXPECT_EQ(Read(kA), "A");
}

TEST_F(MemFsTest, FailSyncsAfterCountsFileAndDirSyncsTogether) {
  auto f = Open(kA);
  fs_.FailSyncsAfter(2, EIO);
  EXPECT_THAT(f->Sync(), IsOk());
  EXPECT_THAT(fs_.SyncDir(kDir), IsOk());
  EXPECT_THAT(f->Sync(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_.SyncDir(kDir), StatusIs(absl::StatusCode::kUnavailable));
  fs_.FailSyncsAfter(-1, 0);
  EXPECT_THAT(f->Sync(), IsOk());
  EXPECT_THAT(fs_.SyncDir(kDir), IsOk());
}

TEST_F(MemFsTest, CapacityWritesWhatFitsThenResourceExhausted) {
  fs_.SetCapacity(10);
  auto a = Open(kA);
  auto b = Open(kB);
  ASSERT_THAT(a->Append("123456"), IsOk());
  EXPECT_THAT(b->Append("abcdef"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Read(kB), "abcd");
  EXPECT_THAT(a->Append("7"), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Read(kA), "123456");
  ASSERT_THAT(b->Truncate(1), IsOk());
  EXPECT_THAT(a->Append("789"), IsOk());
  EXPECT_EQ(Read(kA), "123456789");
  fs_.SetCapacity(0);
  EXPECT_THAT(a->Append(std::string(1000, 'x')), IsOk());
}

TEST_F(MemFsTest, OverwriteFileReplacesCurrentAndDurableBytes) {
  MakeDurable(kA, "old");
  EXPECT_TRUE(fs_.OverwriteFile(kA, "new!"));
  EXPECT_FALSE(fs_.OverwriteFile("/d/none", "x"));
  fs_.Crash(1, /*keep_unsynced=*/false);
  EXPECT_EQ(Read(kA), "new!");
}

TEST_F(MemFsTest, CrashClearsInjectedFaults) {
  auto f = Open(kA);
  fs_.FailAppendsAfter(0, EIO);
  fs_.FailSyncsAfter(0, EIO);
  fs_.Crash(1);
  auto g = Open("/d/c");
  EXPECT_THAT(g->Append("x"), IsOk());
  EXPECT_THAT(g->Sync(), IsOk());
  EXPECT_THAT(fs_.SyncDir(kDir), IsOk());
}

// Crash points of WriteFileAtomically: each sync it makes can fail (k = 0:
// the tmp file's sync, 1: the directory sync), or none (k = 2).
TEST_F(MemFsTest, WriteFileAtomicallyLeavesOldOrNewAfterCrash) {
  const std::string old_contents = "old contents";
  const std::string new_contents = "NEW CONTENTS, LONGER THAN THE OLD";
  for (int k = 0; k <= 2; ++k) {
    for (bool keep : {false, true}) {
      for (uint64_t seed = 0; seed < 10; ++seed) {
        SCOPED_TRACE(absl::StrCat("k=", k, " keep=", keep, " seed=", seed));
        MemFileSystem fs;
        ASSERT_THAT(fs.CreateDir(kDir), IsOk());
        ASSERT_THAT(WriteFileAtomically(&fs, kDir, "MANIFEST", old_contents),
                    IsOk());
        fs.FailSyncsAfter(k, EIO);
        bool renamed = false;
        const absl::Status s =
            WriteFileAtomically(&fs, kDir, "MANIFEST", new_contents, &renamed);
        if (k < 2) {
          EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnavailable));
        } else {
          EXPECT_THAT(s, IsOk());
        }
        EXPECT_EQ(renamed, k >= 1);
        fs.Crash(seed, keep);
        auto got = fs.ReadFileToString("/d/MANIFEST");
        ASSERT_THAT(got, IsOk());
        EXPECT_THAT(*got, AnyOf(Eq(old_contents), Eq(new_contents)));
        if (k == 0) {
          EXPECT_EQ(*got, old_contents);
        } else if (k == 2) {
          EXPECT_EQ(*got, new_contents);
        }
      }
    }
  }
}

TEST_F(MemFsTest, WriteFileAtomicallyLeavesOldAfterAppendFailureAndCrash) {
  ASSERT_THAT(WriteFileAtomically(&fs_, kDir, "MANIFEST", "old"), IsOk());
  fs_.FailAppendsAfter(0, EIO);
  EXPECT_THAT(WriteFileAtomically(&fs_, kDir, "MANIFEST", "new"),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(Read("/d/MANIFEST"), "old");
  fs_.Crash(1);
  EXPECT_EQ(Read("/d/MANIFEST"), "old");
}

TEST_F(MemFsTest, FirstWriteFileAtomicallyLeavesNothingOrNewAfterCrash) {
  for (int k = 0; k <= 2; ++k) {
    SCOPED_TRACE(absl::StrCat("k=", k));
    MemFileSystem fs;
    ASSERT_THAT(fs.CreateDir(kDir), IsOk());
    fs.FailSyncsAfter(k, EIO);
    WriteFileAtomically(&fs, kDir, "MANIFEST", "first").IgnoreError();
    fs.Crash(7);
    auto got = fs.ReadFileToString("/d/MANIFEST");
    if (got.ok()) {
      EXPECT_EQ(*got, "first");
    } else {
      EXPECT_THAT(got, StatusIs(absl::StatusCode::kNotFound));
    }
    if (k == 2) {
      EXPECT_THAT(got, IsOk());
    }
  }
}

TEST_F(MemFsTest, WriteFileAtomicallyLeavesNoTmpOnSuccess) {
  ASSERT_THAT(WriteFileAtomically(&fs_, kDir, "MANIFEST", "v1"), IsOk());
  ASSERT_THAT(WriteFileAtomically(&fs_, kDir, "MANIFEST", "v2"), IsOk());
  auto names = fs_.ListDir(kDir);
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, UnorderedElementsAre("MANIFEST"));
  fs_.Crash(1);
  EXPECT_EQ(Read("/d/MANIFEST"), "v2");
}

TEST_F(MemFsTest, MutatingOpsCountsSuccessfulMutatingOperationsOnly) {
  const uint64_t start = fs_.MutatingOps();  // SetUp's CreateDir counted
  EXPECT_EQ(start, 1u);
  auto f = Open(kA);                      // +1
  ASSERT_THAT(f->Append("abc"), IsOk());  // +1
  ASSERT_THAT(f->Sync(), IsOk());         // +1
  ASSERT_THAT(f->Truncate(1), IsOk());    // +1
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk()); // +1
  ASSERT_THAT(fs_.Rename(kA, kB), IsOk());  // +1
  ASSERT_THAT(fs_.CreateDir("/d/sub"), IsOk());  // +1
  ASSERT_THAT(fs_.Remove(kB), IsOk());    // +1
  EXPECT_EQ(fs_.MutatingOps(), start + 8);
  // Reads do not count.
  EXPECT_FALSE(fs_.Exists(kA));
  ASSERT_THAT(fs_.ListDir(kDir), IsOk());
  EXPECT_THAT(fs_.FileSize(kB), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.ReadFileToString(kB), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(fs_.MutatingOps(), start + 8);
  // Nor do operations that failed.
  EXPECT_THAT(fs_.Remove(kB), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.Rename(kA, kB), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.OpenWritable("/missing/a", false),
              StatusIs(absl::StatusCode::kNotFound));
  fs_.FailAppendsAfter(0, EIO);
  EXPECT_THAT(f->Append("x"), StatusIs(absl::StatusCode::kUnavailable));
  fs_.FailSyncsAfter(0, EIO);
  EXPECT_THAT(f->Sync(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_.SyncDir(kDir), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(fs_.MutatingOps(), start + 8);
}

TEST_F(MemFsTest, KillAfterOpsFailsEveryLaterMutatingOpAndChangesNothing) {
  MakeDurable(kA, "durable");
  auto f = Open(kA);
  auto g = Open("/d/c");
  const uint64_t before = fs_.MutatingOps();
  fs_.KillAfterOps(2);
  EXPECT_FALSE(fs_.killed());
  ASSERT_THAT(f->Append("-1"), IsOk());
  ASSERT_THAT(f->Append("-2"), IsOk());
  EXPECT_TRUE(fs_.killed());
  EXPECT_EQ(fs_.MutatingOps(), before + 2);

  const absl::Status dead = f->Append("-3");
  EXPECT_THAT(dead, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(std::string(dead.message()), ::testing::HasSubstr("killed at kill point"));
  EXPECT_THAT(f->Sync(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(f->Truncate(0), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(g->Append("x"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_.OpenWritable(kB, false), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_.OpenWritable(kA, /*truncate=*/true),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_.Remove(kA), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_.Rename(kA, kB), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_.SyncDir(kDir), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(fs_.CreateDir("/d/sub"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(fs_.MutatingOps(), before + 2);

  // Nothing changed; reads still work.
  EXPECT_EQ(Read(kA), "durable-1-2");
  EXPECT_EQ(Read("/d/c"), "");
  EXPECT_FALSE(fs_.Exists(kB));
  EXPECT_FALSE(fs_.Exists("/d/sub"));
  auto size = fs_.FileSize(kA);
  ASSERT_THAT(size, IsOk());
  EXPECT_EQ(*size, 11u);
  auto r = fs_.OpenReadable(kA, 11);
  ASSERT_THAT(r, IsOk());
  auto got = (*r)->Read(0, 7);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(*got, "durable");
  auto names = fs_.ListDir(kDir);
  ASSERT_THAT(names, IsOk());
  EXPECT_THAT(*names, UnorderedElementsAre("a", "c"));

  // The unsynced appends and the unsynced name of c are lost by the crash.
  fs_.Crash(5, /*keep_unsynced=*/false);
  EXPECT_EQ(Read(kA), "durable");
  EXPECT_FALSE(fs_.Exists("/d/c"));
}

TEST_F(MemFsTest, KillAfterZeroOpsKillsTheNextOne) {
  fs_.KillAfterOps(0);
  EXPECT_TRUE(fs_.killed());
  EXPECT_THAT(fs_.OpenWritable(kA, false), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(fs_.Exists(kA));
}

TEST_F(MemFsTest, KillAfterOpsIsNotTriggeredByFailedOps) {
  fs_.KillAfterOps(1);
  // A failed operation does not use up the one allowed.
  EXPECT_THAT(fs_.Remove(kA), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(fs_.killed());
  auto f = Open(kA);
  ASSERT_NE(f, nullptr);
  EXPECT_THAT(f->Append("x"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(Read(kA), "");
}

TEST_F(MemFsTest, NegativeKillAfterOpsDisables) {
  fs_.KillAfterOps(1);
  fs_.KillAfterOps(-1);
  auto f = Open(kA);
  for (int i = 0; i < 10; ++i) ASSERT_THAT(f->Append("x"), IsOk());
  EXPECT_FALSE(fs_.killed());
  // Re-arming after a kill revives the process too.
  fs_.KillAfterOps(0);
  EXPECT_THAT(f->Append("y"), StatusIs(absl::StatusCode::kUnavailable));
  fs_.KillAfterOps(-1);
  EXPECT_THAT(f->Append("y"), IsOk());
  EXPECT_EQ(Read(kA), "xxxxxxxxxxy");
}

TEST_F(MemFsTest, CrashResetsKillPoint) {
  MakeDurable(kA, "A");
  fs_.KillAfterOps(0);
  EXPECT_THAT(fs_.Remove(kA), StatusIs(absl::StatusCode::kUnavailable));
  const uint64_t ops = fs_.MutatingOps();
  fs_.Crash(1);
  EXPECT_FALSE(fs_.killed());
  EXPECT_EQ(fs_.MutatingOps(), ops);  // the count goes on across crashes
  EXPECT_EQ(Read(kA), "A");
  auto f = Open(kA);
  ASSERT_NE(f, nullptr);
  EXPECT_THAT(f->Append("+"), IsOk());
  EXPECT_THAT(f->Sync(), IsOk());
  EXPECT_THAT(fs_.Remove(kB), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(fs_.Rename(kA, kB), IsOk());
  EXPECT_THAT(fs_.SyncDir(kDir), IsOk());
  EXPECT_EQ(Read(kB), "A+");
}

// The intended use: count the operations of a scenario, then kill it after
// each of them. WriteFileAtomically must leave the old or the new contents
// whatever the kill point, and the new ones once its last operation is done.
TEST_F(MemFsTest, WriteFileAtomicallyKilledAtEveryPointLeavesOldOrNew) {
  const std::string old_contents = "old manifest";
  const std::string new_contents = "the new manifest";
  uint64_t total = 0;
  {
    MemFileSystem fs;
    ASSERT_THAT(fs.CreateDir(kDir), IsOk());
    ASSERT_THAT(WriteFileAtomically(&fs, kDir, "MANIFEST", old_contents), IsOk());
    const uint64_t start = fs.MutatingOps();
    ASSERT_THAT(WriteFileAtomically(&fs, kDir, "MANIFEST", new_contents), IsOk());
    total = fs.MutatingOps() - start;
  }
  EXPECT_EQ(total, 5u);  // open, append, sync, rename, sync dir
  std::set<std::string> seen;
  for (uint64_t n = 0; n <= total; ++n) {
    for (bool keep : {false, true}) {
      SCOPED_TRACE(absl::StrCat("n=", n, " keep=", keep));
      MemFileSystem fs;
      ASSERT_THAT(fs.CreateDir(kDir), IsOk());
      ASSERT_THAT(WriteFileAtomically(&fs, kDir, "MANIFEST", old_contents),
                  IsOk());
      fs.KillAfterOps(n);
      const absl::Status s =
          WriteFileAtomically(&fs, kDir, "MANIFEST", new_contents);
      if (n < total) {
        EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnavailable));
      } else {
        EXPECT_THAT(s, IsOk());
      }
      fs.Crash(n, keep);
      auto got = fs.ReadFileToString("/d/MANIFEST");
      ASSERT_THAT(got, IsOk());
      EXPECT_THAT(*got, AnyOf(Eq(old_contents), Eq(new_contents)));
      if (n == total) {
        EXPECT_EQ(*got, new_contents);
      }
      seen.insert(*got);
    }
  }
  EXPECT_EQ(seen.size(), 2u);
}

}  // namespace
}  // namespace segkv::worker
