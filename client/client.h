// A small synchronous C++ client for segkvd (segkv.v1.KV and segkv.v1.Admin).
// Each call has the client's timeout as its deadline and returns the
// server's status as an absl::Status with the same code.
//
// Thread-safe: one Client may be shared by many threads (gRPC stubs are).
#ifndef SEGKV_CLIENT_CLIENT_H_
#define SEGKV_CLIENT_CLIENT_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "segkv/v1/admin.grpc.pb.h"
#include "segkv/v1/kv.grpc.pb.h"

namespace segkv::client {

// The one place a grpc::Status becomes an absl::Status on the client side.
absl::Status FromGrpc(const grpc::Status& s);

struct ClientOptions {
  std::string endpoint = "127.0.0.1:7379";
  absl::Duration timeout = absl::Seconds(5);
  int max_message_bytes = 64 << 20;
};

class Client {
 public:
  // Creates a channel to options.endpoint (plaintext). Does not wait for
  // the connection: the first call does.
  explicit Client(const ClientOptions& options);
  // Uses an existing channel (tests, in-process servers).
  Client(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout);

  absl::StatusOr<v1::PutResponse> Put(const v1::PutRequest& req);
  absl::StatusOr<v1::PutResponse> Put(absl::string_view key,
                                      absl::string_view value,
                                      std::optional<uint64_t> expected_version =
                                          std::nullopt);
  absl::StatusOr<v1::GetResponse> Get(absl::string_view key);
  absl::StatusOr<v1::DeleteResponse> Delete(const v1::DeleteRequest& req);
  absl::StatusOr<v1::DeleteResponse> Delete(absl::string_view key);
  absl::StatusOr<v1::BatchGetResponse> BatchGet(const v1::BatchGetRequest& req);
  absl::StatusOr<v1::BatchWriteResponse> BatchWrite(
      const v1::BatchWriteRequest& req);
  absl::StatusOr<v1::ScanResponse> Scan(const v1::ScanRequest& req);

  absl::StatusOr<v1::StatusResponse> Status();
  absl::Status Sync();
  absl::StatusOr<v1::CheckpointResponse> Checkpoint();
  absl::StatusOr<v1::CompactResponse> Compact(std::optional<double> min_dead_ratio);
  absl::StatusOr<v1::ListSegmentsResponse> ListSegments(
      std::optional<uint32_t> partition = std::nullopt);

  v1::KV::Stub* kv() { return kv_.get(); }
  v1::Admin::Stub* admin() { return admin_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  void Prepare(grpc::ClientContext* ctx) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KV::Stub> kv_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  absl::Duration timeout_;
};

}  // namespace segkv::client

#endif  // SEGKV_CLIENT_CLIENT_H_
