// segkv-bench: closed-loop gRPC load generator for segkvd (segkv.v1.KV),
// segkv-noop-server (the same API, no work) and etcd (etcdserverpb.KV).
//
// --inflight request slots are spread over --threads client threads; each
// thread owns a CompletionQueue and keeps every one of its slots busy with
// async unary calls (random op per --mix, random key uniform over --keys),
// spread round-robin over --channels separate HTTP/2 connections. Completions
// during --warmup are not measured; after --duration no new call starts and
// the outstanding ones drain.
//
// Prints one summary line (and with --json a JSON object as the last line).
// With --server_pid, also the CPU time that server process and this client
// used per key in the measured window.
// Exit status: 0, 1 if more than 1% of measured ops failed (or none
// completed, or the endpoint is unreachable), 2 on a usage error.

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "client/flag_check.h"
#include "util/deadline.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "etcd/etcd_kv.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "segkv/v1/kv.grpc.pb.h"

ABSL_FLAG(std::string, target, "segkv",
          "segkv | noop | etcd (segkv and noop speak segkv.v1.KV, etcd "
          "speaks etcdserverpb.KV)");
ABSL_FLAG(std::string, endpoint, "",
          "host:port (default 127.0.0.1:7379, or 127.0.0.1:2379 for etcd)");
ABSL_FLAG(std::string, mix, "put:50,get:50",
          "weighted ops, e.g. put:50,get:50; ops: put, get, batch_put");
ABSL_FLAG(uint64_t, keys, 100000, "key space: keys 0..keys-1");
ABSL_FLAG(int, key_size, 16,
          "key bytes: \"key\" + the zero-padded decimal index");
ABSL_FLAG(int, value_size, 100, "value bytes");
ABSL_FLAG(int, inflight, 64, "requests in flight, over all threads");
ABSL_FLAG(int, channels, 4, "separate gRPC channels (connections)");
ABSL_FLAG(int, threads, 2, "client threads (one CompletionQueue each)");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "measured time");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1),
          "unmeasured time before --duration");
ABSL_FLAG(int, batch, 100, "keys per batch_put (a BatchWrite of puts)");
ABSL_FLAG(bool, preload, false,
          "before measuring, write every key once (segkv/noop: BatchWrite "
          "of 500 keys; etcd: Put)");
ABSL_FLAG(bool, json, false, "also print a JSON object as the last line");
ABSL_FLAG(int, server_pid, 0,
          "a server process on this machine: also report the CPU time it "
          "and this client used per op in the measured window "
          "(/proc/PID/stat), a figure far less noisy than QPS");

namespace segkv::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Rng = std::mt19937_64;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr auto kCallDeadline = std::chrono::seconds(10);
constexpr int kPreloadBatch = 500;
constexpr int kMaxMessageBytes = 64 << 20;
// segkvd's default --max_value_size and --max_batch.
constexpr int kMaxValueSize = 16 << 20;
constexpr int kMaxBatch = 10000;
constexpr int kMaxInflight = 1 << 20;
constexpr int kNumCodes = 17;  // grpc::StatusCode values 0..16

enum class Target { kSegkv, kNoop, kEtcd };
enum class OpKind { kPut, kGet, kBatchPut };

// ---------------------------------------------------------------------------
// Configuration.

struct Config {
  Target target = Target::kSegkv;
  std::string target_name;
  std::string endpoint;
  std::string mix_text;
  std::vector<std::pair<OpKind, uint32_t>> mix;  // op, weight > 0
  uint64_t keys = 0;
  int key_size = 0;
  int value_size = 0;
  int inflight = 0;
  int channels = 0;
  int threads = 0;  // effective: at most inflight
  absl::Duration duration;
  absl::Duration warmup;
  int batch = 0;
  bool preload = false;
  bool json = false;
  int server_pid = 0;  // 0: no CPU accounting
};

// Bytes one put adds to a BatchWrite: key, value and protobuf framing.
int64_t OpBytes(const Config& c) {
  return static_cast<int64_t>(c.key_size) + c.value_size + 32;
}

int Digits(uint64_t n) {
  int d = 1;
  while (n >= 10) {
    n /= 10;
    ++d;
  }
  return d;
}

