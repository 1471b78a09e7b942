#include "worker/hash_index.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include <sys/mman.h>

#include "absl/strings/str_cat.h"
#include "worker/crc32c.h"

namespace segkv::worker {

void HashIndex::FreeChunk(void* p, size_t bytes) { ::munmap(p, bytes); }

void* HashIndex::AllocChunk(size_t bytes, bool huge) {
  static_assert(kChunkBuckets * sizeof(Bucket) == kBucketChunkBytes);
  static_assert(kChunkNodes * sizeof(Node) == kNodeChunkBytes);
  // Map twice the size and keep the aligned middle, so a 2 MiB chunk can
  // be one huge page where transparent huge pages are enabled (even in
  // "madvise" mode).
  const size_t span = 2 * bytes;
  void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + bytes - 1) & ~(uintptr_t{bytes} - 1);
  if (aligned > start) ::munmap(raw, aligned - start);
  if (aligned + bytes < start + span) {
    ::munmap(reinterpret_cast<void*>(aligned + bytes), start + span - aligned - bytes);
  }
  void* p = reinterpret_cast<void*>(aligned);
  if (huge) ::madvise(p, bytes, MADV_HUGEPAGE);  // advice: failure is harmless
  // Fault it in now, not on first use.
  if (::madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
    std::memset(p, 0, bytes);  // kernels before 5.14
  }
  return p;  // anonymous memory is zero
}

HashIndex::HashIndex() { Clear(); }

void HashIndex::Clear() {
  chunks_.clear();
  node_chunks_.clear();
  node_free_.clear();
  nodes_used_ = 0;
  count_ = 0;
  level_ = kInitialLevel;
  split_ = 0;
  num_buckets_ = uint64_t{1} << kInitialLevel;
  chunks_.emplace_back(NewBucketChunk());
  low_mask_ = (uint64_t{1} << level_) - 1;
  high_mask_ = (uint64_t{1} << (level_ + 1)) - 1;
}

HashIndex::~HashIndex() = default;

uint64_t HashIndex::MemoryBytes() const {
  return chunks_.size() * kChunkBuckets * sizeof(Bucket) +
         node_chunks_.size() * kChunkNodes * sizeof(Node) +
         chunks_.capacity() * sizeof(Chunk) +
         node_chunks_.capacity() * sizeof(NodeChunk) +
         node_free_.capacity() * sizeof(uint32_t) +
         scratch_.capacity() * sizeof(scratch_[0]);
}

uint32_t HashIndex::AllocNode() {
  if (!node_free_.empty()) {
    uint32_t ref = node_free_.back();
    node_free_.pop_back();
    return ref;
  }
  if ((nodes_used_ & (kChunkNodes - 1)) == 0) {
    node_chunks_.emplace_back(NewNodeChunk());
  }
  return static_cast<uint32_t>(++nodes_used_);
}

void HashIndex::Place(uint64_t index, uint32_t fp, uint64_t address) {
  Bucket* b = BucketAt(index);
  for (int i = 0; i < kSlots; ++i) {
    if (b->address(i) == 0) {
      b->Set(i, fp, address);
      return;
    }
  }
  for (uint32_t ref = b->overflow; ref != 0;) {
    Node* n = NodeAt(ref);
    if (n->address() == 0) {
      n->Set(fp, address);
      return;
    }
    ref = n->next;
  }
  const uint32_t ref = AllocNode();
  Node* n = NodeAt(ref);
  n->Set(fp, address);
  n->next = b->overflow;
  b->overflow = ref;
}

void HashIndex::Insert(uint32_t fp, uint64_t address) {
  Place(HomeIndex(fp), fp, address);
  ++count_;
  if (level_ < kMaxLevel &&
      static_cast<double>(count_) >
          kMaxLoad * static_cast<double>(num_buckets_ * kSlots)) {
    SplitOne();
  }
}

void HashIndex::Erase(const Position& pos) {
  if (pos.node != nullptr) {
    pos.node->Set(0, 0);  // stays in its chain for reuse until the next split
  } else {
    pos.bucket->Set(pos.slot, 0, 0);
  }
  --count_;
}

