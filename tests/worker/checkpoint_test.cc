// Index checkpoints: the file format (build, seal, parse, every kind of
// damage), the hash index image, and a partition recovering from them.
//
// A partition recovered from a checkpoint must hold exactly what a full
// replay of its log gives: the same keys, values and versions. A damaged or
// missing checkpoint is skipped for the next older one, and with none left
// the log is replayed whole.
#include "worker/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/coding.h"
#include "worker/crc32c.h"
#include "worker/hash_index.h"
#include "worker/manifest.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::CheckpointFiles;
using ::segkv::worker::testing::CheckpointPath;
using ::segkv::worker::testing::Dump;
using ::segkv::worker::testing::DumpAll;
using ::segkv::worker::testing::FilesIn;
using ::segkv::worker::testing::FullReplayDump;
using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::kDir;
using ::segkv::worker::testing::RemoveCheckpointFiles;
using ::segkv::worker::testing::SmallOptions;
using ::segkv::worker::testing::StatusIs;
using ::segkv::worker::testing::Stored;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

// ---------------------------------------------------------------------------
// The file format.

// Header offsets (worker/checkpoint.cc, "Header").
constexpr size_t kOffVersion = 8;
constexpr size_t kOffNextVersion = 40;
constexpr size_t kOffNumBuckets = 64;
constexpr size_t kOffHeaderCrc = 124;
constexpr char kPath[] = "/data/p0/ckpt-00000000000000000042.idx";

using Entries = std::vector<std::pair<uint32_t, uint64_t>>;

Entries EntriesOf(const HashIndex& index) {
  Entries out;
  index.ForEach([&](uint32_t fp, uint64_t a) { out.emplace_back(fp, a); });
  std::sort(out.begin(), out.end());
  return out;
}

void ExpectSameGeometry(const HashIndex::Geometry& a, const HashIndex::Geometry& b) {
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.num_buckets, b.num_buckets);
  EXPECT_EQ(a.split, b.split);
  EXPECT_EQ(a.nodes_used, b.nodes_used);
  EXPECT_EQ(a.free_nodes, b.free_nodes);
  EXPECT_EQ(a.level, b.level);
}

// Fills `index` with `n` random entries plus a chain of entries sharing one
// fingerprint (so they overflow their bucket), some of them erased again
// (so the overflow pool has free nodes).
void Fill(HashIndex& index, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < n; ++i) {
    index.Insert(static_cast<uint32_t>(rng()), 64 + rng() % (uint64_t{1} << 40));
  }
  constexpr uint32_t kSharedFp = 0x5eed0007;
  for (uint64_t a = 1; a <= 20; ++a) index.Insert(kSharedFp, a * 1000);
  for (uint64_t a : {3, 7, 11, 12, 19}) {
    HashIndex::Position pos =
        index.Find(kSharedFp, [&](uint64_t addr) { return addr == a * 1000; });
    ASSERT_TRUE(pos.found());
    index.Erase(pos);
  }
}

struct Built {
  CheckpointHeader header;
  SegmentUsageTable usage;
  std::string data;
  uint32_t crc = 0;
};

Built Build(const HashIndex& index) {
  Built b;
  b.usage = SegmentUsageTable({{8000, 5000, 100}, {7000, 0, 0}, {0, 0, 0}, {300, 300, 0}});
  CheckpointHeader& h = b.header;
  h.partition = 7;
  h.segment_size = 8 << 10;
  h.id = 42;
  h.covered_address = 3 * (8 << 10) + 300;
  h.next_version = 12345;
  h.created_ms = 1700000000123;
  h.geometry = index.geometry();
  h.usage_count = CountUsageEntries(b.usage);
  b.data.assign(CheckpointFileSize(h), '\xaa');
  BuildCheckpoint(&h, index, b.usage, b.data.data());
  b.crc = SealCheckpoint(b.data.data(), b.data.size());
  return b;
}

class CheckpointFormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(Fill(index_, 300, 1));
    built_ = Build(index_);
  }

  absl::StatusOr<LoadedCheckpoint> Parse(const std::string& data) {
    return ParseCheckpoint(data, kPath);
  }
  // Recomputes the header CRC after a deliberate header change.
  static void ResealHeader(std::string& data) {
    EncodeFixed32(data.data() + kOffHeaderCrc,
                  crc32c::Value(data.data(), kOffHeaderCrc));
  }
  void ExpectDataLoss(const std::string& data) {
    auto c = Parse(data);
    EXPECT_THAT(c, StatusIs(absl::StatusCode::kDataLoss));
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(kPath));
  }

  HashIndex index_;
  Built built_;
};

TEST_F(CheckpointFormatTest, RoundTrip) {
  const CheckpointHeader& h = built_.header;
  // Version 2: one 32-byte usage entry per segment with records (ids 0, 1
  // and 3; segment 2 has none).
  EXPECT_EQ(built_.data.size(),
            kCheckpointHeaderSize + index_.ImageSize() + 3 * 32 + 4);
  ExpectSameGeometry(h.geometry, index_.geometry());
  EXPECT_EQ(h.usage_count, 3u);

  auto c = Parse(built_.data);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->header.partition, 7u);
  EXPECT_EQ(c->header.segment_size, uint64_t{8 << 10});
  EXPECT_EQ(c->header.id, 42u);
  EXPECT_EQ(c->header.covered_address, h.covered_address);
  EXPECT_EQ(c->header.next_version, 12345u);
  EXPECT_EQ(c->header.created_ms, 1700000000123);
  EXPECT_EQ(c->header.usage_count, 3u);
  EXPECT_EQ(c->header.version, 2u);
  ExpectSameGeometry(c->header.geometry, index_.geometry());
  EXPECT_EQ(c->body_crc, built_.crc);
  ASSERT_EQ(c->usage.end_id(), built_.usage.end_id());
  for (size_t i = 0; i < built_.usage.end_id(); ++i) {
    EXPECT_EQ(c->usage.Get(i).total_bytes, built_.usage.Get(i).total_bytes) << i;
    EXPECT_EQ(c->usage.Get(i).live_bytes, built_.usage.Get(i).live_bytes) << i;
    EXPECT_EQ(c->usage.Get(i).tombstone_bytes, built_.usage.Get(i).tombstone_bytes) << i;
  }
  // The image lies in the caller's data and is the index's own image.
  ASSERT_EQ(c->image.size(), index_.ImageSize());
  EXPECT_EQ(c->image.data(), built_.data.data() + kCheckpointHeaderSize);
  std::string image(index_.ImageSize(), '\0');
  index_.CopyImage(image.data());
  EXPECT_TRUE(c->image == image);

  HashIndex loaded;
  ASSERT_THAT(loaded.LoadImage(c->header.geometry, c->image), IsOk());
  EXPECT_EQ(EntriesOf(loaded), EntriesOf(index_));
}

TEST_F(CheckpointFormatTest, EmptyIndexAndNoUsageRoundTrip) {
  HashIndex empty;
  CheckpointHeader h;
  h.id = 1;
  h.geometry = empty.geometry();
  std::string data(CheckpointFileSize(h), '\0');
  BuildCheckpoint(&h, empty, {}, data.data());
  SealCheckpoint(data.data(), data.size());
  auto c = Parse(data);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->header.geometry.count, 0u);
  EXPECT_TRUE(c->usage.empty());
  HashIndex loaded;
  ASSERT_THAT(loaded.LoadImage(c->header.geometry, c->image), IsOk());
  EXPECT_EQ(loaded.size(), 0u);
}

TEST_F(CheckpointFormatTest, BadMagicIsDataLoss) {
  std::string d = built_.data;
  d[0] ^= 0x20;
  ExpectDataLoss(d);
}

TEST_F(CheckpointFormatTest, HeaderCrcMismatchIsDataLoss) {
  std::string d = built_.data;
  d[kOffNextVersion] ^= 1;
  ExpectDataLoss(d);
  d = built_.data;
  d[kOffHeaderCrc + 2] ^= 0x80;  // the CRC itself
  ExpectDataLoss(d);
}

TEST_F(CheckpointFormatTest, BodyCrcMismatchIsDataLoss) {
  for (size_t off : {kCheckpointHeaderSize, kCheckpointHeaderSize + 1000,
                     built_.data.size() - 4 - 24 + 3,  // usage table
                     built_.data.size() - 1}) {        // the body CRC itself
    SCOPED_TRACE(absl::StrCat("offset ", off));
    std::string d = built_.data;
    d[off] ^= 0x10;
    ExpectDataLoss(d);
  }
}