absl::StatusOr<std::vector<std::pair<OpKind, uint32_t>>> ParseMix(
    absl::string_view text) {
  std::vector<std::pair<OpKind, uint32_t>> mix;
  uint64_t total = 0;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(part, absl::MaxSplits(':', 1));
    OpKind op;
    if (kv.first == "put") {
      op = OpKind::kPut;
    } else if (kv.first == "get") {
      op = OpKind::kGet;
    } else if (kv.first == "batch_put") {
      op = OpKind::kBatchPut;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--mix: unknown op \"", kv.first, "\" (ops: put, get, batch_put)"));
    }
    uint32_t weight = 0;
    if (!absl::SimpleAtoi(kv.second, &weight)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--mix: bad weight in \"", part, "\" (want op:N)"));
    }
    if (weight == 0) continue;
    total += weight;
    mix.emplace_back(op, weight);
  }
  if (total == 0) {
    return absl::InvalidArgumentError("--mix: no op has a positive weight");
  }
  return mix;
}

absl::StatusOr<Config> ConfigFromFlags() {
  Config c;
  c.target_name = absl::GetFlag(FLAGS_target);
  if (c.target_name == "segkv") {
    c.target = Target::kSegkv;
  } else if (c.target_name == "noop") {
    c.target = Target::kNoop;
  } else if (c.target_name == "etcd") {
    c.target = Target::kEtcd;
  } else {
    return absl::InvalidArgumentError("--target must be segkv, noop or etcd");
  }
  c.endpoint = absl::GetFlag(FLAGS_endpoint);
  if (c.endpoint.empty()) {
    c.endpoint =
        c.target == Target::kEtcd ? "127.0.0.1:2379" : "127.0.0.1:7379";
  }
  c.mix_text = absl::GetFlag(FLAGS_mix);
  absl::StatusOr<std::vector<std::pair<OpKind, uint32_t>>> mix =
      ParseMix(c.mix_text);
  if (!mix.ok()) return mix.status();
  c.mix = *std::move(mix);
  c.keys = absl::GetFlag(FLAGS_keys);
  c.key_size = absl::GetFlag(FLAGS_key_size);
  c.value_size = absl::GetFlag(FLAGS_value_size);
  c.inflight = absl::GetFlag(FLAGS_inflight);
  c.channels = std::min(absl::GetFlag(FLAGS_channels), c.inflight);
  c.threads = std::min(absl::GetFlag(FLAGS_threads), c.inflight);
  c.duration = absl::GetFlag(FLAGS_duration);
  c.warmup = absl::GetFlag(FLAGS_warmup);
  c.batch = absl::GetFlag(FLAGS_batch);
  c.preload = absl::GetFlag(FLAGS_preload);
  c.json = absl::GetFlag(FLAGS_json);
  c.server_pid = absl::GetFlag(FLAGS_server_pid);
  if (c.server_pid < 0) return absl::InvalidArgumentError("--server_pid must be >= 0");

  if (c.keys < 1) return absl::InvalidArgumentError("--keys must be >= 1");
  if (c.key_size < 3 + Digits(c.keys - 1) || c.key_size > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("--key_size must be in [", 3 + Digits(c.keys - 1),
                     ", 4096] for --keys=", c.keys));
  }
  // Within what one message and segkvd's default limits carry.
  if (c.value_size < 1 || c.value_size > kMaxValueSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("--value_size must be in [1, ", kMaxValueSize, "]"));
  }
  if (c.inflight < 1 || c.channels < 1 || c.threads < 1 || c.batch < 1 ||
      c.inflight > kMaxInflight || c.batch > kMaxBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--inflight must be in [1, ", kMaxInflight, "], --channels and --threads >= 1 "
        "(at most --inflight are used), --batch in [1, ", kMaxBatch, "]"));
  }
  const bool batches = std::any_of(c.mix.begin(), c.mix.end(), [](const auto& m) {
    return m.first == OpKind::kBatchPut;
  });
  if (batches && static_cast<int64_t>(c.batch) * OpBytes(c) > kMaxMessageBytes - (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--batch=", c.batch, " of ", OpBytes(c), "-byte ops is over the ",
        kMaxMessageBytes, "-byte message limit"));
  }
  // Bounded: the run's clock points are steady_clock nanoseconds.
  if (c.duration <= absl::ZeroDuration() || c.warmup < absl::ZeroDuration() ||
      c.duration > absl::Hours(24 * 365) || c.warmup > absl::Hours(24 * 365)) {
    return absl::InvalidArgumentError(
        "--duration must be > 0 and --warmup >= 0, both at most a year");
  }
  if (c.target == Target::kEtcd) {
    for (const auto& [op, weight] : c.mix) {
      if (op == OpKind::kBatchPut) {
        return absl::InvalidArgumentError(
            "batch_put is not supported for --target=etcd");
      }
    }
  }
  return c;
}

