#include "server/server.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/cpus.h"
#include "server/data_dir.h"
#include "util/deadline.h"

namespace segkv::server {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  std::unique_ptr<Server> s(new Server());
  s->options_ = options;
  if (options.workers < 0 || options.workers > 1024) {
    return absl::InvalidArgumentError("--workers must be between 0 and 1024");
  }
  // gRPC takes these as int milliseconds; 0, negative or infinite ones
  // would wrap to a ping every millisecond.
  const absl::Duration kMaxKeepalive = absl::Hours(24 * 20);
  if (options.keepalive_time < absl::Seconds(1) || options.keepalive_time > kMaxKeepalive ||
      options.keepalive_timeout < absl::Seconds(1) ||
      options.keepalive_timeout > kMaxKeepalive) {
    return absl::InvalidArgumentError(
        "keepalive time and timeout must be between 1s and 480h");
  }
  if (options.lame_duck < absl::ZeroDuration() || options.lame_duck > absl::Hours(24)) {
    return absl::InvalidArgumentError("--lame_duck must be between 0 and 24h");
  }
  // Before the data dir is touched: a new one records its partition count.
  if (absl::Status s = worker::ValidatePartitionOptions(options.partition); !s.ok()) {
    return s;
  }
  // A new data dir's partitions take --segment_size; existing ones keep
  // their own, so a flag that no longer fits them is no reason to refuse.
  {
    worker::FileSystem* fs = options.partition.fs != nullptr ? options.partition.fs
                                                             : worker::DefaultFileSystem();
    auto exists = DataDirExists(fs, options.data_dir);
    if (!exists.ok()) return exists.status();
    if (!*exists) {
      if (absl::Status s = worker::CheckSegmentSize(options.partition.segment_size,
                                                    options.partition.max_value_size);
          !s.ok()) {
        return s;
      }
    }
  }
  // Each slot is 16 bytes, allocated up front (rounded up to a power of two).
  constexpr size_t kMaxQueueDepth = size_t{1} << 24;
  if (options.queue_depth == 0 || options.queue_depth > kMaxQueueDepth) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--queue_depth must be between 1 and ", kMaxQueueDepth, " (is ",
        options.queue_depth, ")"));
  }
  // A Put of the largest value must fit in one gRPC message.
  const uint64_t largest_put = options.limits.max_value_size + 2 * 4096;
  if (options.max_message_bytes <= 0 ||
      static_cast<uint64_t>(options.max_message_bytes) < largest_put) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_bytes (", options.max_message_bytes,
        ") must be at least --max_value_size + 8 KiB (", largest_put, ")"));
  }

  worker::FileSystem* fs = options.partition.fs != nullptr ? options.partition.fs
                                                           : worker::DefaultFileSystem();
  // --workers=0: the data dir's own count, or one per usable CPU for a new
  // one. The directory lock only means something on the real file system.
  auto opened_dir = OpenDataDir(fs, options.data_dir, static_cast<uint32_t>(options.workers),
                                static_cast<uint32_t>(UsableCpus()),
                                options.partition.fs == nullptr ? &s->lock_ : nullptr);
  if (!opened_dir.ok()) return opened_dir.status();
  const int n = static_cast<int>(*opened_dir);
  const std::vector<int> cpus = AllowedCpus();

  // Workers open (recover) their partitions in parallel.
  std::vector<absl::Status> opened(n);
  std::vector<std::thread> openers;
  for (int p = 0; p < n; ++p) {
    worker::WorkerOptions wo;
    wo.partition = options.partition;
    wo.partition.dir = PartitionDir(options.data_dir, p);
    wo.partition.partition_id = p;
    // Unlinking a compacted segment must not stall the worker.
    wo.partition.remove_in_background = true;
    wo.queue_capacity = options.queue_depth;
    // Pinned: worker p on the p-th CPU this process may use (round robin).
    wo.cpu = options.pin_workers ? cpus[p % cpus.size()] : -1;
    s->workers_.push_back(std::make_unique<worker::Worker>(wo));
  }
  for (int p = 0; p < n; ++p) {
    openers.emplace_back([&, p] { opened[p] = s->workers_[p]->Start(); });
  }
  for (auto& t : openers) t.join();
  for (int p = 0; p < n; ++p) {
    if (!opened[p].ok()) {
      return absl::Status(opened[p].code(),
                          absl::StrCat("partition ", p, ": ", opened[p].message()));
    }
  }

  std::vector<worker::Worker*> raw;
  for (auto& w : s->workers_) raw.push_back(w.get());
  ServiceLimits limits = options.limits;
  limits.max_response_bytes = static_cast<uint64_t>(options.max_message_bytes);
  s->frontend_ = std::make_unique<Frontend>(raw, limits);
  s->kv_ = std::make_unique<KvService>(s->frontend_.get());
  s->admin_ = std::make_unique<AdminService>(s->frontend_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->kv_.get());
  builder.RegisterService(s->admin_.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  // gRPC sets SO_REUSEPORT by default: a second server on the same port
  // would start, and the kernel would split clients between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  s->grpc_ = builder.BuildAndStart();
  if (s->grpc_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  s->stopped_ = false;
  s->grpc_->GetHealthCheckService()->SetServingStatus(true);
  LOG(INFO) << "serving " << n << " partitions from " << options.data_dir << " on port "
            << s->port_ << " (durability " << worker::DurabilityName(options.partition.durability)
            << ")";
  return s;
}

void Server::FlushRemovals() {
  class Flush : public worker::Request {
   public:
    explicit Flush(absl::BlockingCounter* done) : done_(done) {}
    void Run(worker::Partition& p) override {
      p.FlushRemovals();
      done_->DecrementCount();
      delete this;
    }
    void Abort(const absl::Status&) override {
      done_->DecrementCount();
      delete this;
    }

   private:
    absl::BlockingCounter* const done_;
  };
  absl::BlockingCounter done(static_cast<int>(workers_.size()));
  for (auto& w : workers_) {
    auto* f = new Flush(&done);
    while (!w->Submit(f)) std::this_thread::yield();  // a full queue drains
  }
  done.Wait();
}

std::string Server::address() const {
  const std::string& l = options_.listen;
  const size_t colon = l.rfind(':');
  return absl::StrCat(colon == std::string::npos ? l : l.substr(0, colon), ":", port_);
}

void Server::Shutdown(absl::Duration grace) {
  if (stopped_) return;
  stopped_ = true;
  grpc_->GetHealthCheckService()->SetServingStatus(false);
  if (options_.lame_duck > absl::ZeroDuration()) {
    LOG(INFO) << "health NOT_SERVING; serving on for " << options_.lame_duck << " (lame duck)";
    lame_duck_over_.WaitForNotificationWithTimeout(options_.lame_duck);
  }
  frontend_->StopAccepting();
  // Waits for in-flight RPCs; the workers are still running and finish
  // them. After `grace` the remaining ones are cancelled.
  grpc_->Shutdown(DeadlineAfter(grace));
  grpc_->Wait();
  if (options_.on_grpc_stopped) options_.on_grpc_stopped();
  // Every worker drains, syncs and closes (a checkpoint each, by default)
  // at once; no request is left to pass between them.
  for (auto& w : workers_) w->RequestStop();
  for (auto& w : workers_) {
    w->Stop();
    if (!w->close_status().ok() && close_status_.ok()) {
      close_status_ = absl::Status(w->close_status().code(),
                                   absl::StrCat("partition ", w->id(), ": ",
                                                w->close_status().message()));
    }
  }
  lock_.reset();  // every partition is closed: another server may open it
  LOG(INFO) << "segkvd stopped";
}

Server::~Server() {
  EndLameDuck();
  if (!stopped_) Shutdown(absl::ZeroDuration());
}

}  // namespace segkv::server
