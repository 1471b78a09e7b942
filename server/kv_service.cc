#include "server/kv_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/fan_out.h"
#include "server/grpc_status.h"
#include "worker/coding.h"
#include "worker/format.h"
#include "worker/key_hash.h"

namespace segkv::server {

using worker::Partition;
using worker::WriteOp;
using worker::WriteResult;

uint32_t Frontend::PartitionOf(absl::string_view key) const {
  return worker::PartitionOf(worker::KeyHash(key), partitions());
}

absl::Status Frontend::CheckKey(absl::string_view key) const {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.size() > worker::format::kMaxKeySize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key is ", key.size(), " bytes; the limit is ", worker::format::kMaxKeySize));
  }
  return absl::OkStatus();
}

absl::Status Frontend::CheckValue(absl::string_view value) const {
  if (value.empty()) {
    return absl::InvalidArgumentError("value is empty (to remove a key, Delete it)");
  }
  if (value.size() > limits_.max_value_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "value is ", value.size(), " bytes; the limit is ", limits_.max_value_size));
  }
  return absl::OkStatus();
}

uint64_t ScanBudget(const ServiceLimits& limits, size_t limit) {
  // A response holds values of records from the log it examined: at most
  // the budget plus the one record that crosses it (a full value), plus
  // per-item overhead. At least one byte, so every call moves on.
  const int64_t fits = ResponseValueBudget(limits, limit) -
                       static_cast<int64_t>(limits.max_value_size) - 2 * 4096;
  return std::clamp<uint64_t>(fits > 0 ? static_cast<uint64_t>(fits) : 1, 1,
                              std::max<uint64_t>(limits.scan_max_bytes, 1));
}

int64_t ResponseValueBudget(const ServiceLimits& limits, size_t items) {
  const uint64_t overhead = 4096 + 512 * static_cast<uint64_t>(items);
  if (limits.max_response_bytes <= overhead) return 0;
  return static_cast<int64_t>(limits.max_response_bytes - overhead);
}

absl::Status Frontend::CheckAccepting() const {
  if (!accepting()) return absl::UnavailableError("segkvd is shutting down");
  return absl::OkStatus();
}

absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  const auto d = ctx->deadline();
  if (d >= std::chrono::system_clock::time_point::max() -
               std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx,
                                    const absl::Status& s) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(s));
  return reactor;
}

// A stored value larger than one response can carry (only after a restart
// with a smaller --max_message_bytes than the value was written under).
absl::Status TooBigToSend(size_t value_size) {
  return absl::InvalidArgumentError(absl::StrCat(
      "the value is ", value_size,
      " bytes, more than one response can carry under this server's "
      "--max_message_bytes; raise it to read this key"));
}

absl::Status QueueFull(uint32_t partition) {
  return absl::ResourceExhaustedError(
      absl::StrCat("worker queue of partition ", partition, " is full"));
}

// Submits `r` to the partition's worker, or finishes the RPC with
// RESOURCE_EXHAUSTED (and frees `r`) if its queue is full.
template <typename R>
grpc::ServerUnaryReactor* SubmitOrReject(Frontend* fe, uint32_t partition,
                                         std::unique_ptr<R> r) {
  grpc::ServerUnaryReactor* reactor = r->reactor;
  R* raw = r.release();
  if (!fe->worker(partition)->Submit(raw)) {
    delete raw;
    reactor->Finish(ToGrpc(QueueFull(partition)));
  }
  return reactor;
}

void FillPut(const WriteResult& r, v1::PutResponse* resp) {
  resp->set_version(r.version);
  resp->set_existed(r.existed);
  resp->set_previous_version(r.previous_version);
  if (!r.previous_value.empty()) resp->set_previous_value(r.previous_value);
}

void FillDelete(const WriteResult& r, v1::DeleteResponse* resp) {
  resp->set_version(r.version);
  resp->set_existed(r.existed);
  resp->set_previous_version(r.previous_version);
  if (!r.previous_value.empty()) resp->set_previous_value(r.previous_value);
}

// A request that answers one unary RPC: it owns itself from the worker's
// call on and finishes the RPC exactly once.
class UnaryRequest : public worker::Request {
 public:
  explicit UnaryRequest(grpc::CallbackServerContext* ctx)
      : reactor(ctx->DefaultReactor()) {
    deadline = DeadlineOf(ctx);
  }
  void Abort(const absl::Status& s) override { Answer(s); }