// ---------------------------------------------------------------------------
// Workload: keys, values, op choice. Immutable once built; shared by threads.

class Workload {
 public:
  explicit Workload(const Config& c)
      : keys_(c.keys), key_size_(c.key_size), batch_(c.batch) {
    Rng rng(42);
    std::uniform_int_distribution<int> letter('a', 'z');
    value_.resize(c.value_size);
    for (char& ch : value_) ch = static_cast<char>(letter(rng));
    uint64_t total = 0;
    for (const auto& [op, weight] : c.mix) {
      total += weight;
      cumulative_.emplace_back(total, op);
    }
  }

  uint64_t keys() const { return keys_; }
  int batch() const { return batch_; }
  const std::string& value() const { return value_; }

  // "key" + index, zero-padded to key_size bytes.
  void FormatKey(uint64_t index, std::string* out) const {
    out->assign(key_size_, '0');
    std::memcpy(out->data(), "key", 3);
    for (size_t i = out->size(); index != 0; index /= 10) {
      (*out)[--i] = static_cast<char>('0' + index % 10);
    }
  }

  uint64_t RandomKey(Rng& rng) const {
    return std::uniform_int_distribution<uint64_t>(0, keys_ - 1)(rng);
  }

  OpKind RandomOp(Rng& rng) const {
    uint64_t r = std::uniform_int_distribution<uint64_t>(
        0, cumulative_.back().first - 1)(rng);
    for (const auto& [bound, op] : cumulative_) {
      if (r < bound) return op;
    }
    return cumulative_.back().second;
  }

 private:
  uint64_t keys_;
  int key_size_;
  int batch_;
  std::string value_;
  std::vector<std::pair<uint64_t, OpKind>> cumulative_;  // weight sum, op
};

// ---------------------------------------------------------------------------
// Latency histogram: log-linear buckets over nanoseconds. Values below 2^8
// ns get one bucket each; above, every power of two [2^e, 2^(e+1)) is split
// into 128 equal buckets, so a bucket's width is at most 1/128 (0.8%) of its
// lower bound. Values are clamped to 2^37 ns (137 s).

class Histogram {
 public:
  void Record(uint64_t ns) {
    ns = std::min(ns, kMaxValue);
    ++counts_[Index(ns)];
    ++count_;
  }

  void Merge(const Histogram& other) {
    for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
  }

  uint64_t count() const { return count_; }

  // The midpoint of the bucket holding the ceil(p * count)-th smallest
  // value, in microseconds; 0 if empty.
  double PercentileUs(double p) const {
    if (count_ == 0) return 0;
    uint64_t rank = std::max<uint64_t>(
        1, static_cast<uint64_t>(std::ceil(p * static_cast<double>(count_))));
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        auto [lower, width] = Bounds(i);
        return (static_cast<double>(lower) +
                static_cast<double>(width - 1) / 2) /
               1000.0;
      }
    }
    return static_cast<double>(kMaxValue) / 1000.0;
  }

 private:
  static constexpr int kSubBits = 7;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;  // 128
  static constexpr int kMaxBits = 37;
  static constexpr uint64_t kMaxValue = (uint64_t{1} << kMaxBits) - 1;
  static constexpr int kBuckets = (kMaxBits - kSubBits + 1) * kSub;

  static int Index(uint64_t v) {
    if (v < 2 * kSub) return static_cast<int>(v);
    int shift = (63 - __builtin_clzll(v)) - kSubBits;
    return static_cast<int>(shift * kSub + (v >> shift));
  }

  // Lower bound and width (ns) of bucket i.
  static std::pair<uint64_t, uint64_t> Bounds(int i) {
    if (i < static_cast<int>(2 * kSub)) return {static_cast<uint64_t>(i), 1};
    int shift = i / kSub - 1;
    uint64_t mantissa = i - shift * kSub;  // in [kSub, 2 * kSub)
    return {mantissa << shift, uint64_t{1} << shift};
  }

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
};

struct Stats {
  Histogram latency;  // successful ops only
  uint64_t ops = 0;   // successful
  uint64_t keys = 0;  // keys of successful ops
  std::array<uint64_t, kNumCodes> errors_by_code{};
  std::string first_error;
  // CPU seconds used in the measured window (--server_pid); < 0: unknown.
  double server_cpu_s = -1;
  double client_cpu_s = -1;

