// The in-memory hash index of one partition: key fingerprint -> log address
// of the key's newest record. Keys themselves stay in the log; the caller
// resolves fingerprint collisions by comparing the key stored at a candidate
// address (the `matches` callbacks below).
//
// Layout (docs/format/index.md has the full rationale):
//  - A bucket is one 64-byte cache line of 6 slots. A slot is a 32-bit
//    fingerprint (the high half of the key's 64-bit hash) plus a 48-bit log
//    address; address 0 marks an empty slot. Entries that do not fit go to
//    16-byte overflow nodes chained from the bucket.
//  - Growth is linear hashing: when the load passes kMaxLoad, exactly one
//    bucket is split, moving its entries by one more fingerprint bit. The
//    table therefore grows by one bucket at a time, never pauses to rehash,
//    and never needs a key from the log to decide where an entry goes,
//    because the bucket number is the low bits of the stored fingerprint.
//  - Memory: 64 bytes per 6 * kMaxLoad keys plus 16 bytes per overflowed
//    entry (10-13% of them), about 14-15 bytes per key whatever the key
//    size (docs/format/index.md).
//
// Not thread-safe: owned by the partition's single worker thread.
#ifndef SEGKV_WORKER_HASH_INDEX_H_
#define SEGKV_WORKER_HASH_INDEX_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace segkv::worker {

class HashIndex {
 public:
  static constexpr int kSlots = 6;
  static constexpr double kMaxLoad = 0.86;

  struct alignas(64) Bucket {
    uint32_t fp[kSlots];       // 24 B: fingerprints
    uint32_t addr_lo[kSlots];  // 24 B: address bits 0..31
    uint16_t addr_hi[kSlots];  // 12 B: address bits 32..47
    uint32_t overflow;         //  4 B: first overflow node; 0 = none

    uint64_t address(int i) const {
      return (uint64_t{addr_hi[i]} << 32) | addr_lo[i];
    }
    void Set(int i, uint32_t f, uint64_t a) {
      fp[i] = f;
      addr_lo[i] = static_cast<uint32_t>(a);
      addr_hi[i] = static_cast<uint16_t>(a >> 32);
    }
  };
  static_assert(sizeof(Bucket) == 64, "a bucket is one cache line");

  // One entry that did not fit in its bucket.
  struct Node {
    uint32_t fp;       // 4 B
    uint32_t addr_lo;  // 4 B
    uint16_t addr_hi;  // 2 B
    uint16_t unused;   // 2 B
    uint32_t next;     // 4 B: next node of the chain; 0 = end

    uint64_t address() const { return (uint64_t{addr_hi} << 32) | addr_lo; }
    void Set(uint32_t f, uint64_t a) {
      fp = f;
      addr_lo = static_cast<uint32_t>(a);
      addr_hi = static_cast<uint16_t>(a >> 32);
    }
  };
  static_assert(sizeof(Node) == 16);

  // Where an entry lives: a bucket slot or an overflow node. Valid until
  // the next Insert() or Erase().
  struct Position {
    Bucket* bucket = nullptr;
    int slot = 0;
    Node* node = nullptr;
    uint64_t address = 0;
    bool found() const { return bucket != nullptr || node != nullptr; }
  };

  HashIndex();
  ~HashIndex();
  // Back to the empty state a new index has.
  void Clear();
  HashIndex(const HashIndex&) = delete;
  HashIndex& operator=(const HashIndex&) = delete;

  // Fingerprint of a 64-bit key hash.
  static uint32_t Fingerprint(uint64_t hash) {
    return static_cast<uint32_t>(hash >> 32);
  }

  // Finds the entry of a key: calls matches(address) for each entry whose
  // fingerprint is `fp`, newest insertion order not guaranteed, and returns
  // the first for which it is true.
  template <typename Match>
  Position Find(uint32_t fp, Match&& matches) {
    Bucket* b = Home(fp);
    for (int i = 0; i < kSlots; ++i) {
      if (b->fp[i] != fp) continue;
      const uint64_t a = b->address(i);
      if (a != 0 && matches(a)) return Position{b, i, nullptr, a};
    }
    for (uint32_t ref = b->overflow; ref != 0;) {
      Node* n = NodeAt(ref);
      if (n->fp == fp) {
        const uint64_t a = n->address();
        if (a != 0 && matches(a)) return Position{nullptr, 0, n, a};
      }
      ref = n->next;
    }
    return Position{};
  }

  // Starts loading the bucket `fp` lives in, to overlap cache misses.
  void Prefetch(uint32_t fp) const { __builtin_prefetch(Home(fp)); }