  grpc::ServerUnaryReactor* const reactor;

 protected:
  void Answer(const absl::Status& s) {
    reactor->Finish(ToGrpc(s));
    delete this;
  }
};

// One write op of a unary Put or Delete.
template <typename Resp, void (*Fill)(const WriteResult&, Resp*)>
class UnaryWrite : public UnaryRequest {
 public:
  // `previous_budget`: bytes of previous value the response can carry.
  UnaryWrite(grpc::CallbackServerContext* ctx, WriteOp op, Resp* resp,
             int64_t previous_budget)
      : UnaryRequest(ctx), op_(op), resp_(resp), previous_budget_(previous_budget) {
    if (op_.return_previous) op_.previous_budget = &previous_budget_;
    ops = std::span<const WriteOp>(&op_, 1);
    results = &result_;
  }
  void Committed() override {
    // gRPC sends no message with a non-OK status: a failed compare-and-set
    // names the current version in its status message instead.
    if (result_.status.ok()) Fill(result_, resp_);
    Answer(result_.status);
  }

 private:
  WriteOp op_;
  WriteResult result_;
  Resp* const resp_;
  std::atomic<int64_t> previous_budget_;
};

class UnaryGet : public UnaryRequest {
 public:
  // `value_budget`: the largest value the response can carry.
  UnaryGet(grpc::CallbackServerContext* ctx, absl::string_view key,
           v1::GetResponse* resp, int64_t value_budget)
      : UnaryRequest(ctx), key_(key), resp_(resp), value_budget_(value_budget) {
    read_key = key;
  }
  void Run(Partition& p) override {
    worker::ReadResult r;
    absl::Status s = p.Get(key_, &r);
    // Only a value stored under a larger --max_value_size than the server
    // now runs with can be too big; gRPC would refuse to send it.
    if (s.ok() && r.found && static_cast<int64_t>(r.value.size()) > value_budget_) {
      s = TooBigToSend(r.value.size());
    }
    if (s.ok() && r.found) {
      resp_->set_found(true);
      resp_->set_version(r.version);
      resp_->set_value(std::move(r.value));
    }
    Answer(s);
  }

 private:
  const absl::string_view key_;
  v1::GetResponse* const resp_;
  const int64_t value_budget_;
};

class BatchWriteCall : public FanOutCall {
 public:
  BatchWriteCall(grpc::CallbackServerContext* ctx, v1::BatchWriteResponse* resp,
                 int64_t previous_budget)
      : FanOutCall(ctx->DefaultReactor(), DeadlineOf(ctx)), resp(resp),
        previous_budget(previous_budget) {}
  v1::BatchWriteResponse* const resp;
  // Bytes of previous values the response can still carry (all parts).
  std::atomic<int64_t> previous_budget;
};

void FillResult(WriteResult& r, v1::WriteResult* out) {
  // An absent status means OK: no sub-message for the common case.
  if (!r.status.ok()) ToProto(r.status, out->mutable_status());
  out->set_version(r.version);
  out->set_existed(r.existed);
  out->set_previous_version(r.previous_version);
  if (!r.previous_value.empty()) out->set_previous_value(std::move(r.previous_value));
}

class BatchWritePart : public worker::Request {
 public:
  BatchWritePart(BatchWriteCall* call) : call_(call) { deadline = call->deadline; }
  void Add(int index, WriteOp op) {
    indices_.push_back(index);
    ops_.push_back(op);
  }
  void Seal() {
    results_.resize(ops_.size());
    ops = ops_;
    results = results_.data();
  }
  void Committed() override {
    for (size_t i = 0; i < indices_.size(); ++i) {
      FillResult(results_[i], call_->resp->mutable_results(indices_[i]));
    }
    call_->PartDone(absl::OkStatus());
    delete this;
  }
  void Abort(const absl::Status& s) override {
    for (int i : indices_) ToProto(s, call_->resp->mutable_results(i)->mutable_status());
    call_->PartDone(absl::OkStatus());
    delete this;
  }

 private:
  BatchWriteCall* const call_;
  std::vector<int> indices_;
  std::vector<WriteOp> ops_;
  std::vector<WriteResult> results_;
};