bool HashIndex::ReplaceExact(uint32_t fp, uint64_t old_address,
                             uint64_t new_address) {
  Position pos = Find(fp, [&](uint64_t a) { return a == old_address; });
  if (!pos.found()) return false;
  if (new_address == 0) {
    Erase(pos);
  } else {
    Update(pos, new_address);
  }
  return true;
}

void HashIndex::SplitOne() {
  const uint64_t from = split_;
  const uint64_t to = split_ + (uint64_t{1} << level_);
  const uint32_t bit = uint32_t{1} << level_;
  if ((to >> kChunkBits) >= chunks_.size()) {
    chunks_.emplace_back(NewBucketChunk());
  }

  // Take every entry out of the chain being split, freeing its nodes, then
  // place each by fingerprint bit `level_`.
  scratch_.clear();
  Bucket* b = BucketAt(from);
  for (int i = 0; i < kSlots; ++i) {
    if (b->address(i) != 0) scratch_.emplace_back(b->fp[i], b->address(i));
  }
  for (uint32_t ref = b->overflow; ref != 0;) {
    Node* n = NodeAt(ref);
    if (n->address() != 0) scratch_.emplace_back(n->fp, n->address());
    node_free_.push_back(ref);
    ref = n->next;
    std::memset(static_cast<void*>(n), 0, sizeof(Node));
  }
  std::memset(static_cast<void*>(b), 0, sizeof(Bucket));

  ++num_buckets_;
  if (++split_ == (uint64_t{1} << level_)) {
    ++level_;
    split_ = 0;
    low_mask_ = (uint64_t{1} << level_) - 1;
    high_mask_ = (uint64_t{1} << (level_ + 1)) - 1;
  }
  for (const auto& [fp, address] : scratch_) {
    Place((fp & bit) ? to : from, fp, address);
  }
  entries_moved_ += scratch_.size();
}

HashIndex::Geometry HashIndex::geometry() const {
  Geometry g;
  g.count = count_;
  g.num_buckets = num_buckets_;
  g.split = split_;
  g.nodes_used = nodes_used_;
  g.free_nodes = node_free_.size();
  g.level = static_cast<uint32_t>(level_);
  return g;
}

uint64_t HashIndex::ImageSize() const {
  return num_buckets_ * sizeof(Bucket) + nodes_used_ * sizeof(Node) +
         node_free_.size() * sizeof(uint32_t);
}

void HashIndex::CopyImage(char* out) const {
  for (uint64_t i = 0; i < num_buckets_; i += kChunkBuckets) {
    const uint64_t n = std::min(kChunkBuckets, num_buckets_ - i);
    std::memcpy(out, BucketAt(i), n * sizeof(Bucket));
    out += n * sizeof(Bucket);
  }
  for (uint64_t i = 0; i < nodes_used_; i += kChunkNodes) {
    const uint64_t n = std::min(kChunkNodes, nodes_used_ - i);
    std::memcpy(out, NodeAt(static_cast<uint32_t>(i + 1)), n * sizeof(Node));
    out += n * sizeof(Node);
  }
  if (!node_free_.empty()) {
    std::memcpy(out, node_free_.data(), node_free_.size() * sizeof(uint32_t));
  }
}

absl::Status HashIndex::CheckGeometry(const Geometry& g, uint64_t image_size) {
  auto bad = [](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("index image: ", why));
  };
  if (g.level < kInitialLevel || g.level >= kMaxLevel ||
      g.split >= (uint64_t{1} << g.level) ||
      g.num_buckets != (uint64_t{1} << g.level) + g.split) {
    return bad("inconsistent bucket geometry");
  }
  if (g.nodes_used > UINT32_MAX || g.free_nodes > g.nodes_used) {
    return bad("inconsistent overflow node counts");
  }
  if (image_size != g.num_buckets * sizeof(Bucket) + g.nodes_used * sizeof(Node) +
                        g.free_nodes * sizeof(uint32_t)) {
    return bad("size does not match the geometry");
  }
  return absl::OkStatus();
}

