// The segkv.v1.Admin service: Status, Sync, ListSegments, Checkpoint and
// Compact, each fanned out
// to every worker (a partition is only ever touched by its worker).
#ifndef SEGKV_SERVER_ADMIN_SERVICE_H_
#define SEGKV_SERVER_ADMIN_SERVICE_H_

#include "absl/time/time.h"
#include "segkv/v1/admin.grpc.pb.h"
#include "server/kv_service.h"

namespace segkv::server {

class AdminService final : public v1::Admin::CallbackService {
 public:
  explicit AdminService(Frontend* frontend)
      : fe_(frontend), started_(absl::Now()) {}

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx,
                                   const v1::StatusRequest* req,
                                   v1::StatusResponse* resp) override;
  grpc::ServerUnaryReactor* Sync(grpc::CallbackServerContext* ctx,
                                 const v1::SyncRequest* req,
                                 v1::SyncResponse* resp) override;
  grpc::ServerUnaryReactor* ListSegments(
      grpc::CallbackServerContext* ctx, const v1::ListSegmentsRequest* req,
      v1::ListSegmentsResponse* resp) override;
  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* ctx,
                                       const v1::CheckpointRequest* req,
                                       v1::CheckpointResponse* resp) override;
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* ctx,
                                    const v1::CompactRequest* req,
                                    v1::CompactResponse* resp) override;

 private:
  Frontend* const fe_;
  const absl::Time started_;
};

}  // namespace segkv::server

#endif  // SEGKV_SERVER_ADMIN_SERVICE_H_
