// segkvd in-process on 127.0.0.1:0 with real gRPC clients: every RPC, every
// error code, queue overflow, deadlines, compare-and-set under contention,
// restart, health checking and reflection.
#include "server/server.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "grpcpp/generic/generic_stub.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"

namespace segkv::server {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::StatusIs;
using ::testing::HasSubstr;

std::string TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/segkvd-XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

// Blocks a worker until released: lets tests fill a queue or outlive a
// deadline deterministically.
class Blocker : public worker::Request {
 public:
  void Run(worker::Partition&) override {
    running.Notify();
    release.WaitForNotification();
    done.Notify();
  }
  void Abort(const absl::Status&) override { done.Notify(); }
  absl::Notification running, release, done;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir();
    options_.listen = "127.0.0.1:0";
    options_.data_dir = dir_;
    options_.workers = 2;
    options_.partition.segment_size = 1 << 20;
    options_.partition.max_value_size = 64 << 10;
    options_.limits.max_value_size = 64 << 10;
    options_.limits.max_batch = 1000;
    StartServer();
  }
  void TearDown() override {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
    std::filesystem::remove_all(dir_);
  }
  void StartServer() {
    auto s = Server::Start(options_);
    ASSERT_THAT(s, IsOk());
    server_ = std::move(*s);
    client::ClientOptions co;
    co.endpoint = server_->address();
    client_ = std::make_unique<client::Client>(co);
  }
  void Restart() {
    client_.reset();
    server_->Shutdown(absl::Seconds(5));
    server_.reset();
    StartServer();
  }
  uint64_t TotalKeys() {
    auto st = client_->Status();
    EXPECT_THAT(st, IsOk());
    uint64_t keys = 0;
    for (const auto& p : st->partitions()) keys += p.keys();
    return keys;
  }