  uint64_t errors() const {
    uint64_t n = 0;
    for (uint64_t e : errors_by_code) n += e;
    return n;
  }

  void Merge(const Stats& o) {
    latency.Merge(o.latency);
    ops += o.ops;
    keys += o.keys;
    for (int i = 0; i < kNumCodes; ++i)
      errors_by_code[i] += o.errors_by_code[i];
    if (first_error.empty()) first_error = o.first_error;
  }
};

// ---------------------------------------------------------------------------
// Request slots. A slot has at most one call in flight; its address is the
// CompletionQueue tag. Only the thread that owns the slot's queue touches it.

struct Outcome {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;  // when code != OK
  uint64_t keys = 0;    // keys the call wrote or read
};

class Slot {
 public:
  virtual ~Slot() = default;

  void StartPut(const Workload& w, uint64_t key, grpc::CompletionQueue* cq) {
    Begin();
    DoPut(w, key, cq);
  }
  void StartGet(const Workload& w, uint64_t key, grpc::CompletionQueue* cq) {
    Begin();
    DoGet(w, key, cq);
  }
  void StartBatchPut(const Workload& w, const std::vector<uint64_t>& keys,
                     grpc::CompletionQueue* cq) {
    Begin();
    DoBatchPut(w, keys, cq);
  }

  // Called once the queue returned this slot's tag.
  virtual Outcome Complete() = 0;

  Clock::time_point started() const { return started_; }

 protected:
  virtual void DoPut(const Workload& w, uint64_t key,
                     grpc::CompletionQueue* cq) = 0;
  virtual void DoGet(const Workload& w, uint64_t key,
                     grpc::CompletionQueue* cq) = 0;
  virtual void DoBatchPut(const Workload& w, const std::vector<uint64_t>& keys,
                          grpc::CompletionQueue* cq) = 0;

  grpc::ClientContext* ctx() { return ctx_.get(); }
  grpc::Status status_;

 private:
  void Begin() {
    ctx_ = std::make_unique<grpc::ClientContext>();
    ctx_->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    started_ = Clock::now();
  }

  std::unique_ptr<grpc::ClientContext> ctx_;
  Clock::time_point started_;
};

Outcome FromStatus(const grpc::Status& s, uint64_t keys) {
  Outcome o;
  o.code = s.error_code();
  if (!s.ok()) {
    o.message = s.error_message();
  } else {
    o.keys = keys;
  }
  return o;
}

// segkv.v1.KV (segkvd and segkv-noop-server).
class SegkvSlot final : public Slot {
 public:
  SegkvSlot(v1::KV::Stub* stub, const Workload& w) : stub_(stub) {
    put_req_.set_value(w.value());
  }

  Outcome Complete() override {
    Outcome o;
    switch (op_) {
      case OpKind::kPut:
        put_reader_.reset();
        return FromStatus(status_, 1);
      case OpKind::kGet:
        get_reader_.reset();
        return FromStatus(status_, 1);
      case OpKind::kBatchPut:
        batch_reader_.reset();
        return BatchOutcome();
    }
    return o;
  }

 private:
  void DoPut(const Workload& w, uint64_t key,
             grpc::CompletionQueue* cq) override {
    op_ = OpKind::kPut;
    w.FormatKey(key, put_req_.mutable_key());
    put_reader_ = stub_->PrepareAsyncPut(ctx(), put_req_, cq);
    put_reader_->StartCall();
    put_reader_->Finish(&put_resp_, &status_, this);
  }

  void DoGet(const Workload& w, uint64_t key,
             grpc::CompletionQueue* cq) override {
    op_ = OpKind::kGet;
    w.FormatKey(key, get_req_.mutable_key());
    get_reader_ = stub_->PrepareAsyncGet(ctx(), get_req_, cq);
    get_reader_->StartCall();
    get_reader_->Finish(&get_resp_, &status_, this);
  }

  void DoBatchPut(const Workload& w, const std::vector<uint64_t>& keys,
                  grpc::CompletionQueue* cq) override {
    op_ = OpKind::kBatchPut;
    if (batch_req_.ops_size() != static_cast<int>(keys.size())) {
      batch_req_.Clear();
      for (size_t i = 0; i < keys.size(); ++i) {
        batch_req_.add_ops()->mutable_put()->set_value(w.value());
      }
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      w.FormatKey(keys[i],
                  batch_req_.mutable_ops(i)->mutable_put()->mutable_key());
    }
    batch_resp_.Clear();
    batch_reader_ = stub_->PrepareAsyncBatchWrite(ctx(), batch_req_, cq);
    batch_reader_->StartCall();
    batch_reader_->Finish(&batch_resp_, &status_, this);
  }

