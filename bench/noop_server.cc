// segkv-noop-server: serves segkv.v1.KV and does no work, so segkv-bench
// can measure the gRPC stack alone (the floor under segkvd's latency).
// Responses are shaped like segkvd's (one result per op/key) so their sizes
// are comparable; nothing is stored.
//
// Prints "segkv-noop-server listening on HOST:PORT" once serving; exits 0 on
// SIGTERM or SIGINT.

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "segkv/v1/kv.grpc.pb.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "address to serve on (port 0 picks a free port)");
ABSL_FLAG(int, max_message_bytes, 64 << 20,
          "largest request or response message, bytes");
ABSL_FLAG(int, value_size, 100,
          "bytes of the constant value every Get/BatchGet answers with, so "
          "responses are as large as a real server's");

namespace segkv::bench {
namespace {

// Every handler answers at once on the gRPC thread that received the call,
// with responses shaped like a real server's (a Get finds a constant value
// of --value_size bytes; a Put reports a version) but no work behind them.
class NoopKvService final : public v1::KV::CallbackService {
 public:
  explicit NoopKvService(std::string value) : value_(std::move(value)) {}

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx,
                                const v1::PutRequest* req,
                                v1::PutResponse* resp) override {
    resp->set_version(1);
    return Done(ctx);
  }
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const v1::GetRequest* req,
                                v1::GetResponse* resp) override {
    resp->set_found(true);
    resp->set_version(1);
    resp->set_value(value_);
    return Done(ctx);
  }
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx,
                                   const v1::DeleteRequest* req,
                                   v1::DeleteResponse* resp) override {
    return Done(ctx);
  }
  grpc::ServerUnaryReactor* BatchGet(grpc::CallbackServerContext* ctx,
                                     const v1::BatchGetRequest* req,
                                     v1::BatchGetResponse* resp) override {
    resp->mutable_results()->Reserve(req->keys_size());
    for (int i = 0; i < req->keys_size(); ++i) {
      v1::GetResponse* r = resp->add_results();
      r->set_found(true);
      r->set_version(1);
      r->set_value(value_);
    }
    return Done(ctx);
  }
  grpc::ServerUnaryReactor* BatchWrite(grpc::CallbackServerContext* ctx,
                                       const v1::BatchWriteRequest* req,
                                       v1::BatchWriteResponse* resp) override {
    resp->mutable_results()->Reserve(req->ops_size());
    for (int i = 0; i < req->ops_size(); ++i) resp->add_results()->set_version(1);
    return Done(ctx);
  }
  grpc::ServerUnaryReactor* Scan(grpc::CallbackServerContext* ctx,
                                 const v1::ScanRequest* req,
                                 v1::ScanResponse* resp) override {
    return Done(ctx);
  }

 private:
  static grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx) {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

  const std::string value_;
};

// The host part of "host:port" or "[v6]:port".
std::string HostOf(absl::string_view address) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return std::string(address);
  return std::string(address.substr(0, colon));
}

// Serves until SIGTERM or SIGINT. Returns the process exit status.
int Serve(const std::string& listen, int max_message_bytes) {
  // Blocked before gRPC starts its threads, so they inherit the mask and
  // only sigwait below sees the signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  NoopKvService service(std::string(absl::GetFlag(FLAGS_value_size), 'v'));
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "segkv-noop-server: cannot listen on " << listen << "\n";
    return 1;
  }
  std::cout << "segkv-noop-server listening on " << HostOf(listen) << ":"
            << port << std::endl;

  int sig = 0;
  sigwait(&signals, &sig);
  server->Shutdown();
  return 0;
}

}  // namespace
}  // namespace segkv::bench

int main(int argc, char** argv) {
  // --help lists this file's flags (the binary's name differs from it).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "noop_server.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "segkv-noop-server [--listen=127.0.0.1:0] [--max_message_bytes=N]");
  absl::ParseCommandLine(argc, argv);
  // Same setting as segkvd: gRPC locks absl::Mutex on every call, and
  // Debian's absl has deadlock detection on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  const int max_message = absl::GetFlag(FLAGS_max_message_bytes);
  const int value_size = absl::GetFlag(FLAGS_value_size);
  if (max_message < 4096 || value_size < 0 || value_size > max_message / 2) {
    std::cerr << "segkv-noop-server: --max_message_bytes must be >= 4096 and "
                 "--value_size in [0, --max_message_bytes / 2]\n";
    return 2;
  }
  return segkv::bench::Serve(absl::GetFlag(FLAGS_listen),
                             absl::GetFlag(FLAGS_max_message_bytes));
}
