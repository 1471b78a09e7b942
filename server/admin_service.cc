#include "server/admin_service.h"

#include <functional>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/fan_out.h"
#include "server/grpc_status.h"
#include "worker/format.h"

namespace segkv::server {
namespace {

using worker::Partition;

// Runs `fn(partition, worker)` on every worker, then `finish()` once all
// are done, and answers with the first error if any.
class FanOut : public FanOutCall {
 public:
  using Fn = std::function<absl::Status(Partition&, worker::Worker&)>;

  static grpc::ServerUnaryReactor* Start(grpc::CallbackServerContext* ctx,
                                         Frontend* fe, Fn fn,
                                         std::function<void()> finish = nullptr) {
    if (absl::Status s = fe->CheckAccepting(); !s.ok()) {
      auto* reactor = ctx->DefaultReactor();
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
    auto* f = new FanOut(ctx, std::move(fn), std::move(finish));
    std::vector<std::unique_ptr<Part>> parts;
    for (uint32_t p = 0; p < fe->partitions(); ++p) {
      parts.push_back(std::make_unique<Part>(f, fe->worker(p)));
    }
    return SubmitParts(fe, f, parts);
  }

  class Part : public worker::Request {
   public:
    Part(FanOut* f, worker::Worker* w) : f_(f), w_(w) { deadline = f->deadline; }
    void Run(Partition& p) override {
      f_->PartDone(f_->fn_(p, *w_));
      delete this;
    }
    void Abort(const absl::Status& s) override {
      f_->PartDone(s);
      delete this;
    }

   private:
    FanOut* const f_;
    worker::Worker* const w_;
  };

 private:
  FanOut(grpc::CallbackServerContext* ctx, Fn fn, std::function<void()> finish)
      : FanOutCall(ctx->DefaultReactor(), DeadlineOf(ctx)),
        fn_(std::move(fn)), finish_(std::move(finish)) {}

  void BeforeFinish() override {
    if (finish_ != nullptr) finish_();
  }

  const Fn fn_;
  const std::function<void()> finish_;
};

}  // namespace

grpc::ServerUnaryReactor* AdminService::Status(grpc::CallbackServerContext* ctx,
                                               const v1::StatusRequest* req,
                                               v1::StatusResponse* resp) {
  for (uint32_t p = 0; p < fe_->partitions(); ++p) resp->add_partitions();
  resp->set_version("segkvd 0.1");
  resp->set_uptime_seconds(
      static_cast<uint64_t>(absl::ToInt64Seconds(absl::Now() - started_)));
  return FanOut::Start(ctx, fe_, [resp](Partition& p, worker::Worker& w) {
    const worker::PartitionStats st = p.Stats();
    v1::PartitionStatus* out = resp->mutable_partitions(w.id());
    out->set_partition(w.id());
    out->set_keys(st.keys);
    out->set_live_bytes(st.live_bytes);
    out->set_dead_bytes(st.dead_bytes);
    out->set_segments(static_cast<uint32_t>(st.segments));
    out->set_queue_depth(w.queue_depth());
    out->set_durability(std::string(worker::DurabilityName(p.options().durability)));
    out->set_index_bytes(st.index_bytes);
    out->set_next_version(st.next_version);
    out->set_tail_address(st.tail_address);
    out->set_synced_address(st.synced_address);
    out->set_syncs(st.syncs);
    out->set_recovered_records(st.recovery.records);
    out->set_recovery_seconds(st.recovery_seconds);
    out->set_error(st.error);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::Sync(grpc::CallbackServerContext* ctx,
                                             const v1::SyncRequest* req,
                                             v1::SyncResponse* resp) {
  return FanOut::Start(ctx, fe_, [](Partition& p, worker::Worker&) { return p.Sync(); });
}

grpc::ServerUnaryReactor* AdminService::ListSegments(
    grpc::CallbackServerContext* ctx, const v1::ListSegmentsRequest* req,
    v1::ListSegmentsResponse* resp) {
  if (req->has_partition() && req->partition() >= fe_->partitions()) {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(ToGrpc(absl::InvalidArgumentError(
        absl::StrCat("no partition ", req->partition()))));
    return reactor;
  }
  // Each worker lists its own partition into its own slot; the last one
  // done concatenates them in partition order.
  auto lists = std::make_shared<std::vector<std::vector<v1::Segment>>>(fe_->partitions());
  const bool all = !req->has_partition();
  const uint32_t only = req->partition();
  return FanOut::Start(
      ctx, fe_,
      [lists, all, only](Partition& p, worker::Worker& w) {
        if (!all && w.id() != only) return absl::OkStatus();
        const std::vector<worker::SegmentUsage> usage = p.SegmentUsages();
        const uint64_t size = p.segment_size();
        for (const worker::SegmentInfo& s : p.Segments()) {
          v1::Segment& seg = (*lists)[w.id()].emplace_back();
          seg.set_partition(w.id());
          seg.set_id(s.id);
          seg.set_sealed(s.sealed);
          seg.set_first_address(s.id * size + worker::format::kSegmentHeaderSize);
          seg.set_end_address(s.id * size + s.end_offset);
          if (s.id < usage.size()) {
            seg.set_bytes(usage[s.id].total_bytes);
            seg.set_live_bytes(usage[s.id].live_bytes);
          }
          seg.set_created_unix_ms(s.created_ms);
          seg.set_sealed_unix_ms(s.sealed_ms);
        }
        return absl::OkStatus();
      },
      [lists, resp] {
        for (auto& list : *lists) {
          for (auto& seg : list) *resp->add_segments() = std::move(seg);
        }
      });
}

}  // namespace segkv::server