TEST_F(CheckpointFormatTest, TruncatedFileIsDataLoss) {
  for (size_t size : {built_.data.size() - 1, built_.data.size() - 4,
                      kCheckpointHeaderSize + 4, kCheckpointHeaderSize + 3,
                      kCheckpointHeaderSize, size_t{10}, size_t{0}}) {
    SCOPED_TRACE(absl::StrCat("size ", size));
    ExpectDataLoss(built_.data.substr(0, size));
  }
}

TEST_F(CheckpointFormatTest, SizeMismatchIsDataLoss) {
  ExpectDataLoss(built_.data + "x");
  ExpectDataLoss(built_.data + std::string(64, '\0'));
  // A header that claims far more buckets than the file holds (CRC
  // recomputed, so only the sizes can tell).
  std::string d = built_.data;
  EncodeFixed64(d.data() + kOffNumBuckets, uint64_t{1} << 60);
  ResealHeader(d);
  ExpectDataLoss(d);
}

TEST_F(CheckpointFormatTest, UnknownVersionIsFailedPrecondition) {
  std::string d = built_.data;
  EncodeFixed32(d.data() + kOffVersion, kCheckpointFormatVersion + 1);
  ResealHeader(d);
  EXPECT_THAT(Parse(d), StatusIs(absl::StatusCode::kFailedPrecondition));
  EncodeFixed32(d.data() + kOffVersion, 0);
  ResealHeader(d);
  EXPECT_THAT(Parse(d), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// Files written before version 2 (one 24-byte entry per segment id from 0)
// are still read.
TEST_F(CheckpointFormatTest, Version1FilesAreStillRead) {
  CheckpointHeader h = built_.header;
  h.version = 1;
  h.usage_count = built_.usage.end_id();
  std::string d(CheckpointFileSize(h), '\0');
  BuildCheckpoint(&h, index_, built_.usage, d.data());
  SealCheckpoint(d.data(), d.size());
  EXPECT_EQ(d.size(), kCheckpointHeaderSize + index_.ImageSize() + 4 * 24 + 4);
  auto c = Parse(d);
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->header.version, 1u);
  EXPECT_EQ(c->header.usage_count, 4u);
  ASSERT_EQ(c->usage.end_id(), built_.usage.end_id());
  for (size_t i = 0; i < built_.usage.end_id(); ++i) {
    EXPECT_EQ(c->usage.Get(i).total_bytes, built_.usage.Get(i).total_bytes) << i;
    EXPECT_EQ(c->usage.Get(i).live_bytes, built_.usage.Get(i).live_bytes) << i;
    EXPECT_EQ(c->usage.Get(i).tombstone_bytes, built_.usage.Get(i).tombstone_bytes) << i;
  }
}

// A version 2 usage entry names its segment: ids must rise and stay within
// the segments the covered address reaches (which also bounds the table a
// reader builds from them). Checked even with a matching body CRC.
TEST_F(CheckpointFormatTest, UsageEntryIdsOutOfOrderOrPastTheCoveredAddressAreDataLoss) {
  const size_t usage_at = kCheckpointHeaderSize + index_.ImageSize();
  for (uint64_t bad : {uint64_t{0}, uint64_t{1}, uint64_t{4}, uint64_t{1} << 40}) {
    SCOPED_TRACE(bad);
    std::string d = built_.data;
    EncodeFixed64(d.data() + usage_at + 2 * 32, bad);  // the entry of segment 3
    SealCheckpoint(d.data(), d.size());
    ExpectDataLoss(d);
  }
  std::string d = built_.data;
  EncodeFixed64(d.data() + usage_at + 2 * 32, 2);  // 0, 1, 2: a valid order
  SealCheckpoint(d.data(), d.size());
  auto c = Parse(d);
  ASSERT_THAT(c, IsOk());
  ASSERT_EQ(c->usage.end_id(), 3u);
  EXPECT_EQ(c->usage.Get(2).total_bytes, 300u);
}

TEST_F(CheckpointFormatTest, UsageExceedingItsTotalIsDataLoss) {
  const SegmentUsageTable usage({{100, 80, 30}});  // 80 + 30 > 100
  CheckpointHeader h;
  h.geometry = index_.geometry();
  h.usage_count = 1;
  std::string d(CheckpointFileSize(h), '\0');
  BuildCheckpoint(&h, index_, usage, d.data());
  SealCheckpoint(d.data(), d.size());
  ExpectDataLoss(d);
}

TEST_F(CheckpointFormatTest, EveryFlippedByteIsRejected) {
  HashIndex small;  // a small file, so every byte can be tried
  for (uint32_t i = 0; i < 30; ++i) small.Insert(i * 0x9e3779b9u, 100 + i);
  const Built b = Build(small);
  for (size_t off = 0; off < b.data.size(); ++off) {
    std::string d = b.data;
    d[off] ^= 0x01;
    auto c = Parse(d);
    ASSERT_FALSE(c.ok()) << "flipping a bit of byte " << off << " went unnoticed";
    ASSERT_THAT(c, StatusIs(absl::StatusCode::kDataLoss)) << "byte " << off;
  }
}

// ---------------------------------------------------------------------------
// The hash index image.

class IndexImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(Fill(index_, 2000, 2));
    ASSERT_GT(index_.geometry().nodes_used, 0u);
    ASSERT_GT(index_.geometry().free_nodes, 0u);
    geometry_ = index_.geometry();
    image_.assign(index_.ImageSize(), '\0');
    index_.CopyImage(image_.data());
    // The target of failed loads holds something of its own, which a
    // failed load must leave alone.
    target_.Insert(0xabcdef01, 4242);
    target_.Insert(0x12345678, 4343);
  }

  void ExpectRejected(const HashIndex::Geometry& g, const std::string& image) {
    const Entries before = EntriesOf(target_);
    EXPECT_THAT(target_.LoadImage(g, image), StatusIs(absl::StatusCode::kDataLoss));
    EXPECT_EQ(EntriesOf(target_), before) << "a failed load changed the index";
    EXPECT_EQ(target_.size(), before.size());
  }
  size_t NodeOffset(uint64_t ref) const {
    return geometry_.num_buckets * sizeof(HashIndex::Bucket) +
           (ref - 1) * sizeof(HashIndex::Node);
  }
  size_t FreeListOffset() const {
    return geometry_.num_buckets * sizeof(HashIndex::Bucket) +
           geometry_.nodes_used * sizeof(HashIndex::Node);
  }
  // The first node reference some bucket chains.
  uint32_t AChainedNode() const {
    for (uint64_t i = 0; i < geometry_.num_buckets; ++i) {
      uint32_t ref = DecodeFixed32(image_.data() + i * sizeof(HashIndex::Bucket) +
                                   offsetof(HashIndex::Bucket, overflow));
      if (ref != 0) return ref;
    }
    return 0;
  }

  HashIndex index_;
  HashIndex target_;
  HashIndex::Geometry geometry_;
  std::string image_;
};

TEST_F(IndexImageTest, RoundTripKeepsEntriesGeometryAndBehaviour) {
  EXPECT_EQ(image_.size(), geometry_.num_buckets * 64 + geometry_.nodes_used * 16 +
                               geometry_.free_nodes * 4);
  HashIndex loaded;
  ASSERT_THAT(loaded.LoadImage(geometry_, image_), IsOk());
  EXPECT_EQ(EntriesOf(loaded), EntriesOf(index_));
  ExpectSameGeometry(loaded.geometry(), geometry_);
  EXPECT_EQ(loaded.size(), index_.size());
  EXPECT_EQ(loaded.num_overflow_nodes(), index_.num_overflow_nodes());
  // Every entry is found where lookups look for it.
  index_.ForEach([&](uint32_t fp, uint64_t a) {
    EXPECT_TRUE(loaded.Find(fp, [&](uint64_t x) { return x == a; }).found())
        << fp << " -> " << a;
  });
  // The loaded index goes on exactly like the original: same splits, same
  // node reuse from the free list.
  std::mt19937_64 rng(9);
  for (int i = 0; i < 3000; ++i) {
    const uint32_t fp = i % 10 == 0 ? 0x5eed0007 : static_cast<uint32_t>(rng());
    const uint64_t a = (uint64_t{1} << 41) + i;
    index_.Insert(fp, a);
    loaded.Insert(fp, a);
  }
  EXPECT_EQ(EntriesOf(loaded), EntriesOf(index_));
  ExpectSameGeometry(loaded.geometry(), index_.geometry());
  // And its image is byte for byte the original's.
  std::string a(index_.ImageSize(), '\0'), b(loaded.ImageSize(), '\0');
  index_.CopyImage(a.data());
  loaded.CopyImage(b.data());
  EXPECT_TRUE(a == b);
}

