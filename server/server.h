// segkvd as a library: opens the data directory, starts one worker per
// partition (each recovers its partition), and serves segkv.v1.KV,
// segkv.v1.Admin, grpc.health.v1 and server reflection on one port.
// Tests run it in-process on 127.0.0.1:0; segkvd's main() only parses flags
// and calls this.
#ifndef SEGKV_SERVER_SERVER_H_
#define SEGKV_SERVER_SERVER_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/admin_service.h"
#include "server/data_dir.h"
#include "server/kv_service.h"
#include "worker/worker.h"

namespace segkv::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:7379";  // host:port; port 0 picks one
  std::string data_dir = "segkv-data";
  // Partitions, fixed per data dir. 0: an existing dir's count, or
  // UsableCpus() (server/cpus.h) for a new one.
  int workers = 0;
  bool pin_workers = false;
  // Template for every partition (dir and partition_id are filled in).
  worker::PartitionOptions partition;
  size_t queue_depth = 4096;  // requests per worker queue
  ServiceLimits limits;
  int max_message_bytes = 64 << 20;
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // Shutdown() first reports NOT_SERVING on grpc.health.v1 and keeps
  // serving for this long, so load balancers and readiness probes see the
  // server go before it stops accepting.
  absl::Duration lame_duck = absl::ZeroDuration();
  // Tests: called by Shutdown() once gRPC has stopped (every call
  // answered or cancelled), before the workers drain and close.
  std::function<void()> on_grpc_stopped;
};

class Server {
 public:
  // Starts serving; returns when every partition is open and the port is
  // listening. Errors: bad options (INVALID_ARGUMENT), another partition
  // count or a data dir another server holds (FAILED_PRECONDITION),
  // recovery errors (DATA_LOSS...), or UNAVAILABLE if the port cannot be
  // bound (also when another process listens on it).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();  // Shutdown(0), without a lame duck, if still running.

  int port() const { return port_; }
  std::string address() const;

  // Graceful stop: health goes NOT_SERVING, requests are still served for
  // options.lame_duck (or until EndLameDuck()), then new requests get
  // UNAVAILABLE, in-flight ones finish (cancelled after `grace`), every
  // queue is drained and every partition synced and closed. Idempotent.
  void Shutdown(absl::Duration grace);
  // After Shutdown(): OK if every partition closed cleanly (synced);
  // otherwise the first partition's error (every one is logged).
  absl::Status close_status() const { return close_status_; }
  // Ends a lame-duck wait in progress (or the next one) at once. Any
  // thread, any number of times.
  void EndLameDuck() {
    std::call_once(end_lame_duck_once_, [this] { lame_duck_over_.Notify(); });
  }

  Frontend& frontend() { return *frontend_; }

  // Returns once every file the partitions have dropped so far (compacted
  // segments, retired checkpoints) is unlinked: the workers hand unlinks
  // to a helper thread. For tests that look at the data directory.
  void FlushRemovals();

 private:
  Server() = default;

  ServerOptions options_;
  std::unique_ptr<DataDirLock> lock_;  // released once the workers have closed
  std::vector<std::unique_ptr<worker::Worker>> workers_;
  std::unique_ptr<Frontend> frontend_;
  std::unique_ptr<KvService> kv_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> grpc_;
  int port_ = 0;
  bool stopped_ = true;  // until Start() succeeds
  absl::Status close_status_;
  absl::Notification lame_duck_over_;
  std::once_flag end_lame_duck_once_;
};

}  // namespace segkv::server

#endif  // SEGKV_SERVER_SERVER_H_