  // A lookup of `fp` taken one cache line at a time, so that a caller can
  // interleave many and overlap their misses (Partition's prefetch).
  // ProbeBucket looks at fp's bucket: it returns the address of the first
  // slot with fingerprint `fp`, or 0 and sets *next to the bucket's first
  // overflow node (0: none), whose load it starts.
  uint64_t ProbeBucket(uint32_t fp, uint32_t* next) const {
    const Bucket* b = Home(fp);
    for (int i = 0; i < kSlots; ++i) {
      if (b->fp[i] != fp) continue;
      const uint64_t a = b->address(i);
      if (a != 0) return a;
    }
    *next = b->overflow;
    if (*next != 0) __builtin_prefetch(NodeAt(*next));
    return 0;
  }
  // ProbeNode looks at overflow node *next: its address if its fingerprint
  // is `fp`, or 0 with *next moved on to the following node (0: the chain
  // ends), whose load it starts.
  uint64_t ProbeNode(uint32_t fp, uint32_t* next) const {
    const Node* n = NodeAt(*next);
    if (n->fp == fp && n->address() != 0) return n->address();
    *next = n->next;
    if (*next != 0) __builtin_prefetch(NodeAt(*next));
    return 0;
  }

  // Points a found entry at a new address (non-zero).
  void Update(const Position& pos, uint64_t address) {
    if (pos.node != nullptr) {
      pos.node->Set(pos.node->fp, address);
    } else {
      pos.bucket->Set(pos.slot, pos.bucket->fp[pos.slot], address);
    }
  }
  // Adds an entry for a key known to be absent. May split one bucket.
  void Insert(uint32_t fp, uint64_t address);
  // Removes a found entry.
  void Erase(const Position& pos);

  // Finds the entry with exactly this fingerprint and address (no key
  // comparison needed) and points it at `new_address`, or removes it when
  // `new_address` is 0. Returns false if there is no such entry.
  bool ReplaceExact(uint32_t fp, uint64_t old_address, uint64_t new_address);

  // Calls f(fp, address) for every entry, in no particular order.
  template <typename F>
  void ForEach(F&& f) const {
    for (uint64_t i = 0; i < num_buckets_; ++i) {
      const Bucket* b = BucketAt(i);
      for (int s = 0; s < kSlots; ++s) {
        if (b->address(s) != 0) f(b->fp[s], b->address(s));
      }
      for (uint32_t ref = b->overflow; ref != 0; ref = NodeAt(ref)->next) {
        const Node* n = NodeAt(ref);
        if (n->address() != 0) f(n->fp, n->address());
      }
    }
  }

  // Appends (fp, address) of every entry of buckets [first, last) (slots
  // and overflow chains) whose address is in [lo, hi). Walking every
  // bucket in increasing order in several calls, with inserts and splits
  // in between, meets every entry that was in the index at the first call
  // and is still there, because a split only moves entries to a bucket
  // with a higher number than the one split.
  void EntriesIn(uint64_t first, uint64_t last, uint64_t lo, uint64_t hi,
                 std::vector<std::pair<uint32_t, uint64_t>>* out) const {
    last = std::min(last, num_buckets_);
    for (uint64_t i = first; i < last; ++i) {
      const Bucket* b = BucketAt(i);
      for (int s = 0; s < kSlots; ++s) {
        const uint64_t a = b->address(s);
        if (a >= lo && a < hi) out->emplace_back(b->fp[s], a);
      }
      for (uint32_t ref = b->overflow; ref != 0; ref = NodeAt(ref)->next) {
        const Node* n = NodeAt(ref);
        const uint64_t a = n->address();
        if (a >= lo && a < hi) out->emplace_back(n->fp, a);
      }
    }
  }
  // Bytes a walk over every bucket and overflow node reads.
  uint64_t WalkBytes() const {
    return num_buckets_ * sizeof(Bucket) + num_overflow_nodes() * sizeof(Node);
  }

  // ---- Checkpoint images (docs/format/checkpoint.md) ----
  // The index's shape; with the image bytes it is the whole state.
  struct Geometry {
    uint64_t count = 0;        // entries
    uint64_t num_buckets = 0;  // 2^level + split
    uint64_t split = 0;
    uint64_t nodes_used = 0;   // overflow nodes ever handed out
    uint64_t free_nodes = 0;   // of those, on the free list
    uint32_t level = 0;
  };
  Geometry geometry() const;
  // Bytes of the image: num_buckets 64-byte buckets, then nodes_used
  // 16-byte overflow nodes, then free_nodes 4-byte node references, all in
  // this machine's (little-endian) memory layout.
  uint64_t ImageSize() const;
  // Writes the image to out[0, ImageSize()).
  void CopyImage(char* out) const;
  // Replaces the contents with an image CopyImage wrote under `g`.
  // DATA_LOSS if the image does not fit the geometry, references nodes that
  // do not exist, or holds an address >= `address_limit`; the index is then
  // left as it was. In one pass over the image, chunk by chunk while it is
  // in cache: extends *crc (if given) over the image bytes, copies them and
  // checks them, so a large image is read from memory once.
  // DATA_LOSS unless `g` is a consistent geometry with an image of
  // `image_size` bytes (LoadImage checks this first, before reading).
  static absl::Status CheckGeometry(const Geometry& g, uint64_t image_size);
  absl::Status LoadImage(const Geometry& g, absl::string_view image,
                         uint64_t address_limit = UINT64_MAX, uint32_t* crc = nullptr);