TEST_F(IndexImageTest, LoadReplacesPreviousContents) {
  ASSERT_THAT(target_.LoadImage(geometry_, image_), IsOk());
  EXPECT_EQ(EntriesOf(target_), EntriesOf(index_));
  EXPECT_FALSE(target_.Find(0xabcdef01, [](uint64_t a) { return a == 4242; }).found());
}

TEST_F(IndexImageTest, EntryAtOrPastTheAddressLimitIsRejected) {
  uint64_t highest = 0;
  index_.ForEach([&](uint32_t, uint64_t a) { highest = std::max(highest, a); });
  // One past the highest address is fine; the highest itself is not (the
  // limit is a checkpoint's covered address: its records lie below it).
  HashIndex ok;
  ASSERT_THAT(ok.LoadImage(geometry_, image_, highest + 1), IsOk());
  EXPECT_EQ(EntriesOf(ok), EntriesOf(index_));
  const Entries before = EntriesOf(target_);
  EXPECT_THAT(target_.LoadImage(geometry_, image_, highest),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(EntriesOf(target_), before);
}

TEST_F(IndexImageTest, LoadExtendsTheCrcOverTheImage) {
  uint32_t crc = crc32c::Value("prefix", 6);
  HashIndex loaded;
  ASSERT_THAT(loaded.LoadImage(geometry_, image_, UINT64_MAX, &crc), IsOk());
  EXPECT_EQ(crc, crc32c::Value("prefix" + image_));
  // Also when the image is rejected: the caller reports the CRC mismatch
  // rather than whatever the damage broke.
  std::string bad = image_;
  bad[FreeListOffset()] ^= 0x7f;
  uint32_t crc2 = 0;
  EXPECT_THAT(target_.LoadImage(geometry_, bad, UINT64_MAX, &crc2),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(crc2, crc32c::Value(bad));
}

TEST_F(IndexImageTest, ClearGoesBackToEmpty) {
  HashIndex fresh;
  index_.Clear();
  EXPECT_EQ(index_.size(), 0u);
  EXPECT_THAT(EntriesOf(index_), IsEmpty());
  ExpectSameGeometry(index_.geometry(), fresh.geometry());
}

TEST_F(IndexImageTest, RejectsInconsistentBucketGeometry) {
  HashIndex::Geometry g = geometry_;
  g.num_buckets += 1;  // no longer 2^level + split
  ExpectRejected(g, image_ + std::string(64, '\0'));
  g = geometry_;
  g.split = (uint64_t{1} << g.level);  // split past the level
  g.num_buckets = (uint64_t{1} << g.level) + g.split;
  ExpectRejected(g, image_);
  g = geometry_;
  g.level = 3;  // below the initial level
  g.split = 0;
  g.num_buckets = 8;
  ExpectRejected(g, image_.substr(0, 8 * 64));
  g = geometry_;
  g.level = 40;
  ExpectRejected(g, image_);
}

TEST_F(IndexImageTest, RejectsInconsistentNodeCounts) {
  HashIndex::Geometry g = geometry_;
  g.free_nodes = g.nodes_used + 1;
  ExpectRejected(g, image_ + std::string(4 * (g.free_nodes - geometry_.free_nodes), '\0'));
  // The last node cut off the pool: whether it was chained or free, a
  // reference to it now points nowhere.
  g = geometry_;
  g.nodes_used -= 1;
  ExpectRejected(g, image_.substr(0, NodeOffset(geometry_.nodes_used)) +
                        image_.substr(FreeListOffset()));
}

TEST_F(IndexImageTest, RejectsImageOfTheWrongSize) {
  ExpectRejected(geometry_, image_.substr(0, image_.size() - 1));
  ExpectRejected(geometry_, image_ + "x");
  ExpectRejected(geometry_, "");
}

TEST_F(IndexImageTest, RejectsWrongEntryCount) {
  HashIndex::Geometry g = geometry_;
  g.count += 1;
  ExpectRejected(g, image_);
  g.count -= 2;
  ExpectRejected(g, image_);
}

TEST_F(IndexImageTest, RejectsBrokenOverflowChains) {
  const uint32_t ref = AChainedNode();
  ASSERT_NE(ref, 0u);
  const size_t next = NodeOffset(ref) + offsetof(HashIndex::Node, next);
  // A chain into a node that does not exist.
  std::string img = image_;
  EncodeFixed32(img.data() + next, static_cast<uint32_t>(geometry_.nodes_used + 5));
  ExpectRejected(geometry_, img);
  // A chain that loops back on itself.
  img = image_;
  EncodeFixed32(img.data() + next, ref);
  ExpectRejected(geometry_, img);
  // A bucket pointing past the pool.
  img = image_;
  EncodeFixed32(img.data() + offsetof(HashIndex::Bucket, overflow),
                static_cast<uint32_t>(geometry_.nodes_used + 1));
  ExpectRejected(geometry_, img);
}

TEST_F(IndexImageTest, RejectsBadFreeList) {
  // A free-list entry naming no node.
  std::string img = image_;
  EncodeFixed32(img.data() + FreeListOffset(), 0);
  ExpectRejected(geometry_, img);
  img = image_;
  EncodeFixed32(img.data() + FreeListOffset(),
                static_cast<uint32_t>(geometry_.nodes_used + 1));
  ExpectRejected(geometry_, img);
  // A free node missing from the list: it is neither chained nor free.
  HashIndex::Geometry g = geometry_;
  g.free_nodes -= 1;
  ExpectRejected(g, image_.substr(0, image_.size() - 4));
}

// ---------------------------------------------------------------------------
// Partitions recovering from checkpoints.

std::string ValueFor(absl::string_view key, int n, std::mt19937_64& rng) {
  const size_t len = rng() % 4 == 0 ? 100 + rng() % 300 : rng() % 60;
  return absl::StrCat(key, "#", n, ":", std::string(len, static_cast<char>('a' + n % 26)));
}

class CheckpointRecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    o_ = SmallOptions(&fs_);
    o_.checkpoint_interval = absl::ZeroDuration();  // only on demand
    o_.compaction_dead_ratio = 2;                   // never on its own
    ASSERT_NO_FATAL_FAILURE(Reopen());
  }

  void Reopen() {
    if (p_ != nullptr) {
      ASSERT_THAT(p_->Close(), IsOk());
      p_.reset();
    }
    auto p = Partition::Open(o_);
    ASSERT_THAT(p, IsOk());
    p_ = std::move(*p);
  }

  // `n` random puts (3 in 4) and deletes over `keys` keys, mirrored in
  // model_.
  void Write(int n, int keys) {
    for (int i = 0; i < n; ++i) {
      const std::string key = absl::StrCat("key", rng_() % keys);
      if (rng_() % 4 == 0) {
        auto w = p_->Delete(key);
        ASSERT_THAT(w, IsOk());
        ASSERT_EQ(w->existed, model_.contains(key)) << key;
        model_.erase(key);
      } else {
        const std::string value = ValueFor(key, ++writes_, rng_);
        auto w = p_->Put(key, value);
        ASSERT_THAT(w, IsOk());
        model_[key] = Stored{value, w->version};
      }
    }
  }

  // Every key the model knows and some it does not agree with Get; Scan
  // lists exactly the model.
  void ExpectModel() {
    ReadResult r;
    for (int i = 0; i < 300; ++i) {
      const std::string key = absl::StrCat("key", i);
      ASSERT_THAT(p_->Get(key, &r), IsOk());
      auto it = model_.find(key);
      if (it == model_.end()) {
        ASSERT_FALSE(r.found) << key << " = " << r.value.substr(0, 30);
      } else {
        ASSERT_TRUE(r.found) << key;
        ASSERT_EQ(r.value, it->second.value) << key;
        ASSERT_EQ(r.version, it->second.version) << key;
      }
    }
    auto dump = DumpAll(*p_);
    ASSERT_THAT(dump, IsOk());
    EXPECT_EQ(*dump, model_);
    EXPECT_EQ(p_->Stats().keys, model_.size());
  }

  absl::StatusOr<CheckpointInfo> TakeCheckpoint() {
    auto info = p_->Checkpoint();
    if (info.ok()) ids_.push_back(info->id);
    return info;
  }
  // Writes, takes a checkpoint (*out), writes more and closes: the
  // checkpoint covers part of the log.
  void CheckpointBetweenWritesAndClose(CheckpointInfo* out) {
    ASSERT_NO_FATAL_FAILURE(Write(100, 30));
    auto info = TakeCheckpoint();
    ASSERT_THAT(info, IsOk());
    *out = *info;
    ASSERT_NO_FATAL_FAILURE(Write(100, 30));
    ASSERT_THAT(p_->Close(), IsOk());
    p_.reset();
  }

  // Closes the partition, then checks that a full replay gives the model.
  void ExpectFullReplayGivesModel() {
    if (p_ != nullptr) {
      ASSERT_THAT(p_->Close(), IsOk());
      p_.reset();
    }
    auto dump = FullReplayDump(o_);
    ASSERT_THAT(dump, IsOk());
    EXPECT_EQ(*dump, model_);
  }

  MemFileSystem fs_;
  PartitionOptions o_;
  std::unique_ptr<Partition> p_;
  std::mt19937_64 rng_{42};
  std::map<std::string, Stored> model_;
  std::vector<uint64_t> ids_;
  int writes_ = 0;
};

