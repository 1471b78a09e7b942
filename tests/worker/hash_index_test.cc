#include "worker/hash_index.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/format.h"
#include "worker/key_hash.h"

namespace segkv::worker {
namespace {

// An index over a fake log that maps addresses to keys, resolving
// fingerprint collisions by key comparison as the partition does.
class IndexedLog {
 public:
  // Writes `key` at a fresh address; returns it.
  uint64_t Put(const std::string& key, uint32_t fp) {
    const uint64_t address = next_address_;
    next_address_ += 4099;
    log_[address] = key;
    HashIndex::Position pos = Find(key, fp);
    if (pos.found()) {
      index_.Update(pos, address);
    } else {
      index_.Insert(fp, address);
    }
    return address;
  }
  HashIndex::Position Find(const std::string& key, uint32_t fp) {
    return index_.Find(fp, [&](uint64_t a) {
      auto it = log_.find(a);
      return it != log_.end() && it->second == key;
    });
  }
  bool Erase(const std::string& key, uint32_t fp) {
    HashIndex::Position pos = Find(key, fp);
    if (!pos.found()) return false;
    index_.Erase(pos);
    return true;
  }
  HashIndex& index() { return index_; }

 private:
  HashIndex index_;
  std::unordered_map<uint64_t, std::string> log_;
  uint64_t next_address_ = (uint64_t{1} << 33) + 64;
};

uint32_t FpOf(const std::string& key) {
  return HashIndex::Fingerprint(KeyHash(key));
}

std::string Key(int i) { return absl::StrCat("key-", i); }

TEST(HashIndexTest, EmptyIndexFindsNothing) {
  HashIndex index;
  EXPECT_EQ(index.size(), 0u);
  int calls = 0;
  EXPECT_FALSE(index.Find(123, [&](uint64_t) { return ++calls, true; }).found());
  EXPECT_EQ(calls, 0);
}

TEST(HashIndexTest, InsertFindUpdateErase) {
  IndexedLog db;
  const uint64_t a1 = db.Put("alpha", FpOf("alpha"));
  const uint64_t b1 = db.Put("beta", FpOf("beta"));
  EXPECT_EQ(db.index().size(), 2u);
  EXPECT_EQ(db.Find("alpha", FpOf("alpha")).address, a1);
  EXPECT_EQ(db.Find("beta", FpOf("beta")).address, b1);
  EXPECT_FALSE(db.Find("gamma", FpOf("gamma")).found());

  const uint64_t a2 = db.Put("alpha", FpOf("alpha"));
  EXPECT_NE(a2, a1);
  EXPECT_EQ(db.index().size(), 2u);
  EXPECT_EQ(db.Find("alpha", FpOf("alpha")).address, a2);

  EXPECT_TRUE(db.Erase("alpha", FpOf("alpha")));
  EXPECT_EQ(db.index().size(), 1u);
  EXPECT_FALSE(db.Find("alpha", FpOf("alpha")).found());
  EXPECT_FALSE(db.Erase("alpha", FpOf("alpha")));
  EXPECT_EQ(db.Find("beta", FpOf("beta")).address, b1);
}

TEST(HashIndexTest, StoresFullFortyEightBitAddresses) {
  HashIndex index;
  const uint64_t addresses[] = {1, 0xFFFFFFFFu, uint64_t{1} << 32,
                                format::kMaxAddress - 1, format::kMaxAddress};
  for (uint64_t a : addresses) index.Insert(7, a);
  for (uint64_t a : addresses) {
    EXPECT_EQ(index.Find(7, [&](uint64_t x) { return x == a; }).address, a);
  }
}

TEST(HashIndexTest, ManyKeysSharingOneFingerprintStayFindable) {
  constexpr uint32_t kSharedFp = 0xABCD1234u;
  constexpr int kShared = 300;
  IndexedLog db;
  std::vector<uint64_t> addr(kShared);
  for (int i = 0; i < kShared; ++i) addr[i] = db.Put(Key(i), kSharedFp);
  EXPECT_EQ(db.index().size(), static_cast<uint64_t>(kShared));
  EXPECT_GE(db.index().num_overflow_nodes(),
            static_cast<uint64_t>(kShared - HashIndex::kSlots));
  for (int i = 0; i < kShared; ++i) {
    EXPECT_EQ(db.Find(Key(i), kSharedFp).address, addr[i]) << i;
  }
  for (int i = 0; i < 20000; ++i) db.Put(absl::StrCat("other-", i), FpOf(Key(-i)));
  for (int i = 0; i < kShared; ++i) {
    HashIndex::Position pos = db.Find(Key(i), kSharedFp);
    ASSERT_TRUE(pos.found()) << i;
    EXPECT_EQ(pos.address, addr[i]);
  }
  EXPECT_FALSE(db.Find("absent", kSharedFp).found());
}

TEST(HashIndexTest, UpdateAndEraseInOverflowNodes) {
  constexpr uint32_t kFp = 0x55u;
  IndexedLog db;
  for (int i = 0; i < 20; ++i) db.Put(Key(i), kFp);
  for (int i = 0; i < 20; i += 2) {
    const uint64_t a = db.Put(Key(i), kFp);
    EXPECT_EQ(db.Find(Key(i), kFp).address, a);
  }
  for (int i = 1; i < 20; i += 2) EXPECT_TRUE(db.Erase(Key(i), kFp));
  EXPECT_EQ(db.index().size(), 10u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(db.Find(Key(i), kFp).found(), i % 2 == 0);
}

// The step-by-step probe Partition's prefetch uses (one key at a time here)
// meets the same entry as Find() with an always-true match: the first with
// the fingerprint, in the bucket or down its overflow chain.
TEST(HashIndexTest, StepProbeMeetsTheFirstEntryFindWould) {
  IndexedLog db;
  for (int i = 0; i < 50000; ++i) db.Put(Key(i), FpOf(Key(i)));
  for (int i = 0; i < 40; ++i) db.Put(absl::StrCat("shared-", i), 0x77u);
  for (int i = 0; i < 50000; i += 7) db.Erase(Key(i), FpOf(Key(i)));
  auto probe = [&](uint32_t fp) {
    uint32_t next = 0;
    uint64_t a = db.index().ProbeBucket(fp, &next);
    while (a == 0 && next != 0) a = db.index().ProbeNode(fp, &next);
    return a;
  };
  auto first = [&](uint32_t fp) {
    return db.index().Find(fp, [](uint64_t) { return true; });
  };
  uint64_t in_nodes = 0;
  for (int i = 0; i < 60000; ++i) {  // present, erased and absent keys
    const uint32_t fp = FpOf(Key(i));
    const HashIndex::Position pos = first(fp);
    EXPECT_EQ(probe(fp), pos.found() ? pos.address : 0) << i;
    if (pos.node != nullptr) ++in_nodes;
  }
  EXPECT_GT(in_nodes, 1000u);  // overflow chains were walked
  EXPECT_EQ(probe(0x77u), first(0x77u).address);
  EXPECT_NE(probe(0x77u), 0u);
}

// Erased entries keep their place (address 0, fingerprint 0): the step
// probe passes over them in the bucket and down the chain, also for a
// fingerprint of 0, which erased entries share.
TEST(HashIndexTest, StepProbeSkipsErasedEntriesInSlotsAndChains) {
  for (uint32_t fp : {0u, 0x77u}) {
    HashIndex index;
    for (uint64_t a = 1; a <= 30; ++a) index.Insert(fp, a * 64);
    // Keep only the 15th: the 6 slots and the nodes on both sides of it
    // in the chain are erased, whichever order the chain keeps.
    for (uint64_t a = 1; a <= 30; ++a) {
      if (a == 15) continue;
      HashIndex::Position pos = index.Find(fp, [&](uint64_t x) { return x == a * 64; });
      ASSERT_TRUE(pos.found()) << a;
      index.Erase(pos);
    }
    const HashIndex::Position first = index.Find(fp, [](uint64_t) { return true; });
    ASSERT_NE(first.node, nullptr) << fp;
    ASSERT_EQ(first.address, 15u * 64);
    uint32_t next = 0;
    uint64_t a = index.ProbeBucket(fp, &next);
    EXPECT_EQ(a, 0u) << fp;
    int nodes = 0;
    while (a == 0 && next != 0) {
      a = index.ProbeNode(fp, &next);
      ++nodes;
    }
    EXPECT_EQ(a, first.address) << fp;
    EXPECT_GT(nodes, 1) << fp;  // erased nodes were passed over
  }
}

TEST(HashIndexTest, EraseThenInsertReusesSlots) {
  constexpr uint32_t kFp = 0x9E3779B9u;
  constexpr int kKeys = 40;  // under the first split's load
  IndexedLog db;
  for (int i = 0; i < kKeys; ++i) db.Put(Key(i), kFp);
  const uint64_t nodes = db.index().num_overflow_nodes();
  const uint64_t buckets = db.index().num_buckets();
  const uint64_t bytes = db.index().MemoryBytes();
  EXPECT_EQ(nodes, static_cast<uint64_t>(kKeys - HashIndex::kSlots));
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(db.Erase(Key(i), kFp));
    EXPECT_EQ(db.index().size(), 0u);
    for (int i = 0; i < kKeys; ++i) db.Put(Key(i), kFp);
    EXPECT_EQ(db.index().size(), static_cast<uint64_t>(kKeys));
    EXPECT_EQ(db.index().num_overflow_nodes(), nodes);
    EXPECT_EQ(db.index().num_buckets(), buckets);
    EXPECT_EQ(db.index().MemoryBytes(), bytes);
  }
  for (int i = 0; i < kKeys; ++i) EXPECT_TRUE(db.Find(Key(i), kFp).found());
}

TEST(HashIndexTest, ReplaceExactUpdates) {
  HashIndex index;
  index.Insert(10, 100);
  index.Insert(10, 200);
  EXPECT_TRUE(index.ReplaceExact(10, 100, 300));
  EXPECT_EQ(index.size(), 2u);
  EXPECT_FALSE(index.Find(10, [](uint64_t a) { return a == 100; }).found());
  EXPECT_TRUE(index.Find(10, [](uint64_t a) { return a == 300; }).found());
  EXPECT_TRUE(index.Find(10, [](uint64_t a) { return a == 200; }).found());
}

TEST(HashIndexTest, ReplaceExactRemovesWhenNewAddressIsZero) {
  HashIndex index;
  index.Insert(10, 100);
  index.Insert(11, 100);
  EXPECT_TRUE(index.ReplaceExact(10, 100, 0));
  EXPECT_EQ(index.size(), 1u);
  EXPECT_FALSE(index.Find(10, [](uint64_t) { return true; }).found());
  EXPECT_TRUE(index.Find(11, [](uint64_t a) { return a == 100; }).found());
}

TEST(HashIndexTest, ReplaceExactIsFalseWhenAbsent) {
  HashIndex index;
  index.Insert(10, 100);
  EXPECT_FALSE(index.ReplaceExact(10, 101, 5));
  EXPECT_FALSE(index.ReplaceExact(11, 100, 5));
  EXPECT_TRUE(index.ReplaceExact(10, 100, 0));
  EXPECT_FALSE(index.ReplaceExact(10, 100, 0));
  EXPECT_EQ(index.size(), 0u);
}

TEST(HashIndexTest, ForEachVisitsEveryEntryOnceAfterManySplits) {
  HashIndex index;
  std::mt19937_64 rng(5);
  std::unordered_map<uint64_t, uint32_t> expected;
  for (uint64_t i = 1; i <= 100000; ++i) {
    const uint32_t fp = (i % 10 == 0) ? 0x77777777u : static_cast<uint32_t>(rng());
    index.Insert(fp, i * 3);
    expected[i * 3] = fp;
  }
  EXPECT_GT(index.num_buckets(), 16000u);
  std::unordered_map<uint64_t, int> seen;
  index.ForEach([&](uint32_t fp, uint64_t a) {
    ++seen[a];
    auto it = expected.find(a);
    ASSERT_NE(it, expected.end()) << a;
    EXPECT_EQ(fp, it->second) << a;
  });
  EXPECT_EQ(seen.size(), expected.size());
  for (const auto& [a, n] : seen) EXPECT_EQ(n, 1) << a;
}

TEST(HashIndexTest, ForEachSkipsErasedEntries) {
  HashIndex index;
  for (uint64_t i = 1; i <= 30; ++i) index.Insert(4, i);
  for (uint64_t i = 1; i <= 30; i += 3) ASSERT_TRUE(index.ReplaceExact(4, i, 0));
  uint64_t visited = 0;
  index.ForEach([&](uint32_t fp, uint64_t a) {
    ++visited;
    EXPECT_NE(a % 3, 1u) << a;
  });
  EXPECT_EQ(visited, 20u);
  EXPECT_EQ(index.size(), 20u);
}

TEST(HashIndexTest, SizeTracksInsertsAndErases) {
  IndexedLog db;
  for (int i = 0; i < 5000; ++i) {
    db.Put(Key(i), FpOf(Key(i)));
    ASSERT_EQ(db.index().size(), static_cast<uint64_t>(i + 1));
  }
  for (int i = 0; i < 5000; ++i) db.Put(Key(i), FpOf(Key(i)));
  EXPECT_EQ(db.index().size(), 5000u);
  for (int i = 0; i < 5000; i += 2) ASSERT_TRUE(db.Erase(Key(i), FpOf(Key(i))));
  EXPECT_EQ(db.index().size(), 2500u);
  for (int i = 0; i < 5000; ++i) {
    EXPECT_EQ(db.Find(Key(i), FpOf(Key(i))).found(), i % 2 == 1) << i;
  }
}

class HashIndexMillionTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kEntries = 1000000;
  static uint64_t AddressOf(uint64_t i) { return (i + 1) * 65599; }
};

TEST_F(HashIndexMillionTest, GrowthIsIncrementalAndEntriesSurviveSplits) {
  HashIndex index;
  std::mt19937 rng(2024);
  std::vector<uint32_t> fps(kEntries);
  uint64_t max_moved = 0;
  uint64_t max_bucket_growth = 0;
  for (uint64_t i = 0; i < kEntries; ++i) {
    fps[i] = static_cast<uint32_t>(rng());
    const uint64_t moved_before = index.entries_moved();
    const uint64_t buckets_before = index.num_buckets();
    index.Insert(fps[i], AddressOf(i));
    max_moved = std::max(max_moved, index.entries_moved() - moved_before);
    max_bucket_growth =
        std::max(max_bucket_growth, index.num_buckets() - buckets_before);
  }
  EXPECT_LE(max_moved, 64u);
  EXPECT_LE(max_bucket_growth, 1u);
  EXPECT_GT(index.entries_moved(), 0u);
  EXPECT_EQ(index.size(), kEntries);

  const double bytes_per_key =
      static_cast<double>(index.MemoryBytes()) / static_cast<double>(index.size());
  EXPECT_LE(bytes_per_key, 16.0);

  uint64_t missing = 0;
  for (uint64_t i = 0; i < kEntries; ++i) {
    const uint64_t want = AddressOf(i);
    HashIndex::Position pos =
        index.Find(fps[i], [want](uint64_t a) { return a == want; });
    if (!pos.found() || pos.address != want) ++missing;
  }
  EXPECT_EQ(missing, 0u);
}

}  // namespace
}  // namespace segkv::worker