  std::string dir_;
  ServerOptions options_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(ServerTest, PutGetDelete) {
  auto put = client_->Put("alpha", "1");
  ASSERT_THAT(put, IsOk());
  EXPECT_GT(put->version(), 0u);
  EXPECT_FALSE(put->existed());
  auto get = client_->Get("alpha");
  ASSERT_THAT(get, IsOk());
  EXPECT_TRUE(get->found());
  EXPECT_EQ(get->value(), "1");
  EXPECT_EQ(get->version(), put->version());
  auto del = client_->Delete("alpha");
  ASSERT_THAT(del, IsOk());
  EXPECT_TRUE(del->existed());
  EXPECT_EQ(del->previous_version(), put->version());
  get = client_->Get("alpha");
  ASSERT_THAT(get, IsOk());
  EXPECT_FALSE(get->found());
}

TEST_F(ServerTest, MissingKeyIsFoundFalseNotAnError) {
  auto get = client_->Get("never-written");
  ASSERT_THAT(get, IsOk());
  EXPECT_FALSE(get->found());
  EXPECT_EQ(get->version(), 0u);
}

TEST_F(ServerTest, CompareAndSet) {
  auto create = client_->Put("k", "v1", 0);
  ASSERT_THAT(create, IsOk());
  auto again = client_->Put("k", "v2", 0);
  EXPECT_THAT(again, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(again.status().message(), HasSubstr(absl::StrCat("current ", create->version())));
  auto update = client_->Put("k", "v2", create->version());
  ASSERT_THAT(update, IsOk());
  v1::DeleteRequest del;
  del.set_key("k");
  del.set_expected_version(create->version());
  EXPECT_THAT(client_->Delete(del), StatusIs(absl::StatusCode::kFailedPrecondition));
  del.set_expected_version(update->version());
  EXPECT_THAT(client_->Delete(del), IsOk());
}

TEST_F(ServerTest, ReturnPrevious) {
  ASSERT_THAT(client_->Put("k", "old"), IsOk());
  v1::PutRequest req;
  req.set_key("k");
  req.set_value("new");
  req.set_return_previous(true);
  auto put = client_->Put(req);
  ASSERT_THAT(put, IsOk());
  EXPECT_TRUE(put->existed());
  EXPECT_EQ(put->previous_value(), "old");
}

TEST_F(ServerTest, BadKeysAndValuesAreInvalidArgumentAndWriteNothing) {
  EXPECT_THAT(client_->Put("", "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Get(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Delete(""), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::string long_key(4097, 'k');
  EXPECT_THAT(client_->Put(long_key, "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Get(long_key), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Put("k", std::string((64 << 10) + 1, 'v')),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Put(std::string(4096, 'k'), std::string(64 << 10, 'v')), IsOk());
  EXPECT_EQ(TotalKeys(), 1u);
  auto get = client_->Get("k");
  ASSERT_THAT(get, IsOk());
  EXPECT_FALSE(get->found());
}

TEST_F(ServerTest, BatchWriteReportsEveryOp) {
  v1::BatchWriteRequest req;
  for (int i = 0; i < 50; ++i) {
    auto* put = req.add_ops()->mutable_put();
    put->set_key(absl::StrCat("key", i));
    put->set_value(absl::StrCat("value", i));
  }
  req.add_ops()->mutable_put()->set_key("");                    // 50: invalid
  req.add_ops();                                                // 51: empty op
  auto* cas = req.add_ops()->mutable_put();                     // 52: CAS fails
  cas->set_key("key1");
  cas->set_expected_version(999999);
  req.add_ops()->mutable_delete_()->set_key("key2");            // 53
  auto resp = client_->BatchWrite(req);
  ASSERT_THAT(resp, IsOk());
  ASSERT_EQ(resp->results_size(), 54);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(resp->results(i).status().code(), 0) << i;
    EXPECT_GT(resp->results(i).version(), 0u);
  }
  EXPECT_EQ(resp->results(50).status().code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(resp->results(51).status().code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(resp->results(52).status().code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(resp->results(52).previous_version(), resp->results(1).version());
  EXPECT_EQ(resp->results(53).status().code(), 0);
  EXPECT_TRUE(resp->results(53).existed());

  v1::BatchGetRequest get;
  for (int i = 0; i < 50; ++i) get.add_keys(absl::StrCat("key", i));
  get.add_keys("missing");
  auto got = client_->BatchGet(get);
  ASSERT_THAT(got, IsOk());
  ASSERT_EQ(got->results_size(), 51);
  for (int i = 0; i < 50; ++i) {
    if (i == 2) {
      EXPECT_FALSE(got->results(i).found());
    } else {
      EXPECT_EQ(got->results(i).value(), absl::StrCat("value", i)) << i;
      EXPECT_EQ(got->results(i).version(), resp->results(i).version());
    }
  }
  EXPECT_FALSE(got->results(50).found());
  EXPECT_EQ(TotalKeys(), 49u);
}

TEST_F(ServerTest, OversizedBatchesAreInvalidArgument) {
  v1::BatchWriteRequest w;
  v1::BatchGetRequest g;
  for (int i = 0; i < 1001; ++i) {
    auto* put = w.add_ops()->mutable_put();
    put->set_key(absl::StrCat("k", i));
    g.add_keys(absl::StrCat("k", i));
  }
  EXPECT_THAT(client_->BatchWrite(w), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->BatchGet(g), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::BatchGetRequest bad;
  bad.add_keys("");
  EXPECT_THAT(client_->BatchGet(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(TotalKeys(), 0u);
}

std::map<std::string, std::string> ScanAll(client::Client& c, const std::string& prefix,
                                           uint32_t limit) {
  std::map<std::string, std::string> seen;
  v1::ScanRequest req;
  req.set_prefix(prefix);
  req.set_limit(limit);
  for (int rpcs = 0; rpcs < 10000; ++rpcs) {
    auto resp = c.Scan(req);
    EXPECT_THAT(resp, IsOk());
    if (!resp.ok()) break;
    EXPECT_LE(resp->items_size(), static_cast<int>(limit));
    for (const auto& kv : resp->items()) {
      EXPECT_TRUE(seen.emplace(kv.key(), kv.value()).second) << "twice: " << kv.key();
    }
    if (resp->next_cursor().empty()) break;
    req.set_cursor(resp->next_cursor());
  }
  return seen;
}

TEST_F(ServerTest, ScanVisitsEveryLiveKeyOnceAcrossPartitions) {
  std::map<std::string, std::string> all, users;
  v1::BatchWriteRequest req;
  for (int i = 0; i < 500; ++i) {
    const std::string key = absl::StrCat(i % 2 ? "user/" : "item/", i);
    auto* put = req.add_ops()->mutable_put();
    put->set_key(key);
    put->set_value(absl::StrCat(i));
    all[key] = absl::StrCat(i);
    if (i % 2) users[key] = absl::StrCat(i);
  }
  ASSERT_THAT(client_->BatchWrite(req), IsOk());
  ASSERT_THAT(client_->Delete("item/0"), IsOk());
  all.erase("item/0");
  EXPECT_EQ(ScanAll(*client_, "", 37), all);
  EXPECT_EQ(ScanAll(*client_, "user/", 1000), users);
}

TEST_F(ServerTest, MalformedScanCursorIsInvalidArgument) {
  v1::ScanRequest req;
  req.set_cursor("garbage");
  EXPECT_THAT(client_->Scan(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.set_cursor(std::string("\x01\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 13));
  EXPECT_THAT(client_->Scan(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.clear_cursor();
  req.set_limit(10001);
  EXPECT_THAT(client_->Scan(req), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ServerTest, AdminStatusSyncAndSegments) {
  for (int i = 0; i < 100; ++i) ASSERT_THAT(client_->Put(absl::StrCat("k", i), "v"), IsOk());
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  ASSERT_EQ(st->partitions_size(), 2);
  uint64_t keys = 0;
  for (const auto& p : st->partitions()) {
    keys += p.keys();
    EXPECT_EQ(p.durability(), "always");
    EXPECT_GE(p.segments(), 1u);
    EXPECT_GT(p.live_bytes(), 0u);
    EXPECT_TRUE(p.error().empty());
  }
  EXPECT_EQ(keys, 100u);
  EXPECT_THAT(client_->Sync(), IsOk());
  auto segs = client_->ListSegments();
  ASSERT_THAT(segs, IsOk());
  ASSERT_GE(segs->segments_size(), 2);
  EXPECT_EQ(segs->segments(0).partition(), 0u);
  EXPECT_FALSE(segs->segments(0).sealed());
  EXPECT_GT(segs->segments(0).end_address(), segs->segments(0).first_address());
  auto one = client_->ListSegments(1);
  ASSERT_THAT(one, IsOk());
  for (const auto& s : one->segments()) EXPECT_EQ(s.partition(), 1u);
  EXPECT_THAT(client_->ListSegments(7), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ServerTest, FullQueueIsResourceExhaustedAndServerKeepsServing) {
  // One worker with a queue of two.
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  server_.reset();
  options_.workers = 1;
  std::filesystem::remove_all(dir_);
  options_.queue_depth = 2;
  StartServer();

  auto* blocker = new Blocker;  // owned here; Run() does not delete it
  std::unique_ptr<Blocker> owned(blocker);
  ASSERT_TRUE(server_->frontend().worker(0)->Submit(blocker));
  blocker->running.WaitForNotification();
  // The worker is busy: two requests fill its queue, the third is refused.
  std::vector<std::thread> queued;
  std::atomic<int> queued_ok{0};
  for (int i = 0; i < 2; ++i) {
    queued.emplace_back([&, i] {
      if (client_->Put(absl::StrCat("queued", i), "v").ok()) ++queued_ok;
    });
  }
  while (server_->frontend().worker(0)->queue_depth() < 2) std::this_thread::yield();
  EXPECT_THAT(client_->Put("refused", "v"), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(client_->Get("refused"), StatusIs(absl::StatusCode::kResourceExhausted));
  // A batch reports the refusal per op; an Admin fan-out fails whole.
  v1::BatchWriteRequest batch;
  auto* put = batch.add_ops()->mutable_put();
  put->set_key("refused");
  put->set_value("v");
  auto batch_resp = client_->BatchWrite(batch);
  ASSERT_THAT(batch_resp, IsOk());
  EXPECT_EQ(batch_resp->results(0).status().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(client_->Status(), StatusIs(absl::StatusCode::kResourceExhausted));
  blocker->release.Notify();
  for (auto& t : queued) t.join();
  EXPECT_EQ(queued_ok.load(), 2);
  ASSERT_THAT(client_->Put("after", "v"), IsOk());
  auto get = client_->Get("refused");
  ASSERT_THAT(get, IsOk());
  EXPECT_FALSE(get->found());
}

TEST_F(ServerTest, ExpiredDeadlineIsDeadlineExceededAndNotApplied) {
  auto blocker = std::make_unique<Blocker>();
  auto* worker = server_->frontend().worker(server_->frontend().PartitionOf("late"));
  ASSERT_TRUE(worker->Submit(blocker.get()));
  blocker->running.WaitForNotification();
  client::Client impatient(client_->channel(), absl::Milliseconds(50));
  std::thread put([&] {
    EXPECT_THAT(impatient.Put("late", "v"), StatusIs(absl::StatusCode::kDeadlineExceeded));
  });
  // The server's deadline is its receipt time plus the timeout the client
  // sent (at most 50 ms), so it has passed 50 ms after the request is seen
  // queued, however late the server read it. Only then free the worker.
  while (worker->queue_depth() < 1) std::this_thread::yield();
  const absl::Time queued_by = absl::Now();
  put.join();
  absl::SleepFor(queued_by + absl::Milliseconds(60) - absl::Now());
  blocker->release.Notify();
  blocker->done.WaitForNotification();
  // The worker meets the request after its deadline and does not apply it.
  auto get = client_->Get("late");
  ASSERT_THAT(get, IsOk());
  EXPECT_FALSE(get->found());
}

TEST_F(ServerTest, ConcurrentCompareAndSetLosesNoUpdate) {
  ASSERT_THAT(client_->Put("counter", "0"), IsOk());
  constexpr int kThreads = 8, kIncrements = 50;
  std::vector<std::thread> threads;
  std::atomic<int> conflicts{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements;) {
        auto cur = client_->Get("counter");
        ASSERT_THAT(cur, IsOk());
        const int n = std::stoi(cur->value());
        auto put = client_->Put("counter", std::to_string(n + 1), cur->version());
        if (put.ok()) {
          ++i;
        } else {
          ASSERT_THAT(put, StatusIs(absl::StatusCode::kFailedPrecondition));
          ++conflicts;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  auto final_value = client_->Get("counter");
  ASSERT_THAT(final_value, IsOk());
  EXPECT_EQ(final_value->value(), std::to_string(kThreads * kIncrements));
  EXPECT_GT(conflicts.load(), 0);  // there was contention to survive
}

TEST_F(ServerTest, RestartKeepsData) {
  v1::BatchWriteRequest req;
  for (int i = 0; i < 300; ++i) {
    auto* put = req.add_ops()->mutable_put();
    put->set_key(absl::StrCat("k", i));
    put->set_value(absl::StrCat("v", i));
  }
  ASSERT_THAT(client_->BatchWrite(req), IsOk());
  ASSERT_THAT(client_->Delete("k7"), IsOk());
  Restart();
  for (int i = 0; i < 300; ++i) {
    auto get = client_->Get(absl::StrCat("k", i));
    ASSERT_THAT(get, IsOk());
    EXPECT_EQ(get->found(), i != 7) << i;
    if (i != 7) {
      EXPECT_EQ(get->value(), absl::StrCat("v", i));
    }
  }
}

TEST_F(ServerTest, OtherPartitionCountIsFailedPrecondition) {
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  server_.reset();
  options_.workers = 3;
  auto s = Server::Start(options_);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(s.status().message(), HasSubstr("--workers=2"));
  options_.workers = 2;
  StartServer();
}

TEST_F(ServerTest, MessageLimitBelowValueLimitIsInvalidArgument) {
  ServerOptions o = options_;
  o.data_dir = dir_ + "-other";
  o.max_message_bytes = 32 << 10;  // below the 64 KiB value limit
  EXPECT_THAT(Server::Start(o), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ServerTest, AfterShutdownStartsRequestsAreUnavailable) {
  server_->frontend().StopAccepting();
  EXPECT_THAT(client_->Put("k", "v"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(client_->Get("k"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(client_->Status(), StatusIs(absl::StatusCode::kUnavailable));
}

// A raw unary call through the generic stub, for services whose client code
// is not generated here (health checking).
absl::StatusOr<std::string> RawUnary(const std::shared_ptr<grpc::Channel>& ch,
                                     const std::string& method, const std::string& request) {
  grpc::GenericStub stub(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1), resp;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp,
                 [&](grpc::Status s) {
                   status = s;
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return client::FromGrpc(status);
  std::vector<grpc::Slice> slices;
  resp.Dump(&slices).IgnoreError();
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

TEST_F(ServerTest, HealthCheckSaysServing) {
  // HealthCheckResponse{status: SERVING} is field 1, varint 1: 08 01.
  auto resp = RawUnary(client_->channel(), "/grpc.health.v1.Health/Check", "");
  ASSERT_THAT(resp, IsOk());
  EXPECT_EQ(*resp, std::string("\x08\x01", 2));
}

// A reflection request as grpcurl sends it: ServerReflectionRequest with
// list_services (field 7) or file_containing_symbol (field 4).
std::string ReflectionRequest(int field, const std::string& value) {
  std::string r;
  r.push_back(static_cast<char>((field << 3) | 2));
  r.push_back(static_cast<char>(value.size()));
  return r + value;
}

absl::StatusOr<std::string> ReflectionCall(const std::shared_ptr<grpc::Channel>& ch,
                                           const std::string& request) {
  grpc::GenericStub stub(ch);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  auto step = [&](intptr_t t) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), t);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  step(1);
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1), resp;
  call->Write(req, reinterpret_cast<void*>(2));
  step(2);
  call->Read(&resp, reinterpret_cast<void*>(3));
  const bool got = step(3);
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  if (!got) return client::FromGrpc(status);
  std::vector<grpc::Slice> slices;
  resp.Dump(&slices).IgnoreError();
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

TEST_F(ServerTest, ReflectionListsAndDescribesServices) {
  auto list = ReflectionCall(client_->channel(), ReflectionRequest(7, "*"));
  ASSERT_THAT(list, IsOk());
  EXPECT_THAT(*list, HasSubstr("segkv.v1.KV"));
  EXPECT_THAT(*list, HasSubstr("segkv.v1.Admin"));
  EXPECT_THAT(*list, HasSubstr("grpc.health.v1.Health"));
  auto file = ReflectionCall(client_->channel(), ReflectionRequest(4, "segkv.v1.KV"));
  ASSERT_THAT(file, IsOk());
  EXPECT_THAT(*file, HasSubstr("segkv/v1/kv.proto"));
  EXPECT_THAT(*file, HasSubstr("PutRequest"));
}

}  // namespace
}  // namespace segkv::server
