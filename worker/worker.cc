#include "worker/worker.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>

#include "absl/synchronization/notification.h"
#include "glog/logging.h"

namespace segkv::worker {

namespace {

WorkerOptions WithWake(WorkerOptions options, EventCount* wakeup) {
  // A finished background checkpoint write wakes an idle worker to record it.
  options.partition.wake = [wakeup] { wakeup->Notify(); };
  return options;
}

}  // namespace

Worker::Worker(WorkerOptions options)
    : options_(WithWake(std::move(options), &wakeup_)),
      queue_(options_.queue_capacity) {}

Worker::~Worker() { Stop(); }

absl::Status Worker::Start() {
  absl::Notification opened;
  absl::Status open_status;
  thread_ = std::thread([this, &opened, &open_status] {
    if (options_.cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(options_.cpu, &set);
      if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
        LOG(WARNING) << "worker " << id() << ": cannot pin to CPU " << options_.cpu;
      }
    }
    auto p = Partition::Open(options_.partition);
    if (!p.ok()) {
      open_status = p.status();
      opened.Notify();
      return;
    }
    partition_ = std::move(*p);
    opened.Notify();
    Loop();
  });
  opened.WaitForNotification();
  if (!open_status.ok()) {
    thread_.join();
    return open_status;
  }
  return absl::OkStatus();
}

bool Worker::Submit(Request* r) {
  if (!queue_.TryPush(r)) return false;
  wakeup_.Notify();
  return true;
}

void Worker::RequestStop() {
  if (!thread_.joinable()) return;
  // The loop sees stopping_ only after its queue is empty; wake it however
  // it waits.
  stopping_.store(true, std::memory_order_seq_cst);
  wakeup_.Notify();
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  RequestStop();
  thread_.join();
}

void Worker::Loop() {
  // An idle worker wakes this often to run interval syncs.
  const absl::Duration tick = std::clamp(options_.partition.sync_interval,
                                         absl::Milliseconds(1), absl::Milliseconds(100));
  for (;;) {
    batch_.clear();
    Request* r;
    while (batch_.size() < options_.max_drain && queue_.TryPop(&r)) {
      batch_.push_back(r);
    }
    if (!batch_.empty()) RunBatch();
    // An interval sync is due whether or not the queue ever empties.
    if (absl::Status s = partition_->Tick(); !s.ok()) {
      LOG_EVERY_N(ERROR, 100) << "partition " << id() << " interval sync: " << s;
    }
    if (!parked_.empty()) {
      std::erase_if(parked_, [this](Request* p) { return p->Poll(*partition_); });
    }
    if (!batch_.empty()) continue;
    if (stopping_.load(std::memory_order_seq_cst)) break;
    // Compaction steps and checkpoint stages use the idle time. Whatever
    // can Notify() is looked at after Prepare(), so a checkpoint's
    // background thread that finishes just now still wakes the loop.
    const uint32_t key = wakeup_.Prepare();
    if (queue_.ApproxSize() > 0 || stopping_.load(std::memory_order_seq_cst) ||
        partition_->HasBackgroundWork()) {
      wakeup_.Cancel();
      continue;
    }
    wakeup_.Wait(key, tick);
  }
  for (Request* p : parked_) p->Abort(absl::UnavailableError("worker is stopping"));
  parked_.clear();
  close_status_ = partition_->Close();
  if (!close_status_.ok()) {
    LOG(ERROR) << "closing partition " << id() << ": " << close_status_;
  }
}

void Worker::RunBatch() {
  absl::Time now = absl::Now();
  writes_.clear();
  ops_.clear();
  read_keys_.clear();
  for (Request* r : batch_) {
    if (!r->read_key.empty()) read_keys_.push_back(r->read_key);
  }
  for (size_t i = 0; i < read_keys_.size(); i += 64) {
    partition_->Prefetch(std::span<const absl::string_view>(read_keys_).subspan(
        i, std::min<size_t>(64, read_keys_.size() - i)));
  }
  for (Request* r : batch_) {
    if (r->deadline < now) {
      r->Abort(absl::DeadlineExceededError(
          "deadline passed before the worker reached the request"));
    } else if (r->is_write()) {
      writes_.push_back(r);
      ops_.insert(ops_.end(), r->ops.begin(), r->ops.end());
    } else if (r->polls) {
      r->Run(*partition_);
      parked_.push_back(r);
      now = absl::Now();
    } else {
      r->Run(*partition_);
      // A read can take a while (a Scan reads up to --scan_max_bytes): the
      // requests after it are checked against the time it finished.
      now = absl::Now();
    }
  }
  if (writes_.empty()) return;
  // One ApplyBatch for every write of the batch: one group commit.
  partition_->ApplyBatch(ops_, &results_).IgnoreError();  // per-op results
  size_t k = 0;
  for (Request* w : writes_) {
    for (size_t i = 0; i < w->ops.size(); ++i) w->results[i] = std::move(results_[k++]);
    w->Committed();
  }
}

}  // namespace segkv::worker