TEST_F(CheckpointRecoveryTest, RecoveryFromCheckpointEqualsFullReplay) {
  ASSERT_NO_FATAL_FAILURE(Write(400, 60));  // several segments
  ASSERT_GT(p_->Segments().size(), 3u);
  const PartitionStats before = p_->Stats();
  auto info = TakeCheckpoint();
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->covered_address, before.tail_address);
  EXPECT_EQ(info->next_version, before.next_version);
  EXPECT_GT(info->file_size, 0u);
  {
    // The manifest holds the file's body CRC, the value of its trailer.
    const std::string file = fs_.Contents(CheckpointPath(info->id));
    ASSERT_GE(file.size(), kCheckpointHeaderSize + 4);
    EXPECT_EQ(info->crc, crc32c::Value(file.data() + kCheckpointHeaderSize,
                                       file.size() - kCheckpointHeaderSize - 4));
  }
  EXPECT_EQ(info->file_size, fs_.Contents(CheckpointPath(info->id)).size());
  EXPECT_EQ(p_->Stats().checkpoints.taken, 1u);
  ASSERT_TRUE(p_->Stats().checkpoints.last.has_value());
  EXPECT_EQ(*p_->Stats().checkpoints.last, *info);
  EXPECT_THAT(CheckpointFiles(&fs_), ElementsAre(CheckpointFileName(info->id)));

  ASSERT_NO_FATAL_FAILURE(Write(200, 60));  // more segments after it
  const uint64_t live = p_->Stats().live_bytes;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const PartitionStats s = p_->Stats();
  ASSERT_TRUE(s.recovered.checkpoint_id.has_value());
  EXPECT_EQ(*s.recovered.checkpoint_id, info->id);
  EXPECT_EQ(s.recovered.start_address, info->covered_address);
  EXPECT_EQ(s.recovered.checkpoints_rejected, 0u);
  EXPECT_EQ(s.live_bytes, live);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  const uint64_t replayed = s.recovery.records;

  // A full replay reads every record and finds the same contents.
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
  ASSERT_THAT(RemoveCheckpointFiles(&fs_), IsOk());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_FALSE(p_->Stats().recovered.checkpoint_id.has_value());
  EXPECT_LT(replayed, p_->Stats().recovery.records);
  EXPECT_EQ(p_->Stats().live_bytes, live);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CheckpointRecoveryTest, SegmentAccountingEqualsFullReplay) {
  ASSERT_NO_FATAL_FAILURE(Write(300, 40));
  ASSERT_THAT(TakeCheckpoint(), IsOk());
  ASSERT_NO_FATAL_FAILURE(Write(300, 40));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_TRUE(p_->Stats().recovered.checkpoint_id.has_value());
  const SegmentUsageTable from_checkpoint = p_->SegmentUsages();
  const PartitionStats a = p_->Stats();
  std::vector<double> ratios;
  for (const SegmentInfo& seg : p_->Segments()) ratios.push_back(p_->DeadRatio(seg.id));
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
  ASSERT_THAT(RemoveCheckpointFiles(&fs_), IsOk());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_FALSE(p_->Stats().recovered.checkpoint_id.has_value());
  const SegmentUsageTable replayed = p_->SegmentUsages();
  const size_t n = std::max(from_checkpoint.end_id(), replayed.end_id());
  for (size_t i = 0; i < n; ++i) {
    const SegmentUsage x = from_checkpoint.Get(i);
    const SegmentUsage y = replayed.Get(i);
    EXPECT_EQ(x.total_bytes, y.total_bytes) << "segment " << i;
    EXPECT_EQ(x.live_bytes, y.live_bytes) << "segment " << i;
    EXPECT_EQ(x.tombstone_bytes, y.tombstone_bytes) << "segment " << i;
  }
  EXPECT_EQ(a.live_bytes, p_->Stats().live_bytes);
  EXPECT_EQ(a.dead_bytes, p_->Stats().dead_bytes);
  std::vector<double> ratios2;
  for (const SegmentInfo& seg : p_->Segments()) ratios2.push_back(p_->DeadRatio(seg.id));
  EXPECT_EQ(ratios, ratios2);
}

TEST_F(CheckpointRecoveryTest, WritesAfterRecoveryGetHigherVersions) {
  ASSERT_NO_FATAL_FAILURE(Write(200, 30));
  ASSERT_THAT(TakeCheckpoint(), IsOk());
  uint64_t max_version = 0;
  for (const auto& [k, v] : model_) max_version = std::max(max_version, v.version);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_TRUE(p_->Stats().recovered.checkpoint_id.has_value());
  EXPECT_EQ(p_->Stats().recovered.start_address, p_->Stats().tail_address);
  auto w = p_->Put("key0", "after");
  ASSERT_THAT(w, IsOk());
  EXPECT_GT(w->version, max_version);
  // Compare-and-set against recovered versions works.
  for (const auto& [key, v] : model_) {
    if (key == "key0") continue;
    WriteOp op = WriteOp::Put(key, "cas");
    op.expected_version = v.version;
    auto r = p_->Write(op);
    ASSERT_THAT(r, IsOk()) << key;
    model_[key] = Stored{"cas", r->version};
    break;
  }
  model_["key0"] = Stored{"after", w->version};
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CheckpointRecoveryTest, CheckpointOfEmptyPartition) {
  auto info = TakeCheckpoint();
  ASSERT_THAT(info, IsOk());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_TRUE(p_->Stats().recovered.checkpoint_id.has_value());
  EXPECT_EQ(p_->Stats().keys, 0u);
  ASSERT_NO_FATAL_FAILURE(Write(50, 10));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CheckpointRecoveryTest, RecoveredCheckpointChains) {
  // Checkpoint, reopen from it, write, checkpoint again, reopen: each time
  // the newest is used and ids keep ascending.
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    ASSERT_NO_FATAL_FAILURE(Write(120, 50));
    auto info = TakeCheckpoint();
    ASSERT_THAT(info, IsOk());
    if (ids_.size() > 1) {
      EXPECT_GT(ids_.back(), ids_[ids_.size() - 2]);
    }
    ASSERT_NO_FATAL_FAILURE(Write(round * 20, 50));
    ASSERT_NO_FATAL_FAILURE(Reopen());
    ASSERT_TRUE(p_->Stats().recovered.checkpoint_id.has_value());
    EXPECT_EQ(*p_->Stats().recovered.checkpoint_id, info->id);
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
    // Reopening without writing anything recovers the same.
    ASSERT_NO_FATAL_FAILURE(Reopen());
    ASSERT_NO_FATAL_FAILURE(ExpectModel());
  }
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
}