absl::Status HashIndex::LoadImage(const Geometry& g, absl::string_view image,
                                  uint64_t address_limit, uint32_t* crc) {
  auto bad = [](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("index image: ", why));
  };
  if (absl::Status s = CheckGeometry(g, image.size()); !s.ok()) return s;
  const char* in = image.data();
  // CRC, then copy (the source is now in cache), then check the copy (now
  // in cache too), one chunk at a time.
  auto take = [&](void* dst, size_t n) {
    if (crc != nullptr) *crc = crc32c::Extend(*crc, in, n);
    std::memcpy(dst, in, n);
    in += n;
  };
  std::vector<Chunk> chunks;
  uint64_t count = 0;
  bool beyond = false;
  struct Chain {
    uint64_t bucket;
    uint32_t head;
  };
  std::vector<Chain> chains;  // buckets with an overflow chain
  for (uint64_t i = 0; i < g.num_buckets; i += kChunkBuckets) {
    chunks.emplace_back(NewBucketChunk());
    Bucket* chunk = chunks.back().get();
    const uint64_t n = std::min(kChunkBuckets, g.num_buckets - i);
    take(chunk, n * sizeof(Bucket));
    for (uint64_t j = 0; j < n; ++j) {
      const Bucket& b = chunk[j];
      for (int s = 0; s < kSlots; ++s) {
        const uint64_t a = b.address(s);
        count += a != 0;
        beyond |= a >= address_limit;
      }
      if (b.overflow != 0) chains.push_back(Chain{i + j, b.overflow});
    }
  }
  std::vector<NodeChunk> node_chunks;
  for (uint64_t i = 0; i < g.nodes_used; i += kChunkNodes) {
    node_chunks.emplace_back(NewNodeChunk());
    take(node_chunks.back().get(), std::min(kChunkNodes, g.nodes_used - i) * sizeof(Node));
  }
  std::vector<uint32_t> free(g.free_nodes);
  if (g.free_nodes > 0) take(free.data(), g.free_nodes * sizeof(uint32_t));
  // Every node must be on exactly one chain or on the free list, and every
  // chain must stay inside the node pool and end; count the entries while
  // walking them.
  std::vector<bool> owned(g.nodes_used + 1);
  for (uint32_t ref : free) {
    if (ref == 0 || ref > g.nodes_used) return bad("free list names a missing node");
    if (owned[ref]) return bad(absl::StrCat("free list names node ", ref, " twice"));
    owned[ref] = true;
  }
  auto node = [&](uint32_t ref) {
    const uint64_t i = ref - 1;
    return &node_chunks[i >> kNodeChunkBits][i & (kChunkNodes - 1)];
  };
  uint64_t chained = 0;
  // Chains are short and their nodes lie anywhere in the pool: walk them
  // 32 at a time, their first nodes' loads started together.
  for (size_t c = 0; c < chains.size(); ++c) {
    if (c % 32 == 0) {
      for (size_t k = c; k < std::min(c + 32, chains.size()); ++k) {
        if (chains[k].head <= g.nodes_used) __builtin_prefetch(node(chains[k].head));
      }
    }
    for (uint32_t ref = chains[c].head; ref != 0; ref = node(ref)->next) {
      if (ref > g.nodes_used || owned[ref]) {
        return bad(absl::StrCat("bucket ", chains[c].bucket, " has a broken overflow chain"));
      }
      owned[ref] = true;
      const uint64_t a = node(ref)->address();
      count += a != 0;
      beyond |= a >= address_limit;
      ++chained;
    }
  }
  if (count != g.count) return bad("entry count does not match the buckets");
  if (chained + g.free_nodes != g.nodes_used) {
    return bad("overflow nodes are neither chained nor free exactly once");
  }
  if (beyond) {
    return bad(absl::StrCat("an entry points at or past address ", address_limit));
  }
  chunks_ = std::move(chunks);
  if (chunks_.empty()) return bad("no buckets");
  node_chunks_ = std::move(node_chunks);
  node_free_ = std::move(free);
  nodes_used_ = g.nodes_used;
  num_buckets_ = g.num_buckets;
  level_ = static_cast<int>(g.level);
  split_ = g.split;
  low_mask_ = (uint64_t{1} << level_) - 1;
  high_mask_ = (uint64_t{1} << (level_ + 1)) - 1;
  count_ = g.count;
  return absl::OkStatus();
}

}  // namespace segkv::worker