  // A batch succeeds if the RPC and every op did; else the first failure.
  Outcome BatchOutcome() const {
    const int n = batch_req_.ops_size();
    if (!status_.ok()) return FromStatus(status_, 0);
    Outcome o;
    if (batch_resp_.results_size() != n) {
      o.code = grpc::StatusCode::INTERNAL;
      o.message = absl::StrCat("BatchWrite answered ",
                               batch_resp_.results_size(), " of ", n, " ops");
      return o;
    }
    for (const v1::WriteResult& r : batch_resp_.results()) {
      int code = r.status().code();
      if (code != 0) {
        o.code = static_cast<grpc::StatusCode>(
            code > 0 && code < kNumCodes ? code : grpc::StatusCode::UNKNOWN);
        o.message = r.status().message();
        return o;
      }
    }
    o.keys = n;
    return o;
  }

  v1::KV::Stub* stub_;
  OpKind op_ = OpKind::kPut;
  v1::PutRequest put_req_;
  v1::PutResponse put_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::PutResponse>> put_reader_;
  v1::GetRequest get_req_;
  v1::GetResponse get_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::GetResponse>> get_reader_;
  v1::BatchWriteRequest batch_req_;
  v1::BatchWriteResponse batch_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::BatchWriteResponse>>
      batch_reader_;
};

// etcdserverpb.KV: put is Put, get is a single-key Range.
class EtcdSlot final : public Slot {
 public:
  EtcdSlot(etcdserverpb::KV::Stub* stub, const Workload& w) : stub_(stub) {
    put_req_.set_value(w.value());
  }

  Outcome Complete() override {
    put_reader_.reset();
    range_reader_.reset();
    return FromStatus(status_, 1);
  }

 private:
  void DoPut(const Workload& w, uint64_t key,
             grpc::CompletionQueue* cq) override {
    w.FormatKey(key, put_req_.mutable_key());
    put_reader_ = stub_->PrepareAsyncPut(ctx(), put_req_, cq);
    put_reader_->StartCall();
    put_reader_->Finish(&put_resp_, &status_, this);
  }

  void DoGet(const Workload& w, uint64_t key,
             grpc::CompletionQueue* cq) override {
    w.FormatKey(key, range_req_.mutable_key());
    range_reader_ = stub_->PrepareAsyncRange(ctx(), range_req_, cq);
    range_reader_->StartCall();
    range_reader_->Finish(&range_resp_, &status_, this);
  }

  void DoBatchPut(const Workload& w, const std::vector<uint64_t>& keys,
                  grpc::CompletionQueue* cq) override {
    // Rejected by ConfigFromFlags; etcd's Txn would be the equivalent.
    std::abort();
  }

  etcdserverpb::KV::Stub* stub_;
  etcdserverpb::PutRequest put_req_;
  etcdserverpb::PutResponse put_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::PutResponse>>
      put_reader_;
  etcdserverpb::RangeRequest range_req_;
  etcdserverpb::RangeResponse range_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::RangeResponse>>
      range_reader_;
};

// ---------------------------------------------------------------------------
// Channels, stubs and slots.

class Connections {
 public:
  Connections(const Config& c, const Workload& w) {
    for (int i = 0; i < c.channels; ++i) {
      grpc::ChannelArguments args;
      // Distinct args keep the channels from sharing one subchannel (and so
      // one TCP connection).
      args.SetInt("segkv.bench.channel", i);
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetMaxReceiveMessageSize(kMaxMessageBytes);
      args.SetMaxSendMessageSize(kMaxMessageBytes);
      channels_.push_back(grpc::CreateCustomChannel(
          c.endpoint, grpc::InsecureChannelCredentials(), args));
      if (c.target == Target::kEtcd) {
        etcd_stubs_.push_back(etcdserverpb::KV::NewStub(channels_.back()));
      } else {
        segkv_stubs_.push_back(v1::KV::NewStub(channels_.back()));
      }
    }
    // Thread t gets inflight/threads slots (the first inflight%threads one
    // more); global slot g uses channel g % channels.
    int g = 0;
    slots_.resize(c.threads);
    for (int t = 0; t < c.threads; ++t) {
      int n = c.inflight / c.threads + (t < c.inflight % c.threads ? 1 : 0);
      for (int i = 0; i < n; ++i, ++g) {
        int ch = g % c.channels;
        if (c.target == Target::kEtcd) {
          slots_[t].push_back(
              std::make_unique<EtcdSlot>(etcd_stubs_[ch].get(), w));
        } else {
          slots_[t].push_back(
              std::make_unique<SegkvSlot>(segkv_stubs_[ch].get(), w));
        }
      }
    }
  }