enum class DamageKind { kHeaderByte, kBodyByte, kTruncated, kEmpty, kMissing, kAppended };

std::string DamageName(DamageKind d) {
  switch (d) {
    case DamageKind::kHeaderByte: return "HeaderByte";
    case DamageKind::kBodyByte: return "BodyByte";
    case DamageKind::kTruncated: return "Truncated";
    case DamageKind::kEmpty: return "Empty";
    case DamageKind::kMissing: return "Missing";
    case DamageKind::kAppended: return "Appended";
  }
  return "?";
}

class DamagedCheckpointTest : public CheckpointRecoveryTest,
                              public ::testing::WithParamInterface<DamageKind> {
 protected:
  void Apply(uint64_t id) {
    const std::string path = CheckpointPath(id);
    std::string data = fs_.Contents(path);
    ASSERT_GT(data.size(), kCheckpointHeaderSize + 8);
    switch (GetParam()) {
      case DamageKind::kHeaderByte:
        data[30] ^= 0x01;
        break;
      case DamageKind::kBodyByte:
        data[kCheckpointHeaderSize + (data.size() - kCheckpointHeaderSize) / 2] ^= 0x40;
        break;
      case DamageKind::kTruncated:
        data.resize(data.size() - 7);
        break;
      case DamageKind::kEmpty:
        data.clear();
        break;
      case DamageKind::kAppended:
        data += "trailing garbage";
        break;
      case DamageKind::kMissing:
        ASSERT_THAT(fs_.Remove(path), IsOk());
        ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
        return;
    }
    ASSERT_TRUE(fs_.OverwriteFile(path, data));
  }
};

TEST_P(DamagedCheckpointTest, DamagedNewestFallsBackToOlder) {
  ASSERT_NO_FATAL_FAILURE(Write(200, 50));
  auto older = TakeCheckpoint();
  ASSERT_THAT(older, IsOk());
  ASSERT_NO_FATAL_FAILURE(Write(200, 50));
  auto newer = TakeCheckpoint();
  ASSERT_THAT(newer, IsOk());
  ASSERT_GT(newer->covered_address, older->covered_address);
  ASSERT_NO_FATAL_FAILURE(Write(100, 50));
  ASSERT_THAT(p_->Close(), IsOk());
  p_.reset();
  ASSERT_NO_FATAL_FAILURE(Apply(newer->id));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const PartitionStats s = p_->Stats();
  ASSERT_TRUE(s.recovered.checkpoint_id.has_value());
  EXPECT_EQ(*s.recovered.checkpoint_id, older->id);
  EXPECT_EQ(s.recovered.start_address, older->covered_address);
  EXPECT_EQ(s.recovered.checkpoints_rejected, 1u);
  // The unusable one is dropped, file and MANIFEST entry.
  EXPECT_THAT(CheckpointFiles(&fs_), ElementsAre(CheckpointFileName(older->id)));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  // Writes and checkpoints go on normally afterwards, and the next
  // checkpoint takes the dropped one's place, not the good older one's.
  ASSERT_NO_FATAL_FAILURE(Write(50, 50));
  auto next = TakeCheckpoint();
  ASSERT_THAT(next, IsOk());
  EXPECT_GT(next->id, older->id);
  EXPECT_THAT(CheckpointFiles(&fs_), UnorderedElementsAre(CheckpointFileName(older->id),
                                                          CheckpointFileName(next->id)));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id, std::optional<uint64_t>(next->id));
  EXPECT_EQ(p_->Stats().recovered.checkpoints_rejected, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_P(DamagedCheckpointTest, AllDamagedFallsBackToFullReplay) {
  ASSERT_NO_FATAL_FAILURE(Write(200, 50));
  auto older = TakeCheckpoint();
  ASSERT_THAT(older, IsOk());
  ASSERT_NO_FATAL_FAILURE(Write(200, 50));
  auto newer = TakeCheckpoint();
  ASSERT_THAT(newer, IsOk());
  ASSERT_NO_FATAL_FAILURE(Write(100, 50));
  ASSERT_THAT(p_->Close(), IsOk());
  p_.reset();
  ASSERT_NO_FATAL_FAILURE(Apply(older->id));
  ASSERT_NO_FATAL_FAILURE(Apply(newer->id));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const PartitionStats s = p_->Stats();
  EXPECT_FALSE(s.recovered.checkpoint_id.has_value());
  EXPECT_EQ(s.recovered.checkpoints_rejected, 2u);
  EXPECT_LT(s.recovered.start_address, older->covered_address);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(Write(50, 50));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

INSTANTIATE_TEST_SUITE_P(Kinds, DamagedCheckpointTest,
                         ::testing::Values(DamageKind::kHeaderByte, DamageKind::kBodyByte,
                                           DamageKind::kTruncated, DamageKind::kEmpty,
                                           DamageKind::kMissing, DamageKind::kAppended),
                         [](const auto& info) { return DamageName(info.param); });

// A checkpoint this build cannot read (a newer format) may be readable by
// the next one: recovery falls back past it but keeps it listed, where a
// damaged or missing one is dropped.
TEST_F(CheckpointRecoveryTest, ACheckpointOfANewerFormatIsSkippedButKept) {
  CheckpointInfo info;
  ASSERT_NO_FATAL_FAILURE(CheckpointBetweenWritesAndClose(&info));
  std::string d = fs_.Contents(CheckpointPath(info.id));
  ASSERT_FALSE(d.empty());
  EncodeFixed32(d.data() + kOffVersion, kCheckpointFormatVersion + 1);
  EncodeFixed32(d.data() + kOffHeaderCrc, crc32c::Value(d.data(), kOffHeaderCrc));
  ASSERT_TRUE(fs_.OverwriteFile(CheckpointPath(info.id), d));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_FALSE(p_->Stats().recovered.checkpoint_id.has_value());
  EXPECT_EQ(p_->Stats().recovered.checkpoints_rejected, 1u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  const std::string manifest_path = std::string(kDir) + "/MANIFEST";
  auto manifest = DecodeManifest(fs_.Contents(manifest_path), manifest_path);
  ASSERT_THAT(manifest, IsOk());
  ASSERT_EQ(manifest->checkpoints.size(), 1u);
  EXPECT_EQ(manifest->checkpoints[0].id, info.id);
  EXPECT_TRUE(fs_.Exists(CheckpointPath(info.id)));
}

TEST_F(CheckpointRecoveryTest, CheckpointOfAnotherPartitionIsRejected) {
  // A checkpoint file that is valid in itself but was written for other
  // options (here: copied from a different partition's directory) must
  // not be loaded.
  CheckpointInfo info;
  ASSERT_NO_FATAL_FAILURE(CheckpointBetweenWritesAndClose(&info));

  MemFileSystem other_fs;
  PartitionOptions other = SmallOptions(&other_fs);
  other.partition_id = 9;
  other.checkpoint_interval = absl::ZeroDuration();
  {
    auto q = Partition::Open(other);
    ASSERT_THAT(q, IsOk());
    for (int i = 0; i < 80; ++i) {
      ASSERT_THAT((*q)->Put(absl::StrCat("other", i), "x"), IsOk());
    }
    auto oi = (*q)->Checkpoint();
    ASSERT_THAT(oi, IsOk());
    ASSERT_THAT((*q)->Close(), IsOk());
    // Put under the name the MANIFEST lists, and make the MANIFEST's
    // entry match it (size, CRC, covered address, next version): only the
    // partition check can tell.
    std::string contents = other_fs.Contents(CheckpointPath(oi->id));
    ASSERT_FALSE(contents.empty());
    ASSERT_TRUE(fs_.OverwriteFile(CheckpointPath(info.id), contents));
    ASSERT_LE(oi->covered_address, info.covered_address);  // inside this log
    const std::string manifest_path = std::string(kDir) + "/MANIFEST";
    auto manifest = DecodeManifest(fs_.Contents(manifest_path), manifest_path);
    ASSERT_THAT(manifest, IsOk());
    bool replaced = false;
    for (CheckpointInfo& c : manifest->checkpoints) {
      if (c.id != info.id) continue;
      c = *oi;
      c.id = info.id;
      replaced = true;
    }
    ASSERT_TRUE(replaced);
    ASSERT_EQ(oi->id, info.id);  // the file's header names the same id
    ASSERT_TRUE(fs_.OverwriteFile(manifest_path, EncodeManifest(*manifest)));
  }
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_FALSE(p_->Stats().recovered.checkpoint_id.has_value());
  EXPECT_EQ(p_->Stats().recovered.checkpoints_rejected, 1u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CheckpointRecoveryTest, PeriodicCheckpointThroughTick) {
  o_.checkpoint_interval = absl::Nanoseconds(1);
  auto wakes = std::make_shared<std::atomic<int>>(0);
  o_.wake = [wakes] { wakes->fetch_add(1); };
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(Write(150, 40));
  EXPECT_EQ(p_->Stats().checkpoints.taken, 0u) << "nothing should start without Tick()";
  // Tick until one has been taken; the background thread needs no sleep
  // from us, only Ticks (bounded so a hang fails instead of spinning).
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (p_->Stats().checkpoints.taken == 0 || p_->checkpoint_running()) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(absl::Now(), deadline) << "no periodic checkpoint finished";
  }
  const PartitionStats s = p_->Stats();
  EXPECT_EQ(s.checkpoints.taken, 1u);
  EXPECT_EQ(s.checkpoints.failed, 0u) << s.checkpoints.last_error;
  ASSERT_TRUE(s.checkpoints.last.has_value());
  EXPECT_EQ(s.checkpoints.last->covered_address, s.tail_address);
  EXPECT_GE(wakes->load(), 1);
  EXPECT_THAT(CheckpointFiles(&fs_),
              ElementsAre(CheckpointFileName(s.checkpoints.last->id)));

  // The log has not grown: more Ticks start nothing.
  for (int i = 0; i < 200; ++i) ASSERT_THAT(p_->Tick(), IsOk());
  EXPECT_FALSE(p_->checkpoint_running());
  EXPECT_EQ(p_->Stats().checkpoints.taken, 1u);

  // It has grown: the next Ticks take another.
  ASSERT_NO_FATAL_FAILURE(Write(20, 40));
  const absl::Time deadline2 = absl::Now() + absl::Seconds(20);
  while (p_->Stats().checkpoints.taken < 2 || p_->checkpoint_running()) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(absl::Now(), deadline2) << "no second periodic checkpoint";
  }
  const uint64_t id = p_->Stats().checkpoints.last->id;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id, std::optional<uint64_t>(id));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CheckpointRecoveryTest, WritesWhileAsyncCheckpointRunsAreRecovered) {
  ASSERT_NO_FATAL_FAILURE(Write(200, 40));
  const uint64_t tail = p_->Stats().tail_address;
  ASSERT_THAT(p_->StartCheckpoint(), IsOk());
  EXPECT_TRUE(p_->checkpoint_running());
  ASSERT_THAT(p_->StartCheckpoint(), IsOk());  // already running: OK
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  int rounds = 0;
  while (p_->checkpoint_running()) {
    ASSERT_NO_FATAL_FAILURE(Write(3, 40));  // the partition stays writable
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(absl::Now(), deadline) << "the checkpoint never finished";
    ++rounds;
  }
  EXPECT_GT(rounds, 0);
  const PartitionStats s = p_->Stats();
  EXPECT_EQ(s.checkpoints.taken, 1u);
  EXPECT_EQ(s.checkpoints.failed, 0u) << s.checkpoints.last_error;
  ASSERT_TRUE(s.checkpoints.last.has_value());
  // It covers what was written before it started, and maybe some writes
  // made before the Tick that copied the index.
  EXPECT_GE(s.checkpoints.last->covered_address, tail);
  EXPECT_LE(s.checkpoints.last->covered_address, s.tail_address);
  ASSERT_NO_FATAL_FAILURE(Write(30, 40));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id,
            std::optional<uint64_t>(s.checkpoints.last->id));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
}

