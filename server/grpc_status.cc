#include "server/grpc_status.h"

#include <string>

namespace segkv::server {

absl::StatusCode ClientCode(absl::StatusCode code) {
  switch (code) {
    // The service itself never answers these; from the storage engine they
    // are file-system errors (EACCES, EPERM, EROFS; ENOENT): the server's
    // disk failed, not the caller's request or permissions.
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kNotFound:
      return absl::StatusCode::kUnavailable;
    default:
      return code;
  }
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(ClientCode(s.code())),
                      std::string(s.message()));
}

void ToProto(const absl::Status& s, v1::OpStatus* out) {
  out->set_code(static_cast<int32_t>(ClientCode(s.code())));
  if (!s.ok()) out->set_message(std::string(s.message()));
}

}  // namespace segkv::server
