// Lets a consumer sleep until producers signal, without a lock on the
// producer's path: producers only touch an atomic unless a consumer is
// actually asleep, in which case they also make one futex wake call.
//
// Consumer:                        Producer:
//   uint32_t key = ec.Prepare();     queue.TryPush(x);
//   if (!queue.empty()) {            ec.Notify();
//     ec.Cancel(); ...
//   } else {
//     ec.Wait(key, timeout);
//   }
// Prepare() before the final emptiness check is what makes a Notify()
// between that check and Wait() impossible to miss.
#ifndef SEGKV_WORKER_EVENT_COUNT_H_
#define SEGKV_WORKER_EVENT_COUNT_H_

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"

namespace segkv::worker {

class EventCount {
 public:
  uint32_t Prepare() {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t key = epoch_.load(std::memory_order_seq_cst);
    // Orders the caller's next (possibly relaxed) look at the queue after
    // the increment, pairing with the fence in Notify().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return key;
  }
  void Cancel() { waiters_.fetch_sub(1, std::memory_order_seq_cst); }

  // Sleeps until Notify() moves the epoch past `key` or `timeout` passes.
  void Wait(uint32_t key, absl::Duration timeout) {
    struct timespec ts = absl::ToTimespec(timeout);
    if (epoch_.load(std::memory_order_seq_cst) == key) {
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&epoch_), FUTEX_WAIT_PRIVATE,
              key, &ts, nullptr, 0);
    }
    waiters_.fetch_sub(1, std::memory_order_seq_cst);
  }

  void Notify() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) == 0) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&epoch_), FUTEX_WAKE_PRIVATE,
            1, nullptr, nullptr, 0);
  }

 private:
  static_assert(sizeof(std::atomic<uint32_t>) == 4 &&
                    std::atomic<uint32_t>::is_always_lock_free,
                "the futex word must be a plain 32-bit integer");
  std::atomic<uint32_t> epoch_{0};
  std::atomic<uint32_t> waiters_{0};
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_EVENT_COUNT_H_