// The buffer a checkpoint maps when it starts has room for some growth of
// the index; an index that outgrows it before the copy gets a bigger one
// (the job goes back to allocating), and the checkpoint is still whole.
TEST_F(CheckpointRecoveryTest, AnIndexThatOutgrowsTheCheckpointBufferGetsABiggerOne) {
  ASSERT_NO_FATAL_FAILURE(Write(200, 40));
  auto file_size = [&] {
    CheckpointHeader h;
    h.geometry = p_->index().geometry();
    h.usage_count = CountUsageEntries(p_->SegmentUsages());
    return CheckpointFileSize(h);
  };
  const uint64_t before = file_size();
  ASSERT_THAT(p_->StartCheckpoint(), IsOk());
  // No Tick until the index has grown past the room mapped for it (the
  // job's estimate + 16 usage entries, + 1/16, + 1 MiB).
  ASSERT_NO_FATAL_FAILURE(Write(150000, 1 << 30));
  ASSERT_GT(file_size(), before + before / 16 + (1 << 20) + 16 * 64)
      << "the index did not outgrow the buffer: the test tests nothing";
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (p_->checkpoint_running()) {
    ASSERT_THAT(p_->Tick(), IsOk());
    ASSERT_LT(absl::Now(), deadline) << "the checkpoint never finished";
  }
  const PartitionStats s = p_->Stats();
  EXPECT_EQ(s.checkpoints.taken, 1u);
  EXPECT_EQ(s.checkpoints.failed, 0u) << s.checkpoints.last_error;
  ASSERT_TRUE(s.checkpoints.last.has_value());
  EXPECT_EQ(s.checkpoints.last->covered_address, s.tail_address);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id,
            std::optional<uint64_t>(s.checkpoints.last->id));
  EXPECT_EQ(p_->Stats().recovery.records, 0u);  // nothing after it to replay
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CheckpointRecoveryTest, CheckpointJoinsARunningOne) {
  ASSERT_NO_FATAL_FAILURE(Write(100, 40));
  ASSERT_THAT(p_->StartCheckpoint(), IsOk());
  ASSERT_NO_FATAL_FAILURE(Write(10, 40));
  auto info = TakeCheckpoint();
  ASSERT_THAT(info, IsOk());
  EXPECT_FALSE(p_->checkpoint_running());
  // The blocking one covers everything written before it was called.
  EXPECT_EQ(info->covered_address, p_->Stats().tail_address);
  EXPECT_EQ(p_->Stats().checkpoints.taken, 2u);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id, std::optional<uint64_t>(info->id));
  EXPECT_EQ(p_->Stats().recovered.start_address, info->covered_address);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

TEST_F(CheckpointRecoveryTest, CloseFinishesARunningCheckpoint) {
  ASSERT_NO_FATAL_FAILURE(Write(100, 40));
  ASSERT_THAT(p_->StartCheckpoint(), IsOk());
  ASSERT_NO_FATAL_FAILURE(Reopen());  // Close() with the checkpoint running
  EXPECT_TRUE(p_->Stats().recovered.checkpoint_id.has_value())
      << "Close() did not finish the running checkpoint";
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  EXPECT_THAT(FilesIn(&fs_, kDir, "", ".tmp"), IsEmpty());
  EXPECT_EQ(CheckpointFiles(&fs_).size(), 1u);
}

TEST_F(CheckpointRecoveryTest, OnlyCheckpointsToKeepFilesRemain) {
  ASSERT_EQ(o_.checkpoints_to_keep, 2u);
  for (int i = 0; i < 4; ++i) {
    ASSERT_NO_FATAL_FAILURE(Write(60, 40));
    ASSERT_THAT(TakeCheckpoint(), IsOk());
  }
  EXPECT_EQ(p_->Stats().checkpoints.taken, 4u);
  ASSERT_EQ(ids_.size(), 4u);
  EXPECT_THAT(CheckpointFiles(&fs_),
              UnorderedElementsAre(CheckpointFileName(ids_[2]),
                                   CheckpointFileName(ids_[3])));
  // And the same after a crash: the removals were durable.
  ASSERT_THAT(p_->Close(), IsOk());
  p_.reset();
  fs_.Crash(1);
  EXPECT_THAT(CheckpointFiles(&fs_),
              UnorderedElementsAre(CheckpointFileName(ids_[2]),
                                   CheckpointFileName(ids_[3])));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id, std::optional<uint64_t>(ids_[3]));
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  // With one to keep, the next checkpoint leaves only itself.
  o_.checkpoints_to_keep = 1;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(Write(10, 40));
  ASSERT_THAT(TakeCheckpoint(), IsOk());
  EXPECT_THAT(CheckpointFiles(&fs_), ElementsAre(CheckpointFileName(ids_.back())));
}

