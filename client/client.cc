#include "client/client.h"

#include <chrono>

#include "util/deadline.h"

namespace segkv::client {

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

namespace {

std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& o) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(o.max_message_bytes);
  args.SetMaxSendMessageSize(o.max_message_bytes);
  return grpc::CreateCustomChannel(o.endpoint, grpc::InsecureChannelCredentials(),
                                   args);
}

template <typename Resp, typename Call>
absl::StatusOr<Resp> Invoke(Call call) {
  Resp resp;
  grpc::Status s = call(&resp);
  if (!s.ok()) return FromGrpc(s);
  return resp;
}

}  // namespace

Client::Client(const ClientOptions& options)
    : Client(MakeChannel(options), options.timeout) {}

Client::Client(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : channel_(std::move(channel)),
      kv_(v1::KV::NewStub(channel_)),
      admin_(v1::Admin::NewStub(channel_)),
      timeout_(timeout) {}

void Client::Prepare(grpc::ClientContext* ctx) const {
  ctx->set_deadline(DeadlineAfter(timeout_));
}

#define SEGKV_CALL(Resp, stub, Method, req)          \
  Invoke<Resp>([&](Resp* resp) {                     \
    grpc::ClientContext ctx;                         \
    Prepare(&ctx);                                   \
    return stub->Method(&ctx, req, resp);            \
  })

absl::StatusOr<v1::PutResponse> Client::Put(const v1::PutRequest& req) {
  return SEGKV_CALL(v1::PutResponse, kv_, Put, req);
}

absl::StatusOr<v1::PutResponse> Client::Put(
    absl::string_view key, absl::string_view value,
    std::optional<uint64_t> expected_version) {
  v1::PutRequest req;
  req.set_key(std::string(key));
  req.set_value(std::string(value));
  if (expected_version.has_value()) req.set_expected_version(*expected_version);
  return Put(req);
}

absl::StatusOr<v1::GetResponse> Client::Get(absl::string_view key) {
  v1::GetRequest req;
  req.set_key(std::string(key));
  return SEGKV_CALL(v1::GetResponse, kv_, Get, req);
}

absl::StatusOr<v1::DeleteResponse> Client::Delete(const v1::DeleteRequest& req) {
  return SEGKV_CALL(v1::DeleteResponse, kv_, Delete, req);
}

absl::StatusOr<v1::DeleteResponse> Client::Delete(absl::string_view key) {
  v1::DeleteRequest req;
  req.set_key(std::string(key));
  return Delete(req);
}

absl::StatusOr<v1::BatchGetResponse> Client::BatchGet(
    const v1::BatchGetRequest& req) {
  return SEGKV_CALL(v1::BatchGetResponse, kv_, BatchGet, req);
}

absl::StatusOr<v1::BatchWriteResponse> Client::BatchWrite(
    const v1::BatchWriteRequest& req) {
  return SEGKV_CALL(v1::BatchWriteResponse, kv_, BatchWrite, req);
}

absl::StatusOr<v1::ScanResponse> Client::Scan(const v1::ScanRequest& req) {
  return SEGKV_CALL(v1::ScanResponse, kv_, Scan, req);
}

absl::StatusOr<v1::StatusResponse> Client::Status() {
  v1::StatusRequest req;
  return SEGKV_CALL(v1::StatusResponse, admin_, Status, req);
}

absl::Status Client::Sync() {
  v1::SyncRequest req;
  return SEGKV_CALL(v1::SyncResponse, admin_, Sync, req).status();
}

absl::StatusOr<v1::CheckpointResponse> Client::Checkpoint() {
  v1::CheckpointRequest req;
  return SEGKV_CALL(v1::CheckpointResponse, admin_, Checkpoint, req);
}

absl::StatusOr<v1::CompactResponse> Client::Compact(
    std::optional<double> min_dead_ratio) {
  v1::CompactRequest req;
  if (min_dead_ratio.has_value()) req.set_min_dead_ratio(*min_dead_ratio);
  return SEGKV_CALL(v1::CompactResponse, admin_, Compact, req);
}

absl::StatusOr<v1::ListSegmentsResponse> Client::ListSegments(
    std::optional<uint32_t> partition) {
  v1::ListSegmentsRequest req;
  if (partition.has_value()) req.set_partition(*partition);
  return SEGKV_CALL(v1::ListSegmentsResponse, admin_, ListSegments, req);
}

#undef SEGKV_CALL

}  // namespace segkv::client