  // Waits until every channel is connected.
  absl::Status Connect(absl::Duration timeout) {
    auto deadline = DeadlineAfter(timeout);
    for (const auto& ch : channels_) {
      if (!ch->WaitForConnected(deadline)) {
        return absl::UnavailableError("cannot connect");
      }
    }
    return absl::OkStatus();
  }

  std::vector<std::unique_ptr<Slot>>& slots(int thread) {
    return slots_[thread];
  }

 private:
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::KV::Stub>> segkv_stubs_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> etcd_stubs_;
  std::vector<std::vector<std::unique_ptr<Slot>>> slots_;
};

// Keeps every slot busy: start(slot, cq) starts a call on the slot or
// returns false when there is no more work; done(slot, outcome, now) sees
// each completion. Returns once no call is outstanding.
template <typename StartFn, typename DoneFn>
void Drive(std::vector<std::unique_ptr<Slot>>& slots, StartFn start,
           DoneFn done) {
  grpc::CompletionQueue cq;
  size_t outstanding = 0;
  for (auto& slot : slots) {
    if (start(slot.get(), &cq)) ++outstanding;
  }
  void* tag;
  bool ok;
  while (outstanding > 0 && cq.Next(&tag, &ok)) {
    Clock::time_point now = Clock::now();
    Slot* slot = static_cast<Slot*>(tag);
    done(slot, slot->Complete(), now);
    if (!start(slot, &cq)) --outstanding;
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

void RecordError(const Outcome& o, Stats* stats) {
  ++stats->errors_by_code[static_cast<int>(o.code) % kNumCodes];
  if (stats->first_error.empty()) {
    stats->first_error = absl::StrCat(
        absl::StatusCodeToString(static_cast<absl::StatusCode>(o.code)), ": ",
        o.message);
  }
}

// Runs fn(thread_index) on each of n threads; returns their results.
template <typename Fn>
std::vector<Stats> OnThreads(int n, Fn fn) {
  std::vector<Stats> results(n);
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([&, t] { results[t] = fn(t); });
  }
  for (std::thread& th : threads) th.join();
  return results;
}

// Writes every key once. Returns stats with ops = calls, errors by code.
Stats Preload(const Config& c, const Workload& w, Connections& conns) {
  // Up to kPreloadBatch keys per BatchWrite, fewer where their values would
  // not fit in one message.
  const uint64_t chunk =
      c.target == Target::kEtcd
          ? 1
          : std::clamp<int64_t>((kMaxMessageBytes - (1 << 20)) / OpBytes(c), 1, kPreloadBatch);
  std::atomic<uint64_t> next{0};
  std::vector<Stats> per_thread = OnThreads(c.threads, [&](int t) {
    Stats stats;
    std::vector<uint64_t> keys;
    auto start = [&](Slot* slot, grpc::CompletionQueue* cq) {
      uint64_t first = next.fetch_add(chunk, std::memory_order_relaxed);
      if (first >= w.keys()) return false;
      if (c.target == Target::kEtcd) {
        slot->StartPut(w, first, cq);
      } else {
        keys.clear();
        for (uint64_t k = first; k < std::min(first + chunk, w.keys()); ++k) {
          keys.push_back(k);
        }
        slot->StartBatchPut(w, keys, cq);
      }
      return true;
    };
    auto done = [&](Slot* slot, const Outcome& o, Clock::time_point now) {
      if (o.code == grpc::StatusCode::OK) {
        ++stats.ops;
        stats.keys += o.keys;
      } else {
        RecordError(o, &stats);
      }
    };
    Drive(conns.slots(t), start, done);
    return stats;
  });
  Stats total;
  for (const Stats& s : per_thread) total.Merge(s);
  return total;
}

// CPU seconds (user + system, all threads) a process has used so far, from
// /proc/PID/stat; nullopt if it cannot be read.
std::optional<double> ProcessCpuSeconds(const std::string& pid) {
  FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "r");
  if (f == nullptr) return std::nullopt;
  char buf[1024];
  const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // The command name (field 2) may hold spaces: fields count from its ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return std::nullopt;
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(p + 1), ' ', absl::SkipEmpty());
  // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
  uint64_t utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return std::nullopt;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The measured run: warmup, then duration. Counts completions inside the
