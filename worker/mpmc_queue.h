// A bounded lock-free multi-producer multi-consumer queue (Dmitry Vyukov's
// array queue): each slot carries a sequence number that says whether it is
// free for the producer of a given turn or full for the consumer of it. One
// compare-and-swap per push or pop, no locks, no allocation after
// construction.
//
// segkv uses it frontend -> worker: gRPC threads push, the worker pops. A
// full queue makes TryPush() return false at once, which the frontend turns
// into RESOURCE_EXHAUSTED.
#ifndef SEGKV_WORKER_MPMC_QUEUE_H_
#define SEGKV_WORKER_MPMC_QUEUE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace segkv::worker {

template <typename T>
class MpmcQueue {
 public:
  // `capacity` is rounded up to a power of two (at least 2).
  explicit MpmcQueue(size_t capacity) {
    size_t cap = 2;
    while (cap < capacity) cap <<= 1;
    mask_ = cap - 1;
    slots_ = std::make_unique<Slot[]>(cap);
    for (size_t i = 0; i < cap; ++i) {
      slots_[i].seq.store(i, std::memory_order_relaxed);
    }
  }
  MpmcQueue(const MpmcQueue&) = delete;
  MpmcQueue& operator=(const MpmcQueue&) = delete;

  size_t capacity() const { return mask_ + 1; }

  // Adds `v` unless the queue is full. Any thread.
  bool TryPush(T v) {
    size_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      Slot& slot = slots_[pos & mask_];
      const size_t seq = slot.seq.load(std::memory_order_acquire);
      const intptr_t diff = static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          slot.value = std::move(v);
          slot.seq.store(pos + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;  // full: the slot still holds the previous lap's value
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
  }

  // Takes the oldest element if there is one. Any thread.
  bool TryPop(T* out) {
    size_t pos = head_.load(std::memory_order_relaxed);
    for (;;) {
      Slot& slot = slots_[pos & mask_];
      const size_t seq = slot.seq.load(std::memory_order_acquire);
      const intptr_t diff =
          static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos + 1);
      if (diff == 0) {
        if (head_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          *out = std::move(slot.value);
          slot.seq.store(pos + mask_ + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;  // empty
      } else {
        pos = head_.load(std::memory_order_relaxed);
      }
    }
  }

  // Elements in the queue, approximately (exact when no push or pop runs).
  size_t ApproxSize() const {
    const size_t tail = tail_.load(std::memory_order_relaxed);
    const size_t head = head_.load(std::memory_order_relaxed);
    return tail >= head ? tail - head : 0;
  }

 private:
  struct alignas(64) Slot {
    std::atomic<size_t> seq;
    T value;
  };

  std::unique_ptr<Slot[]> slots_;
  size_t mask_ = 0;
  alignas(64) std::atomic<size_t> tail_{0};  // next push position
  alignas(64) std::atomic<size_t> head_{0};  // next pop position
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_MPMC_QUEUE_H_