class BatchGetCall : public FanOutCall {
 public:
  BatchGetCall(grpc::CallbackServerContext* ctx, const v1::BatchGetRequest* req,
               v1::BatchGetResponse* resp, int64_t budget)
      : FanOutCall(ctx->DefaultReactor(), DeadlineOf(ctx)), req(req), resp(resp),
        budget(budget) {}
  const v1::BatchGetRequest* const req;
  v1::BatchGetResponse* const resp;
  // Bytes of values the response can still carry (all parts).
  std::atomic<int64_t> budget;
};

class BatchGetPart : public worker::Request {
 public:
  explicit BatchGetPart(BatchGetCall* call) : call_(call) { deadline = call->deadline; }
  void Add(int index) { indices_.push_back(index); }
  void Run(Partition& p) override {
    absl::Status status;
    worker::ReadResult r;
    keys_.clear();
    for (int i : indices_) keys_.push_back(call_->req->keys(i));
    for (size_t k = 0; k < keys_.size(); k += 64) {
      p.Prefetch(std::span<const absl::string_view>(keys_).subspan(
          k, std::min<size_t>(64, keys_.size() - k)));
    }
    for (int i : indices_) {
      status = p.Get(call_->req->keys(i), &r);
      if (!status.ok()) break;
      const int64_t n = static_cast<int64_t>(r.value.size());
      if (r.found && call_->budget.fetch_sub(n, std::memory_order_relaxed) < n) {
        status = absl::InvalidArgumentError(
            "the values of these keys do not fit in one response "
            "(--max_message_bytes); ask for fewer keys per call");
        break;
      }
      v1::GetResponse* out = call_->resp->mutable_results(i);
      if (r.found) {
        out->set_found(true);
        out->set_version(r.version);
        out->set_value(r.value);
      }
    }
    call_->PartDone(status);
    delete this;
  }
  void Abort(const absl::Status& s) override {
    call_->PartDone(s);
    delete this;
  }

 private:
  BatchGetCall* const call_;
  std::vector<int> indices_;
  std::vector<absl::string_view> keys_;
};

// Scan cursor: 1 version byte (1), partition (4 bytes LE), address (8 bytes LE).
constexpr size_t kCursorSize = 13;

std::string EncodeCursor(uint32_t partition, uint64_t address) {
  std::string c(kCursorSize, '\0');
  c[0] = 1;
  worker::EncodeFixed32(c.data() + 1, partition);
  worker::EncodeFixed64(c.data() + 5, address);
  return c;
}

class ScanCall : public UnaryRequest {
 public:
  ScanCall(grpc::CallbackServerContext* ctx, Frontend* fe,
           const v1::ScanRequest* req, v1::ScanResponse* resp, uint32_t partition,
           uint64_t address, size_t limit)
      : UnaryRequest(ctx), fe_(fe), req_(req), resp_(resp),
        partition_(partition), address_(address), remaining_(limit),
        budget_(ScanBudget(fe->limits(), limit)) {}

  void Run(Partition& p) override {
    std::vector<worker::ScanItem> items;
    uint64_t scanned = 0;
    auto next = p.Scan(address_, req_->prefix(), remaining_, req_->keys_only(),
                       budget_, &items, &scanned);
    if (!next.ok()) return Abort(next.status());
    // The scan budget keeps the response within the limit for records up
    // to --max_value_size. Records written under a larger one can overflow
    // it: the response stops before the first that does, and continues
    // there next time; if that is the first item, the call fails. (An
    // item's framing is under 32 bytes, the response's own under 64: the
    // margins below are generous, and any record within today's limits
    // fits alone, as --max_message_bytes >= --max_value_size + 8 KiB.)
    int64_t room = static_cast<int64_t>(fe_->limits().max_response_bytes) - 1024;
    for (size_t k = 0; k < items.size(); ++k) {
      room -= static_cast<int64_t>(items[k].key.size() + items[k].value.size() + 64);
      if (room >= 0) continue;
      if (k == 0) {
        return Abort(absl::InvalidArgumentError(absl::StrCat(
            "the value of the next key, ", items[0].value.size(),
            " bytes, is more than one response can carry under this server's "
            "--max_message_bytes; raise it, or scan with keys_only")));
      }
      *next = items[k].address;
      items.resize(k);
      break;
    }
    for (auto& it : items) {
      v1::KeyValue* kv = resp_->add_items();
      kv->set_key(std::move(it.key));
      kv->set_value(std::move(it.value));
      kv->set_version(it.version);
    }
    remaining_ -= items.size();
    budget_ -= std::min(budget_, scanned);
    address_ = *next;
    if (address_ == 0) ++partition_;  // this partition is done
    if (partition_ == fe_->partitions()) return Reply("");
    const std::string cursor = EncodeCursor(partition_, address_);
    // One RPC examines at most scan_max_bytes of log over all partitions it
    // visits (bounding the response), and moves on to the next partition
    // only while it has nothing to return yet.
    if (remaining_ == 0 || address_ != 0 || budget_ == 0 || resp_->items_size() > 0) {
      return Reply(cursor);
    }
    if (!fe_->worker(partition_)->Submit(this)) Reply(cursor);
  }

