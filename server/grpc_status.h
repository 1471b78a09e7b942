// absl::Status -> grpc::Status: the one place the server converts. The
// codes are numbered alike (both follow google.rpc.Code); storage errors
// the engine reports as PERMISSION_DENIED or NOT_FOUND (a read-only or
// unreadable disk, a missing file) reach clients as UNAVAILABLE, the code
// the API gives every I/O failure (docs/api.md).
#ifndef SEGKV_SERVER_GRPC_STATUS_H_
#define SEGKV_SERVER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "segkv/v1/kv.pb.h"

namespace segkv::server {

// The code a client sees for an engine status of code `code`.
absl::StatusCode ClientCode(absl::StatusCode code);
grpc::Status ToGrpc(const absl::Status& s);
// The same for a per-op status inside a batch response.
void ToProto(const absl::Status& s, v1::OpStatus* out);

}  // namespace segkv::server

#endif  // SEGKV_SERVER_GRPC_STATUS_H_
