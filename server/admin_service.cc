#include "server/admin_service.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
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
  // For work that spans batches: called after each of the worker's ticks
  // until it returns a status, which ends the part.
  using PollFn =
      std::function<std::optional<absl::Status>(Partition&, worker::Worker&)>;

  static grpc::ServerUnaryReactor* Start(grpc::CallbackServerContext* ctx,
                                         Frontend* fe, Fn fn,
                                         std::function<void()> finish = nullptr,
                                         PollFn poll = nullptr) {
    if (absl::Status s = fe->CheckAccepting(); !s.ok()) {
      auto* reactor = ctx->DefaultReactor();
      reactor->Finish(ToGrpc(s));
      return reactor;
    }
    auto* f = new FanOut(ctx, std::move(fn), std::move(finish), std::move(poll));
    std::vector<std::unique_ptr<Part>> parts;
    for (uint32_t p = 0; p < fe->partitions(); ++p) {
      parts.push_back(std::make_unique<Part>(f, fe->worker(p)));
    }
    return SubmitParts(fe, f, parts);
  }

  class Part : public worker::Request {
   public:
    Part(FanOut* f, worker::Worker* w) : f_(f), w_(w) {
      deadline = f->deadline;
      polls = f->poll_ != nullptr;
    }
    void Run(Partition& p) override {
      absl::Status s = f_->fn_(p, *w_);
      if (!polls) {
        f_->PartDone(s);
        delete this;
      } else if (!s.ok()) {
        failed_ = s;  // ends at the first Poll()
      }
    }
    bool Poll(Partition& p) override {
      std::optional<absl::Status> s = failed_;
      // A cancelled call (client gone, deadline, or segkvd's shutdown grace
      // over) stops waiting: shutdown waits for every call to finish. The
      // work started (a compaction pass, a checkpoint) goes on.
      if (!s.has_value() && f_->ctx_->IsCancelled()) {
        s = absl::CancelledError(
            "call cancelled; the work it started goes on in the background");
      }
      if (!s.has_value()) s = f_->poll_(p, *w_);
      if (!s.has_value()) return false;
      f_->PartDone(*s);
      delete this;
      return true;
    }
    void Abort(const absl::Status& s) override {
      f_->PartDone(s);
      delete this;
    }

   private:
    FanOut* const f_;
    worker::Worker* const w_;
    std::optional<absl::Status> failed_;
  };

 private:
  FanOut(grpc::CallbackServerContext* ctx, Fn fn, std::function<void()> finish,
         PollFn poll)
      : FanOutCall(ctx->DefaultReactor(), DeadlineOf(ctx)), ctx_(ctx),
        fn_(std::move(fn)), finish_(std::move(finish)), poll_(std::move(poll)) {}

  void BeforeFinish() override {
    if (finish_ != nullptr) finish_();
  }

  grpc::CallbackServerContext* const ctx_;  // valid until the call finishes
  const Fn fn_;
  const std::function<void()> finish_;
  const PollFn poll_;
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
    out->set_recovered_from_checkpoint(st.recovered.checkpoint_id.value_or(0));
    out->set_recovery_start_address(st.recovered.start_address);
    out->set_checkpoints_rejected(st.recovered.checkpoints_rejected);
    if (st.checkpoints.last.has_value()) {
      const worker::CheckpointInfo& c = *st.checkpoints.last;
      out->set_last_checkpoint_id(c.id);
      out->set_last_checkpoint_covered_address(c.covered_address);
      out->set_last_checkpoint_unix_ms(c.created_ms);
      out->set_last_checkpoint_bytes(c.file_size);
    }
    out->set_last_checkpoint_copy_ms(st.checkpoints.last_copy_ms);
    out->set_last_checkpoint_sync_ms(st.checkpoints.last_sync_ms);
    out->set_last_checkpoint_write_seconds(st.checkpoints.last_write_seconds);
    out->set_checkpoints_taken(st.checkpoints.taken);
    out->set_checkpoints_failed(st.checkpoints.failed);
    out->set_checkpoint_error(st.checkpoints.last_error);
    out->set_checkpoint_running(p.checkpoint_running());
    const uint64_t total = st.live_bytes + st.dead_bytes;
    out->set_dead_ratio(total == 0 ? 0.0
                                   : static_cast<double>(st.dead_bytes) /
                                         static_cast<double>(total));
    double max_ratio = 0;
    for (const worker::SegmentInfo& s : p.Segments()) {
      if (s.sealed) max_ratio = std::max(max_ratio, p.DeadRatio(s.id));
    }
    out->set_max_segment_dead_ratio(max_ratio);
    out->set_segments_compacted(st.compaction.segments_compacted);
    out->set_bytes_reclaimed(st.compaction.bytes_reclaimed);
    out->set_records_relocated(st.compaction.records_relocated);
    out->set_tombstones_dropped(st.compaction.tombstones_dropped);
    out->set_segments_dropped_unread(st.compaction.segments_dropped_unread);
    out->set_segments_walked(st.compaction.segments_walked);
    if (st.compaction.current.has_value()) {
      out->set_compacting_segment(*st.compaction.current);
    }
    out->set_compaction_error(st.compaction.last_error);
    out->set_compaction_errors(st.compaction.errors);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::Checkpoint(
    grpc::CallbackServerContext* ctx, const v1::CheckpointRequest* req,
    v1::CheckpointResponse* resp) {
  for (uint32_t p = 0; p < fe_->partitions(); ++p) resp->add_partitions();
  // Per partition: whether this call's own checkpoint has been started. A
  // checkpoint already running may have copied the index before the call
  // came: wait for it, then take one that surely covers the call.
  auto started = std::make_shared<std::vector<char>>(fe_->partitions(), 0);
  return FanOut::Start(
      ctx, fe_, [](Partition&, worker::Worker&) { return absl::OkStatus(); },
      nullptr,
      [started, resp](Partition& p,
                      worker::Worker& w) -> std::optional<absl::Status> {
        if (p.checkpoint_running()) return std::nullopt;
        if (!(*started)[w.id()]) {
          (*started)[w.id()] = 1;
          if (absl::Status s = p.StartCheckpoint(); !s.ok()) return s;
          return std::nullopt;
        }
        if (!p.last_checkpoint_status().ok()) return p.last_checkpoint_status();
        const worker::PartitionStats st = p.Stats();
        v1::PartitionCheckpoint* out = resp->mutable_partitions(w.id());
        out->set_partition(w.id());
        if (st.checkpoints.last.has_value()) {
          out->set_id(st.checkpoints.last->id);
          out->set_covered_address(st.checkpoints.last->covered_address);
          out->set_bytes(st.checkpoints.last->file_size);
        }
        out->set_copy_ms(st.checkpoints.last_copy_ms);
        out->set_sync_ms(st.checkpoints.last_sync_ms);
        out->set_write_seconds(st.checkpoints.last_write_seconds);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminService::Compact(grpc::CallbackServerContext* ctx,
                                                const v1::CompactRequest* req,
                                                v1::CompactResponse* resp) {
  if (req->has_min_dead_ratio() &&
      !(req->min_dead_ratio() >= 0 && req->min_dead_ratio() <= 1)) {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(ToGrpc(absl::InvalidArgumentError(absl::StrCat(
        "min_dead_ratio ", req->min_dead_ratio(), " is not in [0, 1]"))));
    return reactor;
  }
  for (uint32_t p = 0; p < fe_->partitions(); ++p) resp->add_partitions();
  auto before = std::make_shared<std::vector<worker::CompactionStats>>(fe_->partitions());
  const std::optional<double> ratio =
      req->has_min_dead_ratio() ? std::optional<double>(req->min_dead_ratio())
                                : std::nullopt;
  return FanOut::Start(
      ctx, fe_,
      [before, ratio](Partition& p, worker::Worker& w) {
        (*before)[w.id()] = p.Stats().compaction;
        // Without a ratio: the server's threshold, or 0.5 where automatic
        // compaction is off (a threshold above 1, which nothing reaches).
        const double configured = p.options().compaction_dead_ratio;
        p.StartCompaction(ratio.value_or(configured <= 1 ? configured : 0.5));
        return absl::OkStatus();
      },
      nullptr,
      [before, resp](Partition& p,
                     worker::Worker& w) -> std::optional<absl::Status> {
        if (p.compaction_running() && p.Stats().error.empty()) return std::nullopt;
        const worker::CompactionStats now = p.Stats().compaction;
        const worker::CompactionStats& then = (*before)[w.id()];
        v1::PartitionCompaction* out = resp->mutable_partitions(w.id());
        out->set_partition(w.id());
        out->set_segments_compacted(now.segments_compacted - then.segments_compacted);
        out->set_bytes_reclaimed(now.bytes_reclaimed - then.bytes_reclaimed);
        out->set_records_relocated(now.records_relocated - then.records_relocated);
        if (!p.Stats().error.empty()) {
          return absl::UnavailableError(p.Stats().error);
        }
        if (now.errors > then.errors) {
          // The pass stopped at a failure (a damaged segment, which stays
          // and is skipped from now on, or an I/O error).
          return absl::Status(now.last_error_code, now.last_error);
        }
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
        const worker::SegmentUsageTable& usage = p.SegmentUsages();
        const uint64_t size = p.segment_size();
        for (const worker::SegmentInfo& s : p.Segments()) {
          v1::Segment& seg = (*lists)[w.id()].emplace_back();
          seg.set_partition(w.id());
          seg.set_id(s.id);
          seg.set_sealed(s.sealed);
          seg.set_first_address(s.id * size + worker::format::kSegmentHeaderSize);
          seg.set_end_address(s.id * size + s.end_offset);
          const worker::SegmentUsage u = usage.Get(s.id);
          seg.set_bytes(u.total_bytes);
          seg.set_live_bytes(u.live_bytes);
          seg.set_tombstone_bytes(u.tombstone_bytes);
          seg.set_created_unix_ms(s.created_ms);
          seg.set_sealed_unix_ms(s.sealed_ms);
          if (s.sealed) seg.set_dead_ratio(p.DeadRatio(s.id));
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