 private:
  void Reply(const std::string& cursor) {
    resp_->set_next_cursor(cursor);
    Answer(absl::OkStatus());
  }

  Frontend* const fe_;
  const v1::ScanRequest* const req_;
  v1::ScanResponse* const resp_;
  uint32_t partition_;
  uint64_t address_;
  size_t remaining_;
  uint64_t budget_;  // log bytes this RPC may still examine
};

}  // namespace

KvService::KvService(Frontend* frontend) : fe_(frontend) {
  SetMessageAllocatorFor_BatchWrite(&batch_write_alloc_);
  SetMessageAllocatorFor_BatchGet(&batch_get_alloc_);
}

grpc::ServerUnaryReactor* KvService::Put(grpc::CallbackServerContext* ctx,
                                         const v1::PutRequest* req,
                                         v1::PutResponse* resp) {
  absl::Status s = fe_->CheckAccepting();
  if (s.ok()) s = fe_->CheckKey(req->key());
  if (s.ok()) s = fe_->CheckValue(req->value());
  if (!s.ok()) return FinishNow(ctx, s);
  WriteOp op = WriteOp::Put(req->key(), req->value());
  if (req->has_expected_version()) op.expected_version = req->expected_version();
  op.return_previous = req->return_previous();
  return SubmitOrReject(fe_, fe_->PartitionOf(req->key()),
                        std::make_unique<UnaryWrite<v1::PutResponse, FillPut>>(
                            ctx, op, resp, ResponseValueBudget(fe_->limits(), 1)));
}

grpc::ServerUnaryReactor* KvService::Delete(grpc::CallbackServerContext* ctx,
                                            const v1::DeleteRequest* req,
                                            v1::DeleteResponse* resp) {
  absl::Status s = fe_->CheckAccepting();
  if (s.ok()) s = fe_->CheckKey(req->key());
  if (!s.ok()) return FinishNow(ctx, s);
  WriteOp op = WriteOp::Delete(req->key());
  if (req->has_expected_version()) op.expected_version = req->expected_version();
  op.return_previous = req->return_previous();
  return SubmitOrReject(
      fe_, fe_->PartitionOf(req->key()),
      std::make_unique<UnaryWrite<v1::DeleteResponse, FillDelete>>(
          ctx, op, resp, ResponseValueBudget(fe_->limits(), 1)));
}

grpc::ServerUnaryReactor* KvService::Get(grpc::CallbackServerContext* ctx,
                                         const v1::GetRequest* req,
                                         v1::GetResponse* resp) {
  absl::Status s = fe_->CheckAccepting();
  if (s.ok()) s = fe_->CheckKey(req->key());
  if (!s.ok()) return FinishNow(ctx, s);
  return SubmitOrReject(fe_, fe_->PartitionOf(req->key()),
                        std::make_unique<UnaryGet>(ctx, req->key(), resp,
                                                   ResponseValueBudget(fe_->limits(), 1)));
}

