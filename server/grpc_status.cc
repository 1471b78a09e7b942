#include "server/grpc_status.h"

#include <string>

namespace segkv::server {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

void ToProto(const absl::Status& s, v1::OpStatus* out) {
  out->set_code(static_cast<int32_t>(s.code()));
  if (!s.ok()) out->set_message(std::string(s.message()));
}

}  // namespace segkv::server