// measured window.
Stats Measure(const Config& c, const Workload& w, Connections& conns) {
  const Clock::time_point measure_start =
      Clock::now() + absl::ToChronoNanoseconds(c.warmup);
  const Clock::time_point measure_end =
      measure_start + absl::ToChronoNanoseconds(c.duration);
  // Samples the server's and this process's CPU time at both ends of the
  // measured window.
  double server_cpu_s = -1, client_cpu_s = -1;
  std::thread cpu_sampler;
  if (c.server_pid > 0) {
    cpu_sampler = std::thread([&] {
      const std::string server = std::to_string(c.server_pid);
      std::this_thread::sleep_until(measure_start);
      const auto s0 = ProcessCpuSeconds(server), c0 = ProcessCpuSeconds("self");
      std::this_thread::sleep_until(measure_end);
      const auto s1 = ProcessCpuSeconds(server), c1 = ProcessCpuSeconds("self");
      if (s0 && s1) server_cpu_s = *s1 - *s0;
      if (c0 && c1) client_cpu_s = *c1 - *c0;
    });
  }
  std::random_device seed_source;
  const uint64_t seed = (uint64_t{seed_source()} << 32) ^ seed_source();
  std::vector<Stats> per_thread = OnThreads(c.threads, [&](int t) {
    Stats stats;
    Rng rng(seed + 0x9e3779b97f4a7c15ULL * (t + 1));
    std::vector<uint64_t> keys(w.batch());
    auto start = [&](Slot* slot, grpc::CompletionQueue* cq) {
      if (Clock::now() >= measure_end) return false;
      switch (w.RandomOp(rng)) {
        case OpKind::kPut:
          slot->StartPut(w, w.RandomKey(rng), cq);
          break;
        case OpKind::kGet:
          slot->StartGet(w, w.RandomKey(rng), cq);
          break;
        case OpKind::kBatchPut:
          for (uint64_t& k : keys) k = w.RandomKey(rng);
          slot->StartBatchPut(w, keys, cq);
          break;
      }
      return true;
    };
    auto done = [&](Slot* slot, const Outcome& o, Clock::time_point now) {
      if (now < measure_start || now >= measure_end) return;
      if (o.code == grpc::StatusCode::OK) {
        ++stats.ops;
        stats.keys += o.keys;
        stats.latency.Record(
            std::chrono::duration_cast<std::chrono::nanoseconds>(
                now - slot->started())
                .count());
      } else {
        RecordError(o, &stats);
      }
    };
    Drive(conns.slots(t), start, done);
    return stats;
  });
  Stats total;
  for (const Stats& s : per_thread) total.Merge(s);
  if (cpu_sampler.joinable()) {
    cpu_sampler.join();
    total.server_cpu_s = server_cpu_s;
    total.client_cpu_s = client_cpu_s;
  }
  return total;
}

