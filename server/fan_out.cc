#include "server/fan_out.h"

#include "server/grpc_status.h"

namespace segkv::server {

void FanOutCall::PartDone(const absl::Status& s) {
  if (!s.ok()) {
    absl::MutexLock l(&mu_);
    if (error_.ok()) error_ = s;
  }
  if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  absl::Status final_status;
  {
    absl::MutexLock l(&mu_);
    final_status = error_;
  }
  if (final_status.ok()) BeforeFinish();
  reactor->Finish(ToGrpc(final_status));
  delete this;
}

}  // namespace segkv::server