grpc::ServerUnaryReactor* KvService::BatchWrite(grpc::CallbackServerContext* ctx,
                                                const v1::BatchWriteRequest* req,
                                                v1::BatchWriteResponse* resp) {
  if (absl::Status s = fe_->CheckAccepting(); !s.ok()) return FinishNow(ctx, s);
  if (static_cast<size_t>(req->ops_size()) > fe_->limits().max_batch) {
    return FinishNow(ctx, absl::InvalidArgumentError(absl::StrCat(
                              "batch of ", req->ops_size(), " ops; the limit is ",
                              fe_->limits().max_batch)));
  }
  auto* call = new BatchWriteCall(
      ctx, resp, ResponseValueBudget(fe_->limits(), req->ops_size()));
  std::vector<std::unique_ptr<BatchWritePart>> parts(fe_->partitions());
  for (int i = 0; i < req->ops_size(); ++i) {
    v1::WriteResult* result = resp->add_results();
    const v1::WriteOp& op = req->ops(i);
    absl::Status s;
    WriteOp w;
    if (op.has_put()) {
      s = fe_->CheckKey(op.put().key());
      if (s.ok()) s = fe_->CheckValue(op.put().value());
      w = WriteOp::Put(op.put().key(), op.put().value());
      if (op.put().has_expected_version()) w.expected_version = op.put().expected_version();
      w.return_previous = op.put().return_previous();
      if (w.return_previous) w.previous_budget = &call->previous_budget;
    } else if (op.has_delete_()) {
      s = fe_->CheckKey(op.delete_().key());
      w = WriteOp::Delete(op.delete_().key());
      if (op.delete_().has_expected_version()) {
        w.expected_version = op.delete_().expected_version();
      }
      w.return_previous = op.delete_().return_previous();
      if (w.return_previous) w.previous_budget = &call->previous_budget;
    } else {
      s = absl::InvalidArgumentError("op is neither put nor delete");
    }
    if (!s.ok()) {
      ToProto(s, result->mutable_status());
      continue;
    }
    const uint32_t p = fe_->PartitionOf(w.key);
    if (parts[p] == nullptr) parts[p] = std::make_unique<BatchWritePart>(call);
    parts[p]->Add(i, w);
  }
  for (auto& part : parts) {
    if (part != nullptr) part->Seal();
  }
  return SubmitParts(fe_, call, parts);
}

grpc::ServerUnaryReactor* KvService::BatchGet(grpc::CallbackServerContext* ctx,
                                              const v1::BatchGetRequest* req,
                                              v1::BatchGetResponse* resp) {
  if (absl::Status s = fe_->CheckAccepting(); !s.ok()) return FinishNow(ctx, s);
  if (static_cast<size_t>(req->keys_size()) > fe_->limits().max_batch) {
    return FinishNow(ctx, absl::InvalidArgumentError(absl::StrCat(
                              "batch of ", req->keys_size(), " keys; the limit is ",
                              fe_->limits().max_batch)));
  }
  for (const std::string& key : req->keys()) {
    if (absl::Status s = fe_->CheckKey(key); !s.ok()) return FinishNow(ctx, s);
  }
  auto* call = new BatchGetCall(ctx, req, resp,
                                ResponseValueBudget(fe_->limits(), req->keys_size()));
  std::vector<std::unique_ptr<BatchGetPart>> parts(fe_->partitions());
  for (int i = 0; i < req->keys_size(); ++i) {
    resp->add_results();
    const uint32_t p = fe_->PartitionOf(req->keys(i));
    if (parts[p] == nullptr) parts[p] = std::make_unique<BatchGetPart>(call);
    parts[p]->Add(i);
  }
  return SubmitParts(fe_, call, parts);
}

grpc::ServerUnaryReactor* KvService::Scan(grpc::CallbackServerContext* ctx,
                                          const v1::ScanRequest* req,
                                          v1::ScanResponse* resp) {
  if (absl::Status s = fe_->CheckAccepting(); !s.ok()) return FinishNow(ctx, s);
  size_t limit = req->limit() == 0 ? 100 : req->limit();
  if (limit > 10000) {
    return FinishNow(ctx, absl::InvalidArgumentError("scan limit is at most 10000"));
  }
  if (req->prefix().size() > worker::format::kMaxKeySize) {
    // No key is that long: it would walk the whole log to find nothing.
    return FinishNow(ctx, absl::InvalidArgumentError(absl::StrCat(
                              "scan prefix is ", req->prefix().size(),
                              " bytes; no key is longer than ", worker::format::kMaxKeySize)));
  }
  uint32_t partition = 0;
  uint64_t address = 0;
  const std::string& cursor = req->cursor();
  if (!cursor.empty()) {
    if (cursor.size() != kCursorSize || cursor[0] != 1) {
      return FinishNow(ctx, absl::InvalidArgumentError("malformed scan cursor"));
    }
    partition = worker::DecodeFixed32(cursor.data() + 1);
    address = worker::DecodeFixed64(cursor.data() + 5);
    if (partition >= fe_->partitions()) {
      return FinishNow(ctx, absl::InvalidArgumentError(
                                "scan cursor names a partition this server does not have"));
    }
  }
  return SubmitOrReject(fe_, partition,
                        std::make_unique<ScanCall>(ctx, fe_, req, resp, partition,
                                                   address, limit));
}

}  // namespace segkv::server
