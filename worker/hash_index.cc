#include "worker/hash_index.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace segkv::worker {

void HashIndex::ChunkDeleter::operator()(Bucket* p) const { std::free(p); }

HashIndex::Chunk HashIndex::NewChunk() {
  void* p = std::aligned_alloc(64, kChunkBuckets * sizeof(Bucket));
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, kChunkBuckets * sizeof(Bucket));
  return Chunk(static_cast<Bucket*>(p));
}

HashIndex::HashIndex() {
  num_buckets_ = uint64_t{1} << kInitialLevel;
  chunks_.push_back(NewChunk());
  low_mask_ = (uint64_t{1} << level_) - 1;
  high_mask_ = (uint64_t{1} << (level_ + 1)) - 1;
}

HashIndex::~HashIndex() = default;

uint64_t HashIndex::MemoryBytes() const {
  return (chunks_.size() + overflow_chunks_.size()) * kChunkBuckets *
             sizeof(Bucket) +
         (chunks_.capacity() + overflow_chunks_.capacity()) * sizeof(Chunk) +
         overflow_free_.capacity() * sizeof(uint32_t) +
         scratch_.capacity() * sizeof(scratch_[0]);
}

uint32_t HashIndex::AllocOverflow() {
  if (!overflow_free_.empty()) {
    uint32_t ref = overflow_free_.back();
    overflow_free_.pop_back();
    return ref;
  }
  if ((overflow_used_ & (kChunkBuckets - 1)) == 0) {
    overflow_chunks_.push_back(NewChunk());
  }
  return static_cast<uint32_t>(++overflow_used_);
}

void HashIndex::Place(uint64_t index, uint32_t fp, uint64_t address) {
  Bucket* b = BucketAt(index);
  for (;;) {
    for (int i = 0; i < kSlots; ++i) {
      if (b->address(i) == 0) {
        b->Set(i, fp, address);
        return;
      }
    }
    if (b->overflow == 0) {
      const uint32_t ref = AllocOverflow();
      b->overflow = ref;  // AllocOverflow never moves existing buckets
      b = OverflowBucket(ref);
      b->Set(0, fp, address);
      return;
    }
    b = OverflowBucket(b->overflow);
  }
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
  pos.bucket->Set(pos.slot, 0, 0);
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
  if ((to >> kChunkBits) >= chunks_.size()) chunks_.push_back(NewChunk());

  // Take every entry out of the chain being split, freeing its overflow
  // buckets, then place each by fingerprint bit `level_`.
  scratch_.clear();
  Bucket* b = BucketAt(from);
  uint32_t next = b->overflow;
  for (int i = 0; i < kSlots; ++i) {
    if (b->address(i) != 0) scratch_.emplace_back(b->fp[i], b->address(i));
  }
  std::memset(static_cast<void*>(b), 0, sizeof(Bucket));
  while (next != 0) {
    Bucket* o = OverflowBucket(next);
    for (int i = 0; i < kSlots; ++i) {
      if (o->address(i) != 0) scratch_.emplace_back(o->fp[i], o->address(i));
    }
    overflow_free_.push_back(next);
    next = o->overflow;
    std::memset(static_cast<void*>(o), 0, sizeof(Bucket));
  }

  ++num_buckets_;
  if (++split_ == (uint64_t{1} << level_)) {
    ++level_;
    split_ = 0;
    low_mask_ = (uint64_t{1} << level_) - 1;
    high_mask_ = (uint64_t{1} << (level_ + 1)) - 1;
  }
  const uint32_t bit = uint32_t{1} << (to == from ? 0 : __builtin_ctzll(to - from));
  for (const auto& [fp, address] : scratch_) {
    Place((fp & bit) ? to : from, fp, address);
  }
  entries_moved_ += scratch_.size();
}

}  // namespace segkv::worker
