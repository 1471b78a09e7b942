#include "worker/hash_index.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace segkv::worker {

void HashIndex::ChunkDeleter::operator()(void* p) const { std::free(p); }

void* HashIndex::AllocZeroed(size_t bytes) {
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return p;
}

HashIndex::HashIndex() {
  num_buckets_ = uint64_t{1} << kInitialLevel;
  chunks_.emplace_back(static_cast<Bucket*>(AllocZeroed(kChunkBuckets * sizeof(Bucket))));
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
    node_chunks_.emplace_back(static_cast<Node*>(AllocZeroed(kChunkNodes * sizeof(Node))));
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
    chunks_.emplace_back(static_cast<Bucket*>(AllocZeroed(kChunkBuckets * sizeof(Bucket))));
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

}  // namespace segkv::worker
