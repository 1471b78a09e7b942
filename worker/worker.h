// A worker: one thread that owns one partition alone (share-nothing). The
// gRPC frontend hands it Requests through a bounded lock-free queue; the
// thread drains the queue in batches, runs reads as it meets them, applies
// all the batch's writes with one Partition::ApplyBatch (one fdatasync under
// `always`: group commit), then completes every request.
//
// Threading: Submit() and queue_depth() from any thread; everything else
// from the thread that owns the Worker. The partition is touched only by the
// worker thread, so nothing on the request path takes a lock.
#ifndef SEGKV_WORKER_WORKER_H_
#define SEGKV_WORKER_WORKER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/event_count.h"
#include "worker/mpmc_queue.h"
#include "worker/partition.h"

namespace segkv::worker {

// Work for a worker. The submitter allocates it. Once submitted, exactly one
// of Run(), Committed() or Abort() is called on the worker thread, and that
// call owns the object from then on (it typically finishes an RPC and
// deletes it); a polling request (`polls`) gets Run() and then Poll() calls
// until one returns true, or Abort(). A submitter that cannot submit (a full
// queue) may Abort() it itself, on its own thread.
class Request {
 public:
  virtual ~Request() = default;

  // A write request sets `ops` (and `results`, with room for as many).
  std::span<const WriteOp> ops;
  WriteResult* results = nullptr;
  // A read sets the key it will look up, so the worker can prefetch it
  // together with the rest of the batch.
  absl::string_view read_key;
  // Not started after this: Abort(DEADLINE_EXCEEDED) instead.
  absl::Time deadline = absl::InfiniteFuture();
  // Work that outlives one batch (a checkpoint, a compaction pass): after
  // Run() the worker calls Poll() after each of its Tick()s until it
  // returns true. Such a request must not delete itself in Run(); it
  // finishes in the Poll() that returns true, or in Abort() if the worker
  // stops first.
  bool polls = false;

  bool is_write() const { return !ops.empty(); }

  // Reads and other non-write work, with the worker's partition.
  virtual void Run(Partition& partition) {}
  virtual bool Poll(Partition& partition) { return true; }
  // Writes: the ops were applied (or failed: see each result's status).
  virtual void Committed() {}
  // The request will not run: deadline passed.
  virtual void Abort(const absl::Status& status) = 0;
};

struct WorkerOptions {
  PartitionOptions partition;
  size_t queue_capacity = 4096;
  int cpu = -1;  // pin the thread to this CPU; -1 = no pinning
  size_t max_drain = 1024;  // requests taken from the queue per batch
};

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();  // Stop()s.
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts the thread and waits until it has opened (recovered) the
  // partition. On error the thread has exited and the worker is unusable.
  absl::Status Start();
  // Queues `r`. Returns false, without taking it, if the queue is full.
  bool Submit(Request* r);
  // Runs what is queued, closes (syncs) the partition, joins the thread.
  // Call after no more Submit() can happen.
  void Stop();
  // Asks the thread to do what Stop() waits for, without waiting: calling
  // it on every worker before Stop() closes the partitions in parallel.
  void RequestStop();

  size_t queue_depth() const { return queue_.ApproxSize(); }
  uint32_t id() const { return options_.partition.partition_id; }
  // After Stop(): how closing the partition went (its final sync, the
  // checkpoint at close). Not OK means writes acknowledged under
  // `interval` or `none` may not be durable.
  const absl::Status& close_status() const { return close_status_; }

 private:
  void Loop();
  void RunBatch();

  const WorkerOptions options_;
  MpmcQueue<Request*> queue_;
  EventCount wakeup_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  // Only the worker thread touches these.
  std::unique_ptr<Partition> partition_;
  std::vector<Request*> batch_;
  std::vector<Request*> writes_;
  std::vector<WriteOp> ops_;
  std::vector<WriteResult> results_;
  std::vector<absl::string_view> read_keys_;
  std::vector<Request*> parked_;  // polling requests
  absl::Status close_status_;      // written by the thread before it ends
};

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_WORKER_H_
