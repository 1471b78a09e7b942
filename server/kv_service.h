// The segkv.v1.KV frontend (gRPC callback API). A handler validates the
// request, hashes each key to its partition and submits the work to that
// partition's worker; it never touches storage. The worker finishes the RPC.
// Batch requests are split per worker and answered when every part is done.
// A full worker queue is RESOURCE_EXHAUSTED at once; while the server shuts
// down new requests get UNAVAILABLE.
//
// Threading: handlers run on gRPC's threads and share no mutable state but
// the workers' queues and the `accepting` flag.
#ifndef SEGKV_SERVER_KV_SERVICE_H_
#define SEGKV_SERVER_KV_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/arena.h"
#include "grpcpp/support/message_allocator.h"
#include "segkv/v1/kv.grpc.pb.h"
#include "worker/worker.h"

namespace segkv::server {

struct ServiceLimits {
  uint64_t max_value_size = 16ull << 20;
  size_t max_batch = 10000;  // ops per BatchWrite, keys per BatchGet
  uint64_t scan_max_bytes = 4ull << 20;  // log bytes one Scan RPC examines
  // The largest response (gRPC's send limit; Server sets it from
  // max_message_bytes). BatchGet values and BatchWrite previous values
  // that would not fit are INVALID_ARGUMENT, never a response gRPC
  // refuses to send.
  uint64_t max_response_bytes = 64ull << 20;
};

// Bytes of values a batch response of `items` results may carry under
// `limits`: the limit less a generous allowance per result (field tags,
// version, status message) and for the message itself; at least 0.
int64_t ResponseValueBudget(const ServiceLimits& limits, size_t items);

// Log bytes one Scan call of up to `limit` items may examine: scan_max_bytes,
// or less if its response could otherwise outgrow max_response_bytes.
uint64_t ScanBudget(const ServiceLimits& limits, size_t limit);

// The state handlers share: the workers (one per partition, owned by the
// Server) and whether new requests are accepted.
class Frontend {
 public:
  Frontend(std::vector<worker::Worker*> workers, ServiceLimits limits)
      : workers_(std::move(workers)), limits_(limits) {}

  uint32_t partitions() const { return static_cast<uint32_t>(workers_.size()); }
  worker::Worker* worker(uint32_t p) const { return workers_[p]; }
  const ServiceLimits& limits() const { return limits_; }
  uint32_t PartitionOf(absl::string_view key) const;

  bool accepting() const { return accepting_.load(std::memory_order_acquire); }
  void StopAccepting() { accepting_.store(false, std::memory_order_release); }

  absl::Status CheckKey(absl::string_view key) const;
  absl::Status CheckValue(absl::string_view value) const;
  // OK if the server accepts requests, else UNAVAILABLE.
  absl::Status CheckAccepting() const;

 private:
  const std::vector<worker::Worker*> workers_;
  const ServiceLimits limits_;
  std::atomic<bool> accepting_{true};
};

// Gives each call of one method its request and response on a protobuf
// arena whose first block lives in the holder itself: parsing a batch's
// ops, and building its results, then cost bump allocations instead of a
// malloc (and later a free, often on another thread) per sub-message and
// string object. The arena frees everything at once when gRPC releases the
// call's messages. Thread-safe (no shared state).
template <typename Req, typename Resp, size_t kFirstBlock>
class ArenaMessageAllocator final : public grpc::MessageAllocator<Req, Resp> {
 public:
  grpc::MessageHolder<Req, Resp>* AllocateMessages() override { return new Holder; }

 private:
  class Holder final : public grpc::MessageHolder<Req, Resp> {
   public:
    Holder() : arena_(Options(block_)) {
      this->set_request(google::protobuf::Arena::CreateMessage<Req>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Resp>(&arena_));
    }
    void Release() override { delete this; }

   private:
    static google::protobuf::ArenaOptions Options(char* block) {
      google::protobuf::ArenaOptions o;
      o.initial_block = block;
      o.initial_block_size = kFirstBlock;
      // Blocks after the first double in size up to this. (A worker that
      // allocates into a response, e.g. BatchGet's values, gets its own
      // small block: start_block_size stays at protobuf's default.)
      o.max_block_size = 1 << 20;
      return o;
    }
    // Declared before the arena: it outlives the arena's destructor.
    alignas(16) char block_[kFirstBlock];
    google::protobuf::Arena arena_;
  };
};

class KvService final : public v1::KV::CallbackService {
 public:
  explicit KvService(Frontend* frontend);

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx,
                                const v1::PutRequest* req,
                                v1::PutResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const v1::GetRequest* req,
                                v1::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx,
                                   const v1::DeleteRequest* req,
                                   v1::DeleteResponse* resp) override;
  grpc::ServerUnaryReactor* BatchGet(grpc::CallbackServerContext* ctx,
                                     const v1::BatchGetRequest* req,
                                     v1::BatchGetResponse* resp) override;
  grpc::ServerUnaryReactor* BatchWrite(grpc::CallbackServerContext* ctx,
                                       const v1::BatchWriteRequest* req,
                                       v1::BatchWriteResponse* resp) override;
  grpc::ServerUnaryReactor* Scan(grpc::CallbackServerContext* ctx,
                                 const v1::ScanRequest* req,
                                 v1::ScanResponse* resp) override;

 private:
  Frontend* const fe_;
  // For batches only: a batch of 100 ops with 100-byte values takes about
  // 30 KiB. Unary calls keep gRPC's own allocation (their messages sit on
  // the call's arena; an allocator's holder costs them as much as it saves).
  ArenaMessageAllocator<v1::BatchWriteRequest, v1::BatchWriteResponse, 32768> batch_write_alloc_;
  ArenaMessageAllocator<v1::BatchGetRequest, v1::BatchGetResponse, 32768> batch_get_alloc_;
};

// The deadline of an RPC as an absl::Time (InfiniteFuture if none).
absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx);

}  // namespace segkv::server

#endif  // SEGKV_SERVER_KV_SERVICE_H_
