// An RPC answered by several worker parts (batches split by partition,
// Admin calls sent to every worker): the last part to finish answers with
// the first error, if any, and frees the call.
#ifndef SEGKV_SERVER_FAN_OUT_H_
#define SEGKV_SERVER_FAN_OUT_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/kv_service.h"

namespace segkv::server {

class FanOutCall {
 public:
  FanOutCall(grpc::ServerUnaryReactor* reactor, absl::Time deadline)
      : reactor(reactor), deadline(deadline) {}
  virtual ~FanOutCall() = default;

  // A part is done (any thread). The last one answers and deletes `this`.
  void PartDone(const absl::Status& s);

  grpc::ServerUnaryReactor* const reactor;
  const absl::Time deadline;

 protected:
  // Runs once, on the thread of the last part, before an OK answer.
  virtual void BeforeFinish() {}

 private:
  template <typename Part>
  friend grpc::ServerUnaryReactor* SubmitParts(Frontend*, FanOutCall*,
                                               std::vector<std::unique_ptr<Part>>&);

  std::atomic<int> pending_{1};  // the submitter holds one until all are sent
  absl::Mutex mu_;               // only taken when a part fails
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

// Hands parts[p] to worker p (null parts are skipped); a part whose queue
// is full is aborted with RESOURCE_EXHAUSTED. Returns the call's reactor;
// `call` may be gone by then.
template <typename Part>
grpc::ServerUnaryReactor* SubmitParts(Frontend* fe, FanOutCall* call,
                                      std::vector<std::unique_ptr<Part>>& parts) {
  int n = 0;
  for (const auto& part : parts) n += part != nullptr;
  call->pending_.fetch_add(n, std::memory_order_relaxed);
  grpc::ServerUnaryReactor* reactor = call->reactor;
  for (uint32_t p = 0; p < parts.size(); ++p) {
    if (parts[p] == nullptr) continue;
    Part* raw = parts[p].release();
    if (!fe->worker(p)->Submit(raw)) {
      raw->Abort(absl::ResourceExhaustedError(
          absl::StrCat("worker queue of partition ", p, " is full")));
    }
  }
  call->PartDone(absl::OkStatus());  // the submitter's own count
  return reactor;
}

}  // namespace segkv::server

#endif  // SEGKV_SERVER_FAN_OUT_H_