TEST_F(CheckpointRecoveryTest, UnlistedCheckpointAndTmpFilesAreRemovedAtOpen) {
  ASSERT_NO_FATAL_FAILURE(Write(100, 40));
  auto info = TakeCheckpoint();
  ASSERT_THAT(info, IsOk());
  ASSERT_THAT(p_->Close(), IsOk());
  p_.reset();
  // A valid checkpoint under an id the MANIFEST does not list (newer than
  // the listed one), a leftover checkpoint tmp and a leftover manifest tmp.
  const std::string stray = CheckpointPath(info->id + 7);
  const std::string tmp = CheckpointPath(info->id + 8) + ".tmp";
  const std::string manifest_tmp = std::string(kDir) + "/MANIFEST.tmp";
  const std::string contents = fs_.Contents(CheckpointPath(info->id));
  for (const std::string& path : {stray, tmp, manifest_tmp}) {
    auto f = fs_.OpenWritable(path, true);
    ASSERT_THAT(f, IsOk());
    ASSERT_THAT((*f)->Append(contents), IsOk());
    ASSERT_THAT((*f)->Sync(), IsOk());
  }
  ASSERT_THAT(fs_.SyncDir(kDir), IsOk());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_FALSE(fs_.Exists(stray));
  EXPECT_FALSE(fs_.Exists(tmp));
  EXPECT_FALSE(fs_.Exists(manifest_tmp));
  EXPECT_TRUE(fs_.Exists(CheckpointPath(info->id)));
  EXPECT_GE(p_->Stats().recovery.removed_files, 3u);
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id, std::optional<uint64_t>(info->id));
  EXPECT_THAT(CheckpointFiles(&fs_), ElementsAre(CheckpointFileName(info->id)));
  EXPECT_THAT(FilesIn(&fs_, kDir, "", ".tmp"), IsEmpty());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  // A checkpoint taken after that gets a new id, not the stray's file.
  auto next = TakeCheckpoint();
  ASSERT_THAT(next, IsOk());
  EXPECT_GT(next->id, info->id);
}

TEST_F(CheckpointRecoveryTest, CheckpointFilesOfAnEmptyDirectoryAreRemoved) {
  // No MANIFEST at all (a partition never created): stray checkpoint and
  // tmp files are removed and the partition starts empty.
  ASSERT_THAT(p_->Close(), IsOk());
  p_.reset();
  MemFileSystem fresh;
  ASSERT_THAT(fresh.CreateDir(kDir), IsOk());
  for (const std::string& name : {CheckpointFileName(3), std::string("x.tmp")}) {
    auto f = fresh.OpenWritable(std::string(kDir) + "/" + name, true);
    ASSERT_THAT(f, IsOk());
    ASSERT_THAT((*f)->Append("junk"), IsOk());
  }
  PartitionOptions o = o_;
  o.fs = &fresh;
  auto p = Partition::Open(o);
  ASSERT_THAT(p, IsOk());
  EXPECT_FALSE((*p)->Stats().recovered.checkpoint_id.has_value());
  EXPECT_THAT(CheckpointFiles(&fresh), IsEmpty());
  EXPECT_FALSE(fresh.Exists(std::string(kDir) + "/x.tmp"));
  EXPECT_EQ((*p)->Stats().keys, 0u);
}