  uint64_t size() const { return count_; }
  uint64_t num_buckets() const { return num_buckets_; }
  uint64_t num_overflow_nodes() const {
    return nodes_used_ - node_free_.size();
  }
  // Bytes of heap this index holds (buckets, overflow pool, directories).
  uint64_t MemoryBytes() const;
  // Entries moved by splits so far; a test bound on incremental growth.
  uint64_t entries_moved() const { return entries_moved_; }

 private:
  // Bucket chunks are 2 MiB, aligned, so the kernel can back each with one
  // huge page: random lookups then miss the TLB far less (and loading a
  // checkpoint faults in 512x fewer pages). Overflow nodes are fewer and
  // looked at less often: 1 MiB chunks of small pages.
  static constexpr int kChunkBits = 15;  // 32 Ki buckets = 2 MiB per chunk
  static constexpr uint64_t kChunkBuckets = uint64_t{1} << kChunkBits;
  static constexpr int kNodeChunkBits = 16;  // 64 Ki nodes = 1 MiB per chunk
  static constexpr uint64_t kChunkNodes = uint64_t{1} << kNodeChunkBits;
  static constexpr size_t kBucketChunkBytes = size_t{2} << 20;
  static constexpr size_t kNodeChunkBytes = size_t{1} << 20;
  static constexpr int kInitialLevel = 4;
  static constexpr int kMaxLevel = 32;  // all fingerprint bits in use

  template <size_t kBytes>
  struct ChunkDeleter {
    void operator()(void* p) const { FreeChunk(p, kBytes); }
  };
  using Chunk = std::unique_ptr<Bucket[], ChunkDeleter<kBucketChunkBytes>>;
  using NodeChunk = std::unique_ptr<Node[], ChunkDeleter<kNodeChunkBytes>>;

  Bucket* BucketAt(uint64_t i) const {
    return &chunks_[i >> kChunkBits][i & (kChunkBuckets - 1)];
  }
  Node* NodeAt(uint32_t ref) const {
    const uint64_t i = ref - 1;
    return &node_chunks_[i >> kNodeChunkBits][i & (kChunkNodes - 1)];
  }
  uint64_t HomeIndex(uint32_t fp) const {
    uint64_t b = fp & low_mask_;
    if (b < split_) b = fp & high_mask_;
    return b;
  }
  Bucket* Home(uint32_t fp) const { return BucketAt(HomeIndex(fp)); }

  // A zeroed chunk of `bytes` (a power of two), aligned to its size,
  // mapped and populated up front: under virtualisation a first touch per
  // page costs microseconds, which would otherwise land on whichever
  // request or restart touches it first. `huge`: ask for huge pages.
  static void* AllocChunk(size_t bytes, bool huge);
  static void FreeChunk(void* p, size_t bytes);
  static Bucket* NewBucketChunk() {
    return static_cast<Bucket*>(AllocChunk(kBucketChunkBytes, /*huge=*/true));
  }
  static Node* NewNodeChunk() {
    return static_cast<Node*>(AllocChunk(kNodeChunkBytes, /*huge=*/false));
  }
  uint32_t AllocNode();
  // Places an entry in bucket `index`'s chain without touching count_.
  void Place(uint64_t index, uint32_t fp, uint64_t address);
  void SplitOne();

  std::vector<Chunk> chunks_;
  std::vector<NodeChunk> node_chunks_;
  std::vector<uint32_t> node_free_;
  uint64_t nodes_used_ = 0;  // nodes ever handed out (refs 1..nodes_used_)
  uint64_t num_buckets_ = 0;
  int level_ = kInitialLevel;
  uint64_t split_ = 0;  // next bucket to split at this level
  uint64_t low_mask_ = 0;
  uint64_t high_mask_ = 0;
  uint64_t count_ = 0;
  uint64_t entries_moved_ = 0;
  std::vector<std::pair<uint32_t, uint64_t>> scratch_;
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_HASH_INDEX_H_