// ---------------------------------------------------------------------------
// Report.

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20) {
      out += absl::StrFormat("\\u%04x", ch);
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

// Returns the exit status.
int Report(const Config& c, const Stats& s) {
  const double seconds = absl::ToDoubleSeconds(c.duration);
  const double qps = static_cast<double>(s.ops) / seconds;
  const double keys_per_s = static_cast<double>(s.keys) / seconds;
  const double p50 = s.latency.PercentileUs(0.50);
  const double p90 = s.latency.PercentileUs(0.90);
  const double p99 = s.latency.PercentileUs(0.99);
  const double p999 = s.latency.PercentileUs(0.999);
  const uint64_t errors = s.errors();
  const uint64_t exhausted =
      s.errors_by_code[grpc::StatusCode::RESOURCE_EXHAUSTED];

  std::cout << absl::StrFormat(
      "segkv-bench target=%s mix=%s inflight=%d channels=%d threads=%d "
      "duration=%.1fs ops=%d qps=%.0f keys_per_s=%.0f p50_us=%.1f "
      "p90_us=%.1f p99_us=%.1f p999_us=%.1f errors=%d\n",
      c.target_name, c.mix_text, c.inflight, c.channels, c.threads, seconds,
      s.ops, qps, keys_per_s, p50, p90, p99, p999, errors);
  // CPU per op in microseconds (per key for batches: keys == ops otherwise).
  auto per_key_us = [&](double cpu_s) {
    return cpu_s >= 0 && s.keys > 0 ? cpu_s * 1e6 / static_cast<double>(s.keys) : -1.0;
  };
  const double server_us = per_key_us(s.server_cpu_s);
  const double client_us = per_key_us(s.client_cpu_s);
  if (c.server_pid > 0) {
    if (s.keys > 0 && server_us < 0) {
      std::cerr << "segkv-bench: cannot read the CPU time of process " << c.server_pid << "\n";
    }
    if (s.keys > 0 && client_us < 0) std::cerr << "segkv-bench: cannot read its own CPU time\n";
    std::cout << absl::StrFormat(
        "segkv-bench cpu: server_pid=%d server_cpu_us_per_key=%.2f "
        "client_cpu_us_per_key=%.2f\n",
        c.server_pid, server_us, client_us);
  }
  if (errors > 0) {
    std::string by_code;
    for (int code = 1; code < kNumCodes; ++code) {
      if (s.errors_by_code[code] == 0) continue;
      absl::StrAppend(
          &by_code, " ",
          absl::StatusCodeToString(static_cast<absl::StatusCode>(code)), "=",
          s.errors_by_code[code]);
    }
    std::cerr << "segkv-bench: errors by code:" << by_code
              << "\nsegkv-bench: first error: " << s.first_error << "\n";
  }
  if (c.json) {
    std::cout << absl::StrFormat(
        "{\"target\":%s,\"mix\":%s,\"inflight\":%d,\"channels\":%d,"
        "\"threads\":%d,\"duration_s\":%.3f,\"ops\":%d,\"qps\":%.1f,"
        "\"keys_per_s\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
        "\"p99_us\":%.1f,\"p999_us\":%.1f,\"errors\":%d,"
        "\"resource_exhausted\":%d,\"server_cpu_us_per_key\":%.3f,"
        "\"client_cpu_us_per_key\":%.3f}\n",
        JsonString(c.target_name), JsonString(c.mix_text), c.inflight,
        c.channels, c.threads, seconds, s.ops, qps, keys_per_s, p50, p90, p99,
        p999, errors, exhausted, server_us, client_us);
  }
  std::cout.flush();

  const uint64_t attempted = s.ops + errors;
  if (attempted == 0) {
    std::cerr << "segkv-bench: no operation completed in the measured time\n";
    return kExitFailed;
  }
  return errors * 100 > attempted ? kExitFailed : 0;
}

// ---------------------------------------------------------------------------

int Run(const Config& c) {
  Workload workload(c);
  Connections conns(c, workload);
  if (absl::Status s = conns.Connect(absl::Seconds(10)); !s.ok()) {
    std::cerr << "segkv-bench: cannot connect to " << c.endpoint
              << " within 10s\n";
    return kExitFailed;
  }
  if (c.preload) {
    Stats p = Preload(c, workload, conns);
    if (p.errors() > 0) {
      std::cerr << "segkv-bench: preload failed (" << p.errors()
                << " errors): " << p.first_error << "\n";
      return kExitFailed;
    }
  }
  return Report(c, Measure(c, workload, conns));
}


int UsageError(absl::string_view message) {
  std::cerr << "segkv-bench: " << message << "\n";
  return kExitUsage;
}

}  // namespace
}  // namespace segkv::bench

int main(int argc, char** argv) {
  // --help lists this file's flags (the binary's name differs from it).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "segkv_bench.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  using segkv::bench::UsageError;
  absl::SetProgramUsageMessage(
      "segkv-bench [--target=segkv|noop|etcd] [--endpoint=HOST:PORT] "
      "[--mix=put:50,get:50] [--duration=10s] ...");
  if (absl::Status s = segkv::client::CheckFlags(argc, argv, "target"); !s.ok()) {
    return UsageError(s.message());
  }
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  // Same setting as segkvd: gRPC locks absl::Mutex on every call, and
  // Debian's absl has deadlock detection on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (positional.size() > 1) {
    return UsageError(absl::StrCat("unexpected argument: ", positional[1]));
  }
  absl::StatusOr<segkv::bench::Config> config = segkv::bench::ConfigFromFlags();
  if (!config.ok()) return UsageError(config.status().message());
  return segkv::bench::Run(*config);
}