TEST_F(CheckpointRecoveryTest, CleanCloseTakesACheckpointSoReopenReplaysNothing) {
  o_.checkpoint_on_close = true;
  ASSERT_NO_FATAL_FAILURE(Reopen());  // empty: closing takes none
  EXPECT_THAT(CheckpointFiles(&fs_), IsEmpty());
  ASSERT_NO_FATAL_FAILURE(Write(400, 60));
  const uint64_t tail = p_->Stats().tail_address;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  PartitionStats s = p_->Stats();
  ASSERT_TRUE(s.recovered.checkpoint_id.has_value());
  EXPECT_EQ(s.recovered.start_address, tail);
  EXPECT_EQ(s.recovery.records, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  const std::vector<std::string> files = CheckpointFiles(&fs_);
  ASSERT_EQ(files.size(), 1u);

  // Nothing written since: closing again adds no checkpoint.
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_EQ(CheckpointFiles(&fs_), files);
  EXPECT_EQ(p_->Stats().recovery.records, 0u);

  // Written since: the next close covers it.
  ASSERT_NO_FATAL_FAILURE(Write(50, 60));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_NE(CheckpointFiles(&fs_), files);
  EXPECT_EQ(p_->Stats().recovery.records, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
  ASSERT_NO_FATAL_FAILURE(ExpectFullReplayGivesModel());
}

// A checkpoint taken when the active segment is filled to its last byte
// covers that segment's end, where no next segment exists yet (the next
// write makes it). It is used, not rejected, both before and after that
// next segment exists.
TEST_F(CheckpointRecoveryTest, CheckpointAtTheEndOfAFullSegmentIsUsed) {
  o_.checkpoint_on_close = true;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const uint64_t seg = o_.segment_size;
  for (int i = 0;; ++i) {
    const uint64_t tail = p_->Stats().tail_address;
    ASSERT_NE(tail % seg, 0u);
    const uint64_t space = seg - tail % seg;
    const std::string key = absl::StrCat("fill", i);
    const uint64_t smallest = RecordSize(key.size(), 1);
    uint64_t value_len = 60;
    // Leave room for one more record, or none at all.
    if (RecordSize(key.size(), value_len) + smallest > space) {
      value_len = space - RecordSize(key.size(), 0);
    }
    const std::string value(value_len, 'v');
    auto w = p_->Put(key, value);
    ASSERT_THAT(w, IsOk());
    model_[key] = Stored{value, w->version};
    if (value_len != 60) break;
  }
  const uint64_t end = p_->Stats().tail_address;
  ASSERT_EQ(end % seg, 0u) << "the segment is not filled exactly";

  ASSERT_NO_FATAL_FAILURE(Reopen());  // the close checkpoint covers `end`
  PartitionStats s = p_->Stats();
  EXPECT_EQ(s.recovered.checkpoints_rejected, 0u);
  ASSERT_TRUE(s.recovered.checkpoint_id.has_value());
  EXPECT_EQ(s.recovered.start_address, end);
  EXPECT_EQ(s.recovery.records, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());

  // The next segment exists once something is written; a crash then (no
  // close checkpoint) recovers from the same checkpoint plus that write.
  auto w = p_->Put("after", "x");
  ASSERT_THAT(w, IsOk());
  model_["after"] = Stored{"x", w->version};
  ASSERT_GT(p_->Stats().tail_address, end);
  fs_.KillAfterOps(0);  // the process dies: Close() writes nothing more
  p_.reset();
  fs_.Crash(3, /*keep_unsynced=*/false);  // under `always` the write is synced
  ASSERT_NO_FATAL_FAILURE(Reopen());
  s = p_->Stats();
  EXPECT_EQ(s.recovered.checkpoints_rejected, 0u);
  ASSERT_TRUE(s.recovered.checkpoint_id.has_value());
  EXPECT_EQ(s.recovered.start_address, end);
  EXPECT_EQ(s.recovery.records, 1u);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// Once the MANIFEST lists a checkpoint it is taken: a failure in the
// cleanup after it (removing the file it replaced, syncing the directory)
// does not make Checkpoint() report it failed while recovery would use it.
TEST_F(CheckpointRecoveryTest, ACheckpointListedBeforeItsCleanupFailedIsTaken) {
  o_.checkpoints_to_keep = 1;
  Reopen();
  ASSERT_NO_FATAL_FAILURE(Write(60, 30));
  ASSERT_THAT(TakeCheckpoint(), IsOk());
  ASSERT_NO_FATAL_FAILURE(Write(20, 30));
  const uint64_t before = fs_.SyncCount();
  ASSERT_THAT(TakeCheckpoint(), IsOk());  // drops the first
  const uint64_t syncs = fs_.SyncCount() - before;
  ASSERT_GE(syncs, 3u);
  ASSERT_NO_FATAL_FAILURE(Write(20, 30));
  fs_.FailSyncsAfter(syncs - 1, EIO);  // the directory sync after the removal
  auto third = TakeCheckpoint();
  ASSERT_THAT(third, IsOk());
  const PartitionStats st = p_->Stats();
  ASSERT_TRUE(st.checkpoints.last.has_value());
  EXPECT_EQ(st.checkpoints.last->id, third->id);
  EXPECT_EQ(st.checkpoints.failed, 0u);
  fs_.FailSyncsAfter(-1, 0);
  Reopen();
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id, third->id);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// A checkpoint whose MANIFEST entry could not be written leaves no file
// behind (a retry on a full disk would need room for two), and the retry
// gets a new id.
TEST_F(CheckpointRecoveryTest, ACheckpointThatCouldNotBeRecordedLeavesNoFile) {
  ASSERT_NO_FATAL_FAILURE(Write(60, 30));
  const uint64_t before = fs_.SyncCount();
  auto first = TakeCheckpoint();  // keeps both: drops nothing
  ASSERT_THAT(first, IsOk());
  const uint64_t syncs = fs_.SyncCount() - before;  // ..., MANIFEST tmp, directory
  ASSERT_GE(syncs, 3u);
  ASSERT_NO_FATAL_FAILURE(Write(20, 30));
  fs_.FailSyncsAfter(syncs - 2, EIO);  // the MANIFEST tmp: before its rename
  EXPECT_FALSE(p_->Checkpoint().ok());
  EXPECT_THAT(CheckpointFiles(&fs_), ElementsAre(CheckpointFileName(first->id)));
  fs_.FailSyncsAfter(-1, 0);
  auto retry = TakeCheckpoint();
  ASSERT_THAT(retry, IsOk());
  EXPECT_GT(retry->id, first->id + 1) << "the failed attempt's id was reused";
  EXPECT_THAT(CheckpointFiles(&fs_),
              UnorderedElementsAre(CheckpointFileName(first->id),
                                   CheckpointFileName(retry->id)));
  Reopen();
  EXPECT_EQ(p_->Stats().recovered.checkpoint_id, retry->id);
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// A checkpoint whose file could not be written gives up its id: the file a
// (background) removal may still be about to delete never has the name of
// the retry.
TEST_F(CheckpointRecoveryTest, AFailedCheckpointWriteDoesNotReuseItsId) {
  ASSERT_NO_FATAL_FAILURE(Write(40, 20));
  auto first = TakeCheckpoint();
  ASSERT_THAT(first, IsOk());
  ASSERT_NO_FATAL_FAILURE(Write(20, 20));
  fs_.FailSyncsAfter(0, EIO);  // the checkpoint file's own sync
  EXPECT_FALSE(p_->Checkpoint().ok());
  fs_.FailSyncsAfter(-1, 0);
  auto retry = TakeCheckpoint();
  ASSERT_THAT(retry, IsOk());
  EXPECT_GE(retry->id, first->id + 2);
  EXPECT_THAT(CheckpointFiles(&fs_), UnorderedElementsAre(CheckpointFileName(first->id),
                                                          CheckpointFileName(retry->id)));
}

// The log below a checkpoint's covered address was synced before the
// checkpoint was written. A log that ends short of it lost synced records:
// the partition must not open by falling back to an older checkpoint or a
// full replay as if nothing had happened.
TEST_F(CheckpointRecoveryTest, ALogShorterThanACheckpointCoversIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Write(40, 20));
  auto info = TakeCheckpoint();
  ASSERT_THAT(info, IsOk());
  ASSERT_THAT(p_->Close(), IsOk());
  p_.reset();
  const uint64_t id = info->covered_address / o_.segment_size;
  const uint64_t offset = info->covered_address - id * o_.segment_size;
  ASSERT_GT(offset, 200u);
  const std::string path = testing::SegmentPath(id);
  const std::string data = fs_.Contents(path);
  ASSERT_GE(data.size(), offset);
  ASSERT_TRUE(fs_.OverwriteFile(path, data.substr(0, offset - 10)));
  EXPECT_THAT(Partition::Open(o_),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr(absl::StrCat("checkpoint ", info->id))));
}

TEST_F(CheckpointRecoveryTest, FailedCheckpointAtCloseStillClosesAndLosesNothing) {
  o_.checkpoint_on_close = true;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_NO_FATAL_FAILURE(Write(200, 60));
  // Every append from here on fails: the checkpoint file cannot be
  // written, but the log is already durable (durability=always).
  fs_.FailAppendsAfter(0, ENOSPC);
  EXPECT_THAT(p_->Close(), IsOk());
  p_.reset();
  fs_.FailAppendsAfter(-1, 0);
  EXPECT_THAT(CheckpointFiles(&fs_), IsEmpty());
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_FALSE(p_->Stats().recovered.checkpoint_id.has_value());
  ASSERT_NO_FATAL_FAILURE(ExpectModel());
}

// Under every durability policy, a crash after checkpoints (unsynced tail
// lost or torn) recovers the same contents from the checkpoint as from a
// full replay, and nothing acknowledged before the last sync is lost.
class CheckpointCrashTest : public ::testing::TestWithParam<Durability> {};

TEST_P(CheckpointCrashTest, CrashAfterCheckpointEqualsFullReplay) {
  for (int seed = 0; seed < 40; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed);
    MemFileSystem fs;
    PartitionOptions o = SmallOptions(&fs, GetParam());
    o.checkpoint_interval = absl::ZeroDuration();
    o.compaction_dead_ratio = 2;
    o.sync_interval = absl::Hours(1);
    o.write_buffer_size = 256 + rng() % 2048;
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    // states[i]: the contents after the first i acknowledged writes.
    Dump model;
    std::vector<Dump> states = {model};
    size_t synced = 0;  // states[synced] is durable
    int n = 0;
    auto write = [&](bool allow_delete) {
      const std::string key = absl::StrCat("key", rng() % 40);
      if (allow_delete && rng() % 5 == 0) {
        ASSERT_THAT((*p)->Delete(key), IsOk());
        model.erase(key);
      } else {
        const std::string value = ValueFor(key, ++n, rng);
        auto w = (*p)->Put(key, value);
        ASSERT_THAT(w, IsOk());
        model[key] = Stored{value, w->version};
      }
      states.push_back(model);
    };
    const int rounds = 1 + rng() % 4;
    for (int r = 0; r < rounds; ++r) {
      const int ops = 20 + rng() % 150;
      for (int i = 0; i < ops; ++i) ASSERT_NO_FATAL_FAILURE(write(true));
      if (rng() % 3 != 0) {
        // A checkpoint syncs the log before it copies the index: all it
        // covers is durable.
        ASSERT_THAT((*p)->Checkpoint(), IsOk());
        synced = states.size() - 1;
      }
      if (rng() % 2 != 0) {
        ASSERT_THAT((*p)->Sync(), IsOk());
        synced = states.size() - 1;
      }
    }
    // Some writes after the last checkpoint, maybe lost.
    const int tail = rng() % 30;
    for (int i = 0; i < tail; ++i) ASSERT_NO_FATAL_FAILURE(write(true));
    if (GetParam() == Durability::kAlways) synced = states.size() - 1;
    fs.KillAfterOps(0);  // the process dies: Close() writes nothing
    p->reset();
    fs.Crash(rng(), /*keep_unsynced=*/rng() % 3 != 0);
    auto q = Partition::Open(o);
    ASSERT_THAT(q, IsOk());
    auto dump = DumpAll(**q);
    ASSERT_THAT(dump, IsOk());
    // The state after some prefix of the writes, no shorter than what the
    // last sync (every write under kAlways) made durable.
    bool matched = false;
    for (size_t k = synced; k < states.size() && !matched; ++k) {
      matched = states[k] == *dump;
    }
    EXPECT_TRUE(matched) << "recovered " << dump->size()
                         << " keys: no state at or after the last sync (write "
                         << synced << " of " << states.size() - 1 << ")";
    ASSERT_THAT((*q)->Close(), IsOk());
    q->reset();
    auto full = FullReplayDump(o);
    ASSERT_THAT(full, IsOk());
    EXPECT_EQ(*full, *dump);
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, CheckpointCrashTest,
                         ::testing::Values(Durability::kAlways,
                                           Durability::kInterval,
                                           Durability::kNone),
                         [](const auto& info) {
                           return std::string(DurabilityName(info.param));
                         });

}  // namespace
}  // namespace segkv::worker
