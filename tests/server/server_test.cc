// segkvd in-process on 127.0.0.1:0 with real gRPC clients: every RPC, every
// error code, queue overflow, deadlines, compare-and-set under contention,
// restart, checkpoints (Admin.Checkpoint, recovery from them) and compaction
// (Admin.Compact, dead ratios), health checking and reflection.
#include "server/server.h"
#include "server/cpus.h"

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "grpcpp/generic/generic_stub.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "util/deadline.h"
#include "worker/format.h"
#include "worker/mem_fs.h"

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

// A client of `server` with the default timeout.
client::Client ClientFor(const Server& server) {
  client::ClientOptions co;
  co.endpoint = server.address();
  return client::Client(co);
}

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
    if (server_ != nullptr) {
      server_->EndLameDuck();  // a test that failed midway does not hang
      server_->Shutdown(absl::Seconds(5));
    }
    std::filesystem::remove_all(dir_);
  }
  // The fixture's options with `workers` partitions on the in-memory file
  // system `fs` (its root created here).
  ServerOptions OnMemFs(worker::MemFileSystem* fs, int workers) {
    EXPECT_THAT(fs->CreateDir("/"), IsOk());
    ServerOptions o = options_;
    o.workers = workers;
    o.data_dir = "/mem";
    o.partition.fs = fs;
    return o;
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
  // Stops the server, wipes the data directory and starts afresh with
  // options_ (a partition keeps the segment size it was created with).
  void StartFresh() {
    client_.reset();
    server_->Shutdown(absl::Seconds(5));
    server_.reset();
    std::filesystem::remove_all(dir_);
    StartServer();
  }
  // The timeout of the calls the deadline tests let expire in a queue:
  // long enough for a loaded machine to get them there.
  static constexpr absl::Duration kImpatient = absl::Milliseconds(500);
  // A client for those calls, on the fixture's channel, connected first so
  // the timeout is not spent connecting.
  client::Client Impatient() {
    EXPECT_TRUE(client_->channel()->WaitForConnected(
        std::chrono::system_clock::now() + std::chrono::seconds(30)));
    return client::Client(client_->channel(), kImpatient);
  }
  // Calls sent with the kImpatient timeout and seen queued by `queued_by`
  // have a server deadline of at most `queued_by` + kImpatient (receipt +
  // the timeout the client sent): returns once that has passed.
  static void WaitPastTheirDeadline(absl::Time queued_by) {
    absl::SleepFor(queued_by + kImpatient + absl::Milliseconds(10) - absl::Now());
  }
  // Waits until `worker`'s queue holds `n` requests. False after a minute:
  // the caller frees the worker and its threads, then fails the test.
  static bool WaitForQueueDepth(worker::Worker* worker, size_t n) {
    const absl::Time limit = absl::Now() + absl::Seconds(60);
    while (worker->queue_depth() < n) {
      if (absl::Now() > limit) return false;
      std::this_thread::yield();
    }
    return true;
  }
  void ExpectMissing(const std::string& key) {
    auto get = client_->Get(key);
    ASSERT_THAT(get, IsOk()) << key;
    EXPECT_FALSE(get->found()) << key;
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
  // Delete returns the value it removes, and nothing for a missing key.
  v1::DeleteRequest del;
  del.set_key("k");
  del.set_return_previous(true);
  auto d = client_->Delete(del);
  ASSERT_THAT(d, IsOk());
  EXPECT_TRUE(d->existed());
  EXPECT_EQ(d->previous_value(), "new");
  EXPECT_EQ(d->previous_version(), put->version());
  EXPECT_GT(d->version(), put->version());
  d = client_->Delete(del);
  ASSERT_THAT(d, IsOk());
  EXPECT_FALSE(d->existed());
  EXPECT_EQ(d->previous_value(), "");
  EXPECT_EQ(d->version(), 0u);
}

TEST_F(ServerTest, BadKeysAndValuesAreInvalidArgumentAndWriteNothing) {
  EXPECT_THAT(client_->Put("", "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Get(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Delete(""), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::string long_key(4097, 'k');
  EXPECT_THAT(client_->Put(long_key, "v"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Get(long_key), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Delete(long_key), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::BatchGetRequest bad_get;
  bad_get.add_keys("fine");
  bad_get.add_keys(long_key);
  EXPECT_THAT(client_->BatchGet(bad_get), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Put("k", std::string((64 << 10) + 1, 'v')),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client_->Put("k", ""), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::BatchWriteRequest batch;
  batch.add_ops()->mutable_put()->set_key("k");  // empty value
  auto* too_long = batch.add_ops()->mutable_put();
  too_long->set_key(std::string(4097, 'k'));
  too_long->set_value("v");
  auto written = client_->BatchWrite(batch);
  ASSERT_THAT(written, IsOk());
  for (const auto& r : written->results()) {
    EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  }
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
  cas->set_value("v");
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

// Batch requests and responses live on a protobuf arena whose first block is
// 32 KiB; bigger messages grow it block by block.
TEST_F(ServerTest, MessagesBiggerThanTheArenaFirstBlockRoundTrip) {
  const auto value_of = [](int i) {
    return std::string(8 << 10, static_cast<char>('a' + i % 26)) + absl::StrCat(i);
  };
  v1::BatchWriteRequest w;
  v1::BatchGetRequest g;
  for (int i = 0; i < 400; ++i) {
    auto* put = w.add_ops()->mutable_put();
    put->set_key(absl::StrCat("big", i));
    put->set_value(value_of(i));
    g.add_keys(absl::StrCat("big", i));
  }
  auto written = client_->BatchWrite(w);
  ASSERT_THAT(written, IsOk());
  ASSERT_EQ(written->results_size(), 400);
  auto got = client_->BatchGet(g);
  ASSERT_THAT(got, IsOk());
  ASSERT_EQ(got->results_size(), 400);
  for (int i = 0; i < 400; ++i) {
    ASSERT_EQ(written->results(i).status().code(), 0) << i;
    ASSERT_TRUE(got->results(i).found()) << i;
    EXPECT_EQ(got->results(i).value(), value_of(i)) << i;
    EXPECT_EQ(got->results(i).version(), written->results(i).version()) << i;
  }
  const std::string big(60 << 10, 'x');
  v1::PutRequest put;
  put.set_key("unary");
  put.set_value(big);
  ASSERT_THAT(client_->Put(put), IsOk());
  put.set_value("small");
  put.set_return_previous(true);
  auto replaced = client_->Put(put);
  ASSERT_THAT(replaced, IsOk());
  EXPECT_EQ(replaced->previous_value(), big);
  auto now = client_->Get("unary");
  ASSERT_THAT(now, IsOk());
  EXPECT_EQ(now->value(), "small");
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

// Compaction moves live records to the log's tail, keeping their versions:
// a scan that has passed a record meets it again there. Every key is still
// returned, and a second copy carries the same version and value.
TEST_F(ServerTest, ScanDuringCompactionReturnsEveryKeyAndRepeatsOnlyMovedOnes) {
  const std::string value(1024, 'v');
  std::map<std::string, uint64_t> versions;  // key -> version written
  for (int round = 0; round < 3; ++round) {  // max_batch is 1000
    v1::BatchWriteRequest req;
    for (int i = round == 1 ? 1000 : 0; i < (round == 0 ? 1000 : 2000); ++i) {
      if (round == 2 && i % 10 != 0) continue;  // overwrite 10%: dead bytes
      auto* put = req.add_ops()->mutable_put();
      put->set_key(absl::StrCat("key/", i));
      put->set_value(value);
    }
    auto resp = client_->BatchWrite(req);
    ASSERT_THAT(resp, IsOk());
    for (int j = 0; j < req.ops_size(); ++j) {
      versions[req.ops(j).put().key()] = resp->results(j).version();
    }
  }
  std::map<std::string, int> times;
  int moved_again = 0;
  v1::ScanRequest req;
  req.set_limit(100);
  bool compacted = false;
  for (int rpcs = 0; rpcs < 10000; ++rpcs) {
    auto resp = client_->Scan(req);
    ASSERT_THAT(resp, IsOk());
    for (const auto& kv : resp->items()) {
      EXPECT_EQ(kv.version(), versions[kv.key()]) << kv.key();
      EXPECT_EQ(kv.value(), value);
      if (++times[kv.key()] > 1) ++moved_again;
    }
    if (!compacted && times.size() >= 300) {
      // Moves every live record of the sealed segments, including the ones
      // this scan has returned, to the tail.
      auto c = client_->Compact(0.01);
      ASSERT_THAT(c, IsOk());
      uint64_t relocated = 0;
      for (const auto& p : c->partitions()) relocated += p.records_relocated();
      ASSERT_GT(relocated, 0u);
      compacted = true;
    }
    if (resp->next_cursor().empty()) break;
    req.set_cursor(resp->next_cursor());
  }
  ASSERT_TRUE(compacted);
  EXPECT_EQ(times.size(), versions.size());  // every key, at least once
  EXPECT_GT(moved_again, 0);                 // the documented repeat happened
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
  req.set_limit(10);
  req.set_prefix(std::string(4097, 'p'));  // longer than any key
  EXPECT_THAT(client_->Scan(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.set_prefix(std::string(4096, 'p'));
  EXPECT_THAT(client_->Scan(req), IsOk());
}

// Ops on one key within a BatchWrite apply in request order: each
// compare-and-set sees the ops before it, a delete then a put starts the
// key afresh, and versions only grow.
TEST_F(ServerTest, BatchWriteOpsOnOneKeyApplyInOrder) {
  v1::BatchWriteRequest req;
  auto put = [&](const std::string& value, std::optional<uint64_t> expected, bool previous) {
    v1::PutRequest* p = req.add_ops()->mutable_put();
    p->set_key("k");
    p->set_value(value);
    if (expected.has_value()) p->set_expected_version(*expected);
    p->set_return_previous(previous);
  };
  auto del = [&](std::optional<uint64_t> expected, bool previous) {
    v1::DeleteRequest* d = req.add_ops()->mutable_delete_();
    d->set_key("k");
    if (expected.has_value()) d->set_expected_version(*expected);
    d->set_return_previous(previous);
  };
  put("a", 0, false);                 // 0: created
  put("b", 0, false);                 // 1: exists now: FAILED_PRECONDITION
  put("c", std::nullopt, true);       // 2: replaces a
  del(uint64_t{1} << 60, false);      // 3: wrong version
  del(std::nullopt, true);            // 4: deletes c
  del(std::nullopt, false);           // 5: nothing there
  put("d", 0, false);                 // 6: created again
  auto resp = client_->BatchWrite(req);
  ASSERT_THAT(resp, IsOk());
  ASSERT_EQ(resp->results_size(), 7);
  const auto& r = resp->results();
  const auto code = [&](int i) { return r[i].status().code(); };
  EXPECT_EQ(code(0), 0);
  EXPECT_FALSE(r[0].existed());
  EXPECT_EQ(r[0].previous_version(), 0u);
  const uint64_t v0 = r[0].version();
  EXPECT_GT(v0, 0u);
  EXPECT_EQ(code(1), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_EQ(r[1].version(), 0u);
  EXPECT_TRUE(r[1].existed());
  EXPECT_EQ(r[1].previous_version(), v0);
  EXPECT_EQ(code(2), 0);
  EXPECT_TRUE(r[2].existed());
  EXPECT_EQ(r[2].previous_version(), v0);
  EXPECT_EQ(r[2].previous_value(), "a");
  EXPECT_GT(r[2].version(), v0);
  EXPECT_EQ(code(3), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_EQ(r[3].version(), 0u);
  EXPECT_EQ(r[3].previous_version(), r[2].version());
  EXPECT_EQ(code(4), 0);
  EXPECT_TRUE(r[4].existed());
  EXPECT_EQ(r[4].previous_value(), "c");
  EXPECT_EQ(r[4].previous_version(), r[2].version());
  EXPECT_GT(r[4].version(), r[2].version());
  EXPECT_EQ(code(5), 0);
  EXPECT_FALSE(r[5].existed());
  EXPECT_EQ(r[5].version(), 0u);  // nothing existed: nothing written
  EXPECT_EQ(code(6), 0);
  EXPECT_FALSE(r[6].existed());
  EXPECT_EQ(r[6].previous_version(), 0u);
  EXPECT_GT(r[6].version(), r[4].version());
  auto got = client_->Get("k");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->value(), "d");
  EXPECT_EQ(got->version(), r[6].version());
  // The same after a restart (replay or checkpoint).
  Restart();
  got = client_->Get("k");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->value(), "d");
  EXPECT_EQ(got->version(), r[6].version());
}

// A cursor is 1 version byte, the partition (4 bytes LE) and the log
// address (8 bytes LE).
std::string Cursor(uint32_t partition, uint64_t address) {
  std::string c(13, '\0');
  c[0] = 1;
  for (int i = 0; i < 4; ++i) c[1 + i] = static_cast<char>(partition >> (8 * i));
  for (int i = 0; i < 8; ++i) c[5 + i] = static_cast<char>(address >> (8 * i));
  return c;
}

// Cursors the server did not hand out, but whose meaning the API defines:
// one at the start of a partition, one past a partition's tail (the next
// partition), one inside a record (INVALID_ARGUMENT).
TEST_F(ServerTest, ScanCursorsAtPartitionEdges) {
  std::set<std::string> in_p1;
  for (int i = 0; i < 50; ++i) {
    const std::string key = absl::StrCat("k", i);
    ASSERT_THAT(client_->Put(key, "v"), IsOk());
    if (server_->frontend().PartitionOf(key) == 1) in_p1.insert(key);
  }
  ASSERT_FALSE(in_p1.empty());
  ASSERT_LT(in_p1.size(), 50u);
  for (uint64_t address : {uint64_t{0}, uint64_t{1} << 40}) {
    SCOPED_TRACE(absl::StrCat("address ", address));
    v1::ScanRequest req;
    req.set_limit(1000);
    // (1, 0): partition 1 from its start; (0, past its tail): on to 1.
    req.set_cursor(address == 0 ? Cursor(1, 0) : Cursor(0, address));
    std::set<std::string> got;
    for (int rpcs = 0; rpcs < 100; ++rpcs) {
      auto page = client_->Scan(req);
      ASSERT_THAT(page, IsOk());
      for (const auto& kv : page->items()) got.insert(kv.key());
      if (page->next_cursor().empty()) break;
      req.set_cursor(page->next_cursor());
    }
    EXPECT_EQ(got, in_p1);
  }
  v1::ScanRequest inside;
  inside.set_cursor(Cursor(0, worker::format::kSegmentHeaderSize + 5));
  EXPECT_THAT(client_->Scan(inside), StatusIs(absl::StatusCode::kInvalidArgument));
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
  if (!WaitForQueueDepth(server_->frontend().worker(0), 2)) {
    blocker->release.Notify();
    for (auto& t : queued) t.join();
    GTEST_FAIL() << "the Puts never reached the worker's queue";
  }
  EXPECT_THAT(client_->Put("refused", "v"), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(client_->Get("refused"), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(client_->Delete("queued0"), StatusIs(absl::StatusCode::kResourceExhausted));
  v1::ScanRequest scan;
  EXPECT_THAT(client_->Scan(scan), StatusIs(absl::StatusCode::kResourceExhausted));
  // A BatchGet fails whole (its answer would have holes); a BatchWrite
  // reports the refusal per op.
  v1::BatchGetRequest batch_get;
  batch_get.add_keys("refused");
  EXPECT_THAT(client_->BatchGet(batch_get), StatusIs(absl::StatusCode::kResourceExhausted));
  // An Admin fan-out fails whole.
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
  client::Client impatient = Impatient();
  std::thread put([&] {
    EXPECT_THAT(impatient.Put("late", "v"), StatusIs(absl::StatusCode::kDeadlineExceeded));
  });
  // A batch whose ops all belong to the blocked partition.
  v1::BatchWriteRequest batch;
  for (int i = 0; batch.ops_size() < 2; ++i) {
    const std::string key = absl::StrCat("late-batch-", i);
    if (worker != server_->frontend().worker(server_->frontend().PartitionOf(key))) continue;
    auto* op = batch.add_ops()->mutable_put();
    op->set_key(key);
    op->set_value("v");
  }
  std::thread write([&] {
    EXPECT_THAT(impatient.BatchWrite(batch), StatusIs(absl::StatusCode::kDeadlineExceeded));
  });
  // The server's deadline is its receipt time plus the timeout the client
  // sent (at most kImpatient), so it has passed kImpatient after the
  // requests are seen queued, however late the server read them. Only then
  // free the worker.
  if (!WaitForQueueDepth(worker, 2)) {
    put.join();
    write.join();
    blocker->release.Notify();
    blocker->done.WaitForNotification();
    GTEST_FAIL() << "the calls never reached the worker's queue";
  }
  const absl::Time queued_by = absl::Now();
  put.join();
  write.join();
  WaitPastTheirDeadline(queued_by);
  blocker->release.Notify();
  blocker->done.WaitForNotification();
  // The worker meets the requests after their deadline and applies neither.
  ExpectMissing("late");
  for (const auto& op : batch.ops()) ExpectMissing(op.put().key());
}

// The worker checks deadlines against the clock after each read it runs,
// not only at the start of its batch: a request drained together with a
// slow read and expired while it ran is not executed.
TEST_F(ServerTest, ARequestBehindASlowReadIsCheckedWhenItsTurnComes) {
  auto first = std::make_unique<Blocker>();
  auto slow = std::make_unique<Blocker>();
  auto* worker = server_->frontend().worker(server_->frontend().PartitionOf("behind"));
  ASSERT_TRUE(worker->Submit(first.get()));
  first->running.WaitForNotification();
  ASSERT_TRUE(worker->Submit(slow.get()));
  client::Client impatient = Impatient();
  std::thread put([&] {
    EXPECT_THAT(impatient.Put("behind", "v"), StatusIs(absl::StatusCode::kDeadlineExceeded));
  });
  // Both wait in the queue, so the worker drains them as one batch.
  if (!WaitForQueueDepth(worker, 2)) {
    put.join();
    first->release.Notify();
    slow->release.Notify();
    slow->done.WaitForNotification();
    GTEST_FAIL() << "the Put never reached the worker's queue";
  }
  const absl::Time queued_by = absl::Now();
  first->release.Notify();
  slow->running.WaitForNotification();
  // The Put's deadline passes while `slow` runs.
  put.join();
  WaitPastTheirDeadline(queued_by);
  slow->release.Notify();
  slow->done.WaitForNotification();
  ExpectMissing("behind");
}

// A value written under larger limits than the server now runs with can be
// bigger than any response: every call that would carry it fails with a
// clear INVALID_ARGUMENT (never a response gRPC refuses to send), writes
// nothing, and Scan stops before it instead of getting stuck.
TEST_F(ServerTest, AValueNoResponseCanCarryIsAClearErrorAndChangesNothing) {
  ASSERT_THAT(client_->Put("a-small", "1"), IsOk());
  auto big = client_->Put("big", std::string(60 << 10, 'x'));
  ASSERT_THAT(big, IsOk());
  ASSERT_THAT(client_->Put("c-small", "3"), IsOk());
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  server_.reset();
  options_.limits.max_value_size = options_.partition.max_value_size = 4 << 10;
  options_.max_message_bytes = 16 << 10;
  StartServer();

  EXPECT_THAT(client_->Get("big"), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("--max_message_bytes")));
  v1::PutRequest put;
  put.set_key("big");
  put.set_value("y");
  put.set_return_previous(true);
  EXPECT_THAT(client_->Put(put), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::DeleteRequest del;
  del.set_key("big");
  del.set_return_previous(true);
  EXPECT_THAT(client_->Delete(del), StatusIs(absl::StatusCode::kInvalidArgument));

  // Nothing was written: a keys-only scan still sees the first version.
  std::map<std::string, uint64_t> versions;
  v1::ScanRequest scan;
  scan.set_keys_only(true);
  for (int i = 0; i < 100; ++i) {
    auto page = client_->Scan(scan);
    ASSERT_THAT(page, IsOk());
    for (const auto& kv : page->items()) versions[kv.key()] = kv.version();
    if (page->next_cursor().empty()) break;
    scan.set_cursor(page->next_cursor());
  }
  EXPECT_EQ(versions.size(), 3u);
  EXPECT_EQ(versions["big"], big->version());

  // With values, a scan returns what comes before the big value and stops
  // there with a cursor; the next call fails on it, and never skips it.
  scan.Clear();
  bool failed = false;
  std::set<std::string> seen;
  for (int i = 0; i < 100 && !failed; ++i) {
    auto page = client_->Scan(scan);
    if (!page.ok()) {
      EXPECT_THAT(page, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keys_only")));
      failed = true;
      break;
    }
    for (const auto& kv : page->items()) seen.insert(kv.key());
    ASSERT_FALSE(page->next_cursor().empty()) << "the scan passed the big value";
    scan.set_cursor(page->next_cursor());
  }
  EXPECT_TRUE(failed);
  EXPECT_EQ(seen.count("big"), 0u);

  // Raising the limit again makes everything readable; the value is intact.
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  server_.reset();
  options_.limits.max_value_size = options_.partition.max_value_size = 64 << 10;
  options_.max_message_bytes = 1 << 20;
  StartServer();
  auto get = client_->Get("big");
  ASSERT_THAT(get, IsOk());
  EXPECT_EQ(get->value(), std::string(60 << 10, 'x'));
  EXPECT_EQ(get->version(), big->version());
}

// Options that would hang, crash, or make gRPC ping every millisecond are
// refused before the data dir is touched (a new one records its partition
// count, so a refused first start must not fix it).
TEST_F(ServerTest, BadOptionsAreRefusedBeforeTheDataDirIsTouched) {
  std::vector<std::function<void(ServerOptions&)>> bad = {
      [](ServerOptions& o) { o.workers = 3, o.partition.segment_size = 100; },
      [](ServerOptions& o) { o.workers = 1025; },
      [](ServerOptions& o) { o.keepalive_time = absl::ZeroDuration(); },
      [](ServerOptions& o) { o.keepalive_time = absl::InfiniteDuration(); },
      [](ServerOptions& o) { o.lame_duck = absl::InfiniteDuration(); },
  };
  ServerOptions o = options_;
  o.data_dir = TempDir();
  std::filesystem::remove_all(o.data_dir);
  for (size_t i = 0; i < bad.size(); ++i) {
    ServerOptions b = o;
    b.workers = 3;
    bad[i](b);
    EXPECT_THAT(Server::Start(b), StatusIs(absl::StatusCode::kInvalidArgument)) << i;
    EXPECT_FALSE(std::filesystem::exists(o.data_dir)) << i;
  }
  o.workers = 2;
  auto started = Server::Start(o);
  ASSERT_THAT(started, IsOk());
  (*started)->Shutdown(absl::Seconds(5));
  std::filesystem::remove_all(o.data_dir);
}

// gRPC deadlines from durations: an infinite or huge one is no deadline (a
// sum that overflowed was a time in the past: every call failed at once,
// and Shutdown(inf) cancelled every in-flight call).
TEST(DeadlineAfterTest, HugeDurationsAreNoDeadline) {
  using std::chrono::system_clock;
  EXPECT_EQ(DeadlineAfter(absl::InfiniteDuration()), system_clock::time_point::max());
  EXPECT_EQ(DeadlineAfter(absl::Hours(1e9)), system_clock::time_point::max());
  const auto before = system_clock::now();
  const auto in_a_second = DeadlineAfter(absl::Seconds(1));
  EXPECT_GE(in_a_second, before + std::chrono::seconds(1));
  EXPECT_LT(in_a_second, system_clock::now() + std::chrono::seconds(2));
  const auto past = DeadlineAfter(-absl::InfiniteDuration());
  EXPECT_LE(past, system_clock::now());
}

// Under `interval`, a close whose final sync fails means acknowledged
// writes may not be durable: the server says so (segkvd exits 1).
TEST_F(ServerTest, AFailedCloseIsReported) {
  worker::MemFileSystem fs;
  ServerOptions o = OnMemFs(&fs, /*workers=*/1);
  o.partition.durability = worker::Durability::kInterval;
  o.partition.sync_interval = absl::Hours(1);
  auto started = Server::Start(o);
  ASSERT_THAT(started, IsOk());
  {
    client::Client c = ClientFor(*(*started));
    ASSERT_THAT(c.Put("k", "v"), IsOk());
  }
  fs.FailSyncsAfter(0, EIO);
  (*started)->Shutdown(absl::Seconds(5));
  EXPECT_THAT((*started)->close_status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT((*started)->close_status(), StatusIs(absl::StatusCode::kUnavailable,
                                                   HasSubstr("partition 0")));
}

// A data dir whose identity file cannot be looked up (EIO, EACCES) is an
// error, not a new data dir: that would rewrite its partition count.
TEST_F(ServerTest, AnIdentityFileThatCannotBeLookedUpIsAnError) {
  worker::MemFileSystem mem;
  ServerOptions o = OnMemFs(&mem, /*workers=*/2);
  {
    auto started = Server::Start(o);
    ASSERT_THAT(started, IsOk());
    client::Client c = ClientFor(*(*started));
    ASSERT_THAT(c.Put("k", "v"), IsOk());
    (*started)->Shutdown(absl::Seconds(5));
  }
  class FailingLookups : public worker::testing::ForwardingFileSystem {
   public:
    using ForwardingFileSystem::ForwardingFileSystem;
    absl::StatusOr<bool> PathExists(const std::string& path) override {
      return absl::UnavailableError(absl::StrCat("stat ", path, ": Input/output error"));
    }
  };
  FailingLookups failing(&mem);
  ServerOptions bad = o;
  bad.partition.fs = &failing;
  bad.workers = 0;  // a new data dir would take one per CPU
  EXPECT_THAT(Server::Start(bad), StatusIs(absl::StatusCode::kUnavailable,
                                           HasSubstr("Input/output error")));
  o.workers = 0;
  auto started = Server::Start(o);
  ASSERT_THAT(started, IsOk());
  EXPECT_EQ((*started)->frontend().partitions(), 2u);
  client::Client c = ClientFor(*(*started));
  auto got = c.Get("k");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->value(), "v");
  (*started)->Shutdown(absl::Seconds(5));
}

// Admin.Sync makes what `interval` acknowledged durable at once.
TEST_F(ServerTest, SyncMakesIntervalWritesDurable) {
  worker::MemFileSystem fs;
  ServerOptions o = OnMemFs(&fs, /*workers=*/2);
  o.partition.durability = worker::Durability::kInterval;
  o.partition.sync_interval = absl::Hours(1);
  auto started = Server::Start(o);
  ASSERT_THAT(started, IsOk());
  client::Client c = ClientFor(*(*started));
  for (int i = 0; i < 20; ++i) ASSERT_THAT(c.Put(absl::StrCat("k", i), "v"), IsOk());
  auto before = c.Status();
  ASSERT_THAT(before, IsOk());
  for (const auto& p : before->partitions()) {
    EXPECT_LT(p.synced_address(), p.tail_address()) << "partition " << p.partition();
  }
  ASSERT_THAT(c.Sync(), IsOk());
  auto after = c.Status();
  ASSERT_THAT(after, IsOk());
  for (const auto& p : after->partitions()) {
    EXPECT_EQ(p.synced_address(), p.tail_address()) << "partition " << p.partition();
    EXPECT_EQ(p.tail_address(), before->partitions(p.partition()).tail_address());
  }
  (*started)->Shutdown(absl::Seconds(5));
}

// --segment_size applies to new partitions: an existing data dir keeps its
// own segments, so a value too small for --max_value_size is refused only
// for a new one.
TEST_F(ServerTest, AnExistingDataDirKeepsItsSegmentSizeWhateverTheFlag) {
  ASSERT_THAT(client_->Put("k", std::string(60 << 10, 'v')), IsOk());
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  server_.reset();
  options_.partition.segment_size = 32 << 10;  // cannot hold a 64 KiB value
  StartServer();
  auto got = client_->Get("k");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->value().size(), size_t{60 << 10});
  ASSERT_THAT(client_->Put("k2", std::string(60 << 10, 'w')), IsOk());
}

// A request over --max_message_bytes is refused by gRPC itself before segkv
// sees it (RESOURCE_EXHAUSTED, as docs/api.md says), and writes nothing;
// empty batches are fine and write nothing either.
TEST_F(ServerTest, ARequestOverTheMessageLimitWritesNothing) {
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  server_.reset();
  options_.max_message_bytes = static_cast<int>(options_.limits.max_value_size) + 8192;
  StartServer();
  v1::BatchWriteRequest batch;
  for (const char* key : {"big1", "big2"}) {
    auto* put = batch.add_ops()->mutable_put();
    put->set_key(key);
    put->set_value(std::string(60 << 10, 'v'));  // each fits; both do not
  }
  EXPECT_THAT(client_->BatchWrite(batch),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("larger than max")));
  ExpectMissing("big1");
  ExpectMissing("big2");
  auto empty_write = client_->BatchWrite(v1::BatchWriteRequest());
  ASSERT_THAT(empty_write, IsOk());
  EXPECT_EQ(empty_write->results_size(), 0);
  auto empty_get = client_->BatchGet(v1::BatchGetRequest());
  ASSERT_THAT(empty_get, IsOk());
  EXPECT_EQ(empty_get->results_size(), 0);
  EXPECT_EQ(TotalKeys(), 0u);
}

// At the smallest --max_message_bytes (--max_value_size + 8 KiB) a record
// with the longest key and the largest value still comes back from Scan.
TEST_F(ServerTest, ScanReturnsTheLargestRecordAtTheSmallestMessageLimit) {
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  server_.reset();
  options_.max_message_bytes = static_cast<int>(options_.limits.max_value_size) + 8192;
  StartServer();
  const std::string key(4096, 'k');
  const std::string value(options_.limits.max_value_size, 'v');
  ASSERT_THAT(client_->Put(key, value), IsOk());
  v1::ScanRequest scan;
  bool found = false;
  for (int i = 0; i < 10 && !found; ++i) {
    auto page = client_->Scan(scan);
    ASSERT_THAT(page, IsOk());
    for (const auto& kv : page->items()) found |= kv.key() == key && kv.value() == value;
    if (page->next_cursor().empty()) break;
    scan.set_cursor(page->next_cursor());
  }
  EXPECT_TRUE(found);
}

TEST_F(ServerTest, QueueDepthOutOfRangeIsInvalidArgument) {
  for (size_t depth : {size_t{0}, (size_t{1} << 24) + 1, (size_t{1} << 63) + 1}) {
    ServerOptions o = options_;
    o.data_dir = TempDir();
    o.queue_depth = depth;
    EXPECT_THAT(Server::Start(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("--queue_depth"))) << depth;
    std::filesystem::remove_all(o.data_dir);
  }
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

TEST_F(ServerTest, SecondServerOnTheSameDataDirIsFailedPrecondition) {
  ASSERT_THAT(client_->Put("k", "v1"), IsOk());
  const std::string segment_dir = PartitionDir(dir_, 0);
  auto listing = [&] {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(segment_dir)) {
      names.push_back(e.path().filename().string() + ":" +
                      std::to_string(std::filesystem::file_size(e.path())));
    }
    std::sort(names.begin(), names.end());
    return names;
  };
  const auto before = listing();
  auto second = Server::Start(options_);  // another port (0), same directory
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(second.status().message(), HasSubstr("in use"));
  EXPECT_EQ(listing(), before);  // it touched nothing
  // The first server keeps serving, and once it is shut down the directory
  // can be opened again.
  ASSERT_THAT(client_->Put("k", "v2"), IsOk());
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  auto third = Server::Start(options_);
  ASSERT_THAT(third, IsOk());
  server_ = std::move(*third);
  client::ClientOptions co;
  co.endpoint = server_->address();
  client_ = std::make_unique<client::Client>(co);
  auto got = client_->Get("k");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->value(), "v2");
}

TEST_F(ServerTest, SecondServerOnTheSamePortIsUnavailable) {
  ServerOptions o = options_;
  o.data_dir = dir_ + "-other";
  o.listen = server_->address();
  auto second = Server::Start(o);
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kUnavailable));
  std::filesystem::remove_all(o.data_dir);
  EXPECT_THAT(client_->Put("k", "v"), IsOk());
}

// A response gRPC would refuse to send (over --max_message_bytes) would
// reach the client as RESOURCE_EXHAUSTED, which says "retry later". Batch
// values that do not fit are INVALID_ARGUMENT instead, and a write whose
// previous value does not fit is not applied.
TEST_F(ServerTest, BatchValuesOverTheMessageLimitAreInvalidArgument) {
  ServerOptions o = options_;
  o.data_dir = dir_ + "-small-messages";
  o.max_message_bytes = 256 << 10;  // holds 3 values of 64 KiB
  auto started = Server::Start(o);
  ASSERT_THAT(started, IsOk());
  std::unique_ptr<Server> server = std::move(*started);
  client::Client c = ClientFor(*server);
  const std::string old_value(64 << 10, 'o'), new_value = "n";
  v1::BatchGetRequest get_all;
  for (int i = 0; i < 8; ++i) {
    const std::string key = absl::StrCat("big/", i);
    ASSERT_THAT(c.Put(key, old_value), IsOk());
    get_all.add_keys(key);
  }
  auto got = c.BatchGet(get_all);
  EXPECT_THAT(got, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(got.status().message(), HasSubstr("fewer keys"));
  v1::BatchGetRequest get_two;
  get_two.add_keys("big/0");
  get_two.add_keys("big/7");
  got = c.BatchGet(get_two);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->results(1).value(), old_value);

  v1::BatchWriteRequest req;
  for (int i = 0; i < 8; ++i) {
    auto* put = req.add_ops()->mutable_put();
    put->set_key(absl::StrCat("big/", i));
    put->set_value(new_value);
    put->set_return_previous(true);
  }
  auto resp = c.BatchWrite(req);
  ASSERT_THAT(resp, IsOk());
  int applied = 0, refused = 0;
  for (int j = 0; j < 8; ++j) {
    const auto& r = resp->results(j);
    auto now = c.Get(req.ops(j).put().key());
    ASSERT_THAT(now, IsOk());
    if (r.has_status()) {
      EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
      EXPECT_THAT(r.status().message(), HasSubstr("not applied"));
      EXPECT_EQ(now->value(), old_value);
      ++refused;
    } else {
      EXPECT_EQ(r.previous_value(), old_value);
      EXPECT_EQ(now->value(), new_value);
      ++applied;
    }
  }
  EXPECT_GT(applied, 0);
  EXPECT_GT(refused, 0);

  // A scan examines less log per call when its answer could outgrow the
  // limit, and still reaches every key.
  for (int i = 0; i < 16; ++i) ASSERT_THAT(c.Put(absl::StrCat("more/", i), old_value), IsOk());
  std::set<std::string> scanned;
  v1::ScanRequest scan;
  scan.set_limit(10000);
  for (int rpcs = 0; rpcs < 1000; ++rpcs) {
    auto page = c.Scan(scan);
    ASSERT_THAT(page, IsOk());
    for (const auto& kv : page->items()) scanned.insert(kv.key());
    if (page->next_cursor().empty()) break;
    scan.set_cursor(page->next_cursor());
  }
  EXPECT_EQ(scanned.size(), 24u);
  server->Shutdown(absl::Seconds(5));
  std::filesystem::remove_all(o.data_dir);
}

TEST_F(ServerTest, WorkersZeroOpensADataDirWithItsOwnCount) {
  // A count no CPU count here would give.
  options_.workers = UsableCpus() + 3;
  StartFresh();
  ASSERT_THAT(client_->Put("k", "v"), IsOk());
  options_.workers = 0;  // the default: whatever this directory was made with
  Restart();
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  EXPECT_EQ(st->partitions_size(), UsableCpus() + 3);
  auto got = client_->Get("k");
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(got->found());
  // A new directory gets one partition per CPU this process may use.
  StartFresh();
  st = client_->Status();
  ASSERT_THAT(st, IsOk());
  EXPECT_EQ(st->partitions_size(), UsableCpus());
}

TEST(CpusTest, CgroupCpuMaxIsRoundedUpAndMaxIsNoLimit) {
  EXPECT_EQ(CpusFromCgroupCpuMax("max 100000\n"), 0);
  EXPECT_EQ(CpusFromCgroupCpuMax("200000 100000\n"), 2);
  EXPECT_EQ(CpusFromCgroupCpuMax("150000 100000"), 2);  // 1500m
  EXPECT_EQ(CpusFromCgroupCpuMax("50000 100000"), 1);
  EXPECT_EQ(CpusFromCgroupCpuMax(""), 0);
  EXPECT_EQ(CpusFromCgroupCpuMax("garbage"), 0);
  EXPECT_EQ(CpusFromCgroupCpuMax("-1 100000"), 0);
  const int usable = UsableCpus();
  EXPECT_GE(usable, 1);
  EXPECT_LE(usable, static_cast<int>(AllowedCpus().size()));
}

// A file system that calls BeforeCheckpointAppend() before every append to
// a checkpoint file (first: whether it is that file's first), on the
// appending thread.
class CheckpointHookFs : public worker::MemFileSystem {
 public:
  absl::StatusOr<std::unique_ptr<worker::WritableFile>> OpenWritable(
      const std::string& path, bool truncate) override {
    auto f = MemFileSystem::OpenWritable(path, truncate);
    if (!f.ok() || !absl::StrContains(path, "/ckpt-")) return f;
    return std::unique_ptr<worker::WritableFile>(new Hooked(std::move(*f), this));
  }

 protected:
  virtual void BeforeCheckpointAppend(bool first) = 0;

 private:
  class Hooked : public worker::WritableFile {
   public:
    Hooked(std::unique_ptr<worker::WritableFile> f, CheckpointHookFs* fs)
        : f_(std::move(f)), fs_(fs) {}
    absl::Status Append(absl::string_view data) override {
      fs_->BeforeCheckpointAppend(!appended_);
      appended_ = true;
      return f_->Append(data);
    }
    absl::Status Sync() override { return f_->Sync(); }
    absl::Status Truncate(uint64_t size) override { return f_->Truncate(size); }
    absl::Status WriteAt(uint64_t offset, absl::string_view data) override {
      return f_->WriteAt(offset, data);
    }
    uint64_t Size() const override { return f_->Size(); }

   private:
    std::unique_ptr<worker::WritableFile> f_;
    CheckpointHookFs* fs_;
    bool appended_ = false;
  };
};

// A file system whose checkpoint files take appends only once released:
// an Admin.Checkpoint stays in progress for as long as a test wants.
class CheckpointHoldingFs : public CheckpointHookFs {
 public:
  void Release() { released_.Notify(); }
  bool WaitUntilHeld() { return held_.WaitForNotificationWithTimeout(absl::Seconds(60)); }

 private:
  void BeforeCheckpointAppend(bool first) override {
    if (!held_.HasBeenNotified()) held_.Notify();
    released_.WaitForNotification();
  }
  absl::Notification held_, released_;
};

// A client that gives up on an Admin.Checkpoint still in progress ends the
// call on the server too: it does not keep polling and hold shutdown. (A
// poll that ignored the cancellation would never end here, since the
// checkpoint is released only once gRPC has stopped: the test times out.)
TEST_F(ServerTest, AbandonedCheckpointCallDoesNotHoldShutdown) {
  CheckpointHoldingFs fs;
  ServerOptions o = OnMemFs(&fs, /*workers=*/1);
  o.partition.checkpoint_on_close = false;
  o.on_grpc_stopped = [&fs] { fs.Release(); };  // the workers may close now
  auto started = Server::Start(o);
  ASSERT_THAT(started, IsOk());
  std::unique_ptr<Server> server = std::move(*started);
  client::ClientOptions co;
  co.endpoint = server->address();
  co.timeout = absl::Seconds(2);  // the worker starts the checkpoint well before
  client::Client c(co);
  ASSERT_THAT(c.Put("k", "v"), IsOk());
  EXPECT_THAT(c.Checkpoint(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  ASSERT_TRUE(fs.WaitUntilHeld()) << "the checkpoint never started";
  const absl::Time start = absl::Now();
  server->Shutdown(absl::Seconds(60));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30)) << "shutdown waited out the grace period";
  server.reset();
}

// A file system whose checkpoint writes each wait, up to a timeout, until
// checkpoints of `want` files are being written at the same time.
class CheckpointMeetingFs : public CheckpointHookFs {
 public:
  explicit CheckpointMeetingFs(int want) : want_(want) {}
  // Whether `want` checkpoint files were ever being written at once.
  bool met() {
    absl::MutexLock l(&mu_);
    return met_;
  }

 private:
  void BeforeCheckpointAppend(bool first) override {
    if (!first) return;
    absl::MutexLock l(&mu_);
    ++arrived_;
    auto all_here = [this] { return arrived_ >= want_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&all_here), absl::Seconds(20))) met_ = true;
  }
  const int want_;
  absl::Mutex mu_;
  int arrived_ = 0;
  bool met_ = false;
};

// segkvd killed at each step of creating its data dir (identity file,
// partition dirs), restarted on what the kill left (no power loss), a write
// acknowledged, then power lost: the next start must open the data dir and
// find the write. A start builds on names a killed process renamed but
// never synced, so it syncs them first.
TEST_F(ServerTest, EveryKillWhileCreatingTheDataDirThenARestartThenAPowerLoss) {
  uint64_t count = 0;
  {
    worker::MemFileSystem fs;
    auto started = Server::Start(OnMemFs(&fs, /*workers=*/1));
    ASSERT_THAT(started, IsOk());
    count = fs.MutatingOps();
    (*started)->Shutdown(absl::Seconds(5));
  }
  ASSERT_GT(count, 8u);
  for (uint64_t n = 0; n < count; ++n) {
    SCOPED_TRACE(absl::StrCat("killed after ", n, " of ", count, " operations"));
    worker::MemFileSystem fs;
    const ServerOptions o = OnMemFs(&fs, /*workers=*/1);
    fs.KillAfterOps(n);
    {
      auto started = Server::Start(o);
      if (started.ok()) (*started)->Shutdown(absl::Seconds(5));
    }
    fs.KillAfterOps(-1);
    {
      auto started = Server::Start(o);
      ASSERT_THAT(started, IsOk());
      client::Client c = ClientFor(*(*started));
      ASSERT_THAT(c.Put("k", "v"), IsOk());
      fs.KillAfterOps(0);  // the process dies: its shutdown writes nothing
      (*started)->Shutdown(absl::Seconds(5));
      fs.Crash(n, /*keep_unsynced=*/false);
    }
    auto started = Server::Start(o);
    ASSERT_THAT(started, IsOk());
    client::Client c = ClientFor(*(*started));
    auto got = c.Get("k");
    ASSERT_THAT(got, IsOk());
    EXPECT_EQ(got->value(), "v");
    (*started)->Shutdown(absl::Seconds(5));
  }
}

// At shutdown every partition closes at once: each one's close checkpoint
// is written while the others' are. (Closed one after another, the first
// waits out the file system's timeout alone and the test fails.)
TEST_F(ServerTest, PartitionsCloseInParallelAtShutdown) {
  CheckpointMeetingFs fs(/*want=*/2);
  ServerOptions o = OnMemFs(&fs, /*workers=*/2);
  o.partition.checkpoint_on_close = true;
  auto started = Server::Start(o);
  ASSERT_THAT(started, IsOk());
  std::unique_ptr<Server> server = std::move(*started);
  client::Client c = ClientFor(*server);
  std::set<uint32_t> written;
  for (int i = 0; written.size() < 2; ++i) {
    const std::string key = absl::StrCat("key-", i);
    ASSERT_THAT(c.Put(key, "v"), IsOk());
    written.insert(server->frontend().PartitionOf(key));
  }
  server->Shutdown(absl::Seconds(5));
  EXPECT_TRUE(fs.met()) << "the partitions' close checkpoints were not written at the same time";
  server.reset();
}

// Storage errors through the service, on a file system that can fail: a
// full disk is RESOURCE_EXHAUSTED and passes; a read-only one UNAVAILABLE
// and passes; a failed fsync is
// UNAVAILABLE for every later write while reads go on; damage is
// DATA_LOSS.
TEST_F(ServerTest, StorageErrorsReachClientsWithTheirCodes) {
  worker::MemFileSystem fs;
  ServerOptions o = OnMemFs(&fs, /*workers=*/1);
  auto started = Server::Start(o);
  ASSERT_THAT(started, IsOk());
  std::unique_ptr<Server> server = std::move(*started);
  client::Client c = ClientFor(*server);
  // More than one 1 MiB segment, so segment 0 is sealed.
  const std::string value(32 << 10, 'v');
  for (int i = 0; i < 40; ++i) ASSERT_THAT(c.Put(absl::StrCat("k", i), value), IsOk());

  uint64_t used = 0;
  auto names = fs.ListDir("/mem/p0");
  ASSERT_THAT(names, IsOk());
  for (const auto& n : *names) used += fs.Contents("/mem/p0/" + n).size();
  fs.SetCapacity(used + 1024);
  EXPECT_THAT(c.Put("full", value), StatusIs(absl::StatusCode::kResourceExhausted));
  fs.SetCapacity(0);
  ASSERT_THAT(c.Put("room-again", value), IsOk());
  auto got = c.Get("full");
  ASSERT_THAT(got, IsOk());
  EXPECT_FALSE(got->found());

  // Damage in the middle of the sealed segment: a scan reaching it stops.
  const std::string seg0 = "/mem/p0/seg-00000000000000000000.log";
  std::string bytes = fs.Contents(seg0);
  ASSERT_GT(bytes.size(), 600u << 10);
  bytes[500 << 10] ^= 0x55;
  ASSERT_TRUE(fs.OverwriteFile(seg0, bytes));
  v1::ScanRequest scan;
  scan.set_limit(10000);
  absl::StatusCode scan_code = absl::StatusCode::kOk;
  for (int rpcs = 0; rpcs < 1000; ++rpcs) {
    auto page = c.Scan(scan);
    if (!page.ok()) {
      scan_code = page.status().code();
      break;
    }
    if (page->next_cursor().empty()) break;
    scan.set_cursor(page->next_cursor());
  }
  EXPECT_EQ(scan_code, absl::StatusCode::kDataLoss);

  // A read-only disk (EROFS) is an I/O error like any other: UNAVAILABLE,
  // not PERMISSION_DENIED, which would blame the caller; nothing applied.
  fs.FailAppendsAfter(0, EROFS);
  EXPECT_THAT(c.Put("read-only", value),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Read-only file system")));
  v1::BatchWriteRequest batch;
  batch.add_ops()->mutable_put()->set_key("read-only-batch");
  batch.mutable_ops(0)->mutable_put()->set_value(value);
  auto batch_resp = c.BatchWrite(batch);
  ASSERT_THAT(batch_resp, IsOk());
  EXPECT_EQ(batch_resp->results(0).status().code(), grpc::StatusCode::UNAVAILABLE);
  fs.FailAppendsAfter(-1, 0);
  for (const char* key : {"read-only", "read-only-batch"}) {
    got = c.Get(key);
    ASSERT_THAT(got, IsOk());
    EXPECT_FALSE(got->found()) << key;
  }

  fs.FailSyncsAfter(0, EIO);
  EXPECT_THAT(c.Put("lost", "v"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(c.Put("k0", "v"), StatusIs(absl::StatusCode::kUnavailable));
  got = c.Get("k1");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->value(), value);
  auto st = c.Status();
  ASSERT_THAT(st, IsOk());
  EXPECT_NE(st->partitions(0).error(), "");
  fs.FailSyncsAfter(-1, 0);
  server->Shutdown(absl::Seconds(5));
}

TEST_F(ServerTest, MessageLimitBelowValueLimitIsInvalidArgument) {
  ServerOptions o = options_;
  o.data_dir = dir_ + "-other";
  o.max_message_bytes = 32 << 10;  // below the 64 KiB value limit
  EXPECT_THAT(Server::Start(o), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Every RPC, KV and Admin, once shutdown has begun.
TEST_F(ServerTest, AfterShutdownStartsRequestsAreUnavailable) {
  ASSERT_THAT(client_->Put("k", "v"), IsOk());
  server_->frontend().StopAccepting();
  const auto unavailable =
      StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down"));
  EXPECT_THAT(client_->Put("k", "new"), unavailable);
  EXPECT_THAT(client_->Put("k2", "v"), unavailable);
  EXPECT_THAT(client_->Get("k"), unavailable);
  EXPECT_THAT(client_->Delete("k"), unavailable);
  v1::BatchGetRequest batch_get;
  batch_get.add_keys("k");
  EXPECT_THAT(client_->BatchGet(batch_get), unavailable);
  v1::BatchWriteRequest batch_write;
  batch_write.add_ops()->mutable_put()->set_key("k3");
  batch_write.mutable_ops(0)->mutable_put()->set_value("v");
  EXPECT_THAT(client_->BatchWrite(batch_write), unavailable);
  EXPECT_THAT(client_->Scan(v1::ScanRequest()), unavailable);
  EXPECT_THAT(client_->Status(), unavailable);
  EXPECT_THAT(client_->Sync(), unavailable);
  EXPECT_THAT(client_->ListSegments(), unavailable);
  EXPECT_THAT(client_->Checkpoint(), unavailable);
  EXPECT_THAT(client_->Compact(std::nullopt), unavailable);
  // None of them did anything.
  client_.reset();
  server_->Shutdown(absl::Seconds(5));
  server_.reset();
  StartServer();
  auto got = client_->Get("k");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->value(), "v");
  for (const char* key : {"k2", "k3"}) ASSERT_NO_FATAL_FAILURE(ExpectMissing(key));
}

// ---- Admin.Checkpoint and Admin.Compact over the wire ----

using ::segkv::worker::testing::Stored;
using ::testing::ElementsAre;
using KeyValues = std::vector<std::pair<std::string, std::string>>;

// The file docs/format/checkpoint.md names for checkpoint `id`.
std::string CheckpointFile(uint64_t id) { return absl::StrFormat("ckpt-%020d.idx", id); }

// The checkpoint files (not temporaries) in a partition directory, sorted.
std::vector<std::string> CheckpointFiles(const std::string& partition_dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(partition_dir)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, "ckpt-") && absl::EndsWith(name, ".idx")) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A value of `size` bytes that names its key and round.
std::string RoundValue(absl::string_view key, int round, size_t size = 4000) {
  std::string v = absl::StrCat(key, "@", round, ":");
  v.resize(size, 'x');
  return v;
}

// Puts every pair in one BatchWrite; records what each key now holds.
void PutAll(client::Client& c, const KeyValues& kvs, std::map<std::string, Stored>* model) {
  v1::BatchWriteRequest req;
  for (const auto& [k, v] : kvs) {
    auto* put = req.add_ops()->mutable_put();
    put->set_key(k);
    put->set_value(v);
  }
  auto resp = c.BatchWrite(req);
  ASSERT_THAT(resp, IsOk());
  ASSERT_EQ(resp->results_size(), static_cast<int>(kvs.size()));
  for (size_t i = 0; i < kvs.size(); ++i) {
    ASSERT_EQ(resp->results(i).status().code(), 0) << kvs[i].first;
    (*model)[kvs[i].first] = Stored{kvs[i].second, resp->results(i).version()};
  }
}

// Reads every key back in one BatchGet: each key of `model` holds its value
// and version, each of `gone` is not found.
void ExpectStore(client::Client& c, const std::map<std::string, Stored>& model,
                 const std::vector<std::string>& gone) {
  v1::BatchGetRequest req;
  for (const auto& [k, unused] : model) req.add_keys(k);
  for (const std::string& k : gone) req.add_keys(k);
  auto got = c.BatchGet(req);
  ASSERT_THAT(got, IsOk());
  ASSERT_EQ(got->results_size(), req.keys_size());
  int i = 0;
  for (const auto& [k, want] : model) {
    const auto& r = got->results(i++);
    EXPECT_TRUE(r.found()) << k;
    EXPECT_EQ((Stored{r.value(), r.version()}), want) << k;
  }
  for (const std::string& k : gone) EXPECT_FALSE(got->results(i++).found()) << k;
}

// The sealed segments of a partition (by value: a range-for over it is safe).
std::vector<v1::Segment> SealedSegments(const v1::ListSegmentsResponse& r, uint32_t partition) {
  std::vector<v1::Segment> sealed;
  for (const v1::Segment& s : r.segments()) {
    if (s.sealed() && s.partition() == partition) sealed.push_back(s);
  }
  return sealed;
}

std::set<uint64_t> SegmentIds(const v1::ListSegmentsResponse& r, uint32_t partition) {
  std::set<uint64_t> ids;
  for (const v1::Segment& s : r.segments()) {
    if (s.partition() == partition) ids.insert(s.id());
  }
  return ids;
}

// With 256 KiB segments: 40 cold keys written once, then 16 hot keys
// overwritten 40 times (4000-byte values), cold/0..3 deleted at round 20.
// Segment 0 of each partition stays partly live, the ones after it die.
void WriteColdAndHot(client::Client& c, std::map<std::string, Stored>* model,
                     std::vector<std::string>* gone) {
  KeyValues cold;
  for (int i = 0; i < 40; ++i) {
    const std::string k = absl::StrCat("cold/", i);
    cold.emplace_back(k, RoundValue(k, 0));
  }
  ASSERT_NO_FATAL_FAILURE(PutAll(c, cold, model));
  for (int round = 0; round < 40; ++round) {
    KeyValues hot;
    for (int j = 0; j < 16; ++j) {
      const std::string k = absl::StrCat("hot/", j);
      hot.emplace_back(k, RoundValue(k, round));
    }
    ASSERT_NO_FATAL_FAILURE(PutAll(c, hot, model));
    if (round == 20) {
      for (int i = 0; i < 4; ++i) {
        const std::string k = absl::StrCat("cold/", i);
        ASSERT_THAT(c.Delete(k), IsOk());
        model->erase(k);
        gone->push_back(k);
      }
    }
  }
}

TEST_F(ServerTest, CheckpointCoversEveryPartitionAndStatusReportsIt) {
  options_.partition.checkpoint_interval = absl::ZeroDuration();  // only on demand
  options_.partition.checkpoints_to_keep = 2;
  StartFresh();
  std::map<std::string, Stored> model;
  KeyValues kvs;
  for (int i = 0; i < 300; ++i) kvs.emplace_back(absl::StrCat("k", i), absl::StrCat("v", i));
  PutAll(*client_, kvs, &model);
  auto before = client_->Status();
  ASSERT_THAT(before, IsOk());
  ASSERT_EQ(before->partitions_size(), 2);
  for (const auto& p : before->partitions()) {
    ASSERT_GT(p.keys(), 0u);  // each partition has writes to cover
    EXPECT_EQ(p.last_checkpoint_id(), 0u);
    EXPECT_EQ(p.checkpoints_taken(), 0u);
    EXPECT_EQ(p.recovered_from_checkpoint(), 0u);  // a new data directory
  }

  const int64_t t0 = absl::ToUnixMillis(absl::Now());
  auto ck = client_->Checkpoint();
  const int64_t t1 = absl::ToUnixMillis(absl::Now());
  ASSERT_THAT(ck, IsOk());
  ASSERT_EQ(ck->partitions_size(), 2);
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const v1::PartitionCheckpoint& c = ck->partitions(p);
    const v1::PartitionStatus& s = st->partitions(p);
    EXPECT_EQ(c.partition(), p);
    EXPECT_EQ(c.id(), 1u);
    // Covers every write acknowledged before the call: the whole log.
    EXPECT_EQ(c.covered_address(), before->partitions(p).tail_address());
    EXPECT_GT(c.bytes(), 0u);
    EXPECT_GT(c.copy_ms(), 0.0);
    EXPECT_GT(c.write_seconds(), 0.0);
    EXPECT_EQ(s.last_checkpoint_id(), c.id());
    EXPECT_EQ(s.last_checkpoint_covered_address(), c.covered_address());
    EXPECT_EQ(s.last_checkpoint_bytes(), c.bytes());
    EXPECT_EQ(s.last_checkpoint_copy_ms(), c.copy_ms());
    EXPECT_GE(c.sync_ms(), 0.0);
    EXPECT_EQ(s.last_checkpoint_sync_ms(), c.sync_ms());
    EXPECT_EQ(s.last_checkpoint_write_seconds(), c.write_seconds());
    EXPECT_GE(s.last_checkpoint_unix_ms(), t0);
    EXPECT_LE(s.last_checkpoint_unix_ms(), t1);
    EXPECT_EQ(s.checkpoints_taken(), 1u);
    EXPECT_EQ(s.checkpoints_failed(), 0u);
    EXPECT_EQ(s.checkpoint_error(), "");
    EXPECT_FALSE(s.checkpoint_running());
    EXPECT_GE(s.synced_address(), c.covered_address());  // what it covers is durable
    const std::string pdir = absl::StrCat(dir_, "/p", p);
    EXPECT_THAT(CheckpointFiles(pdir), ElementsAre(CheckpointFile(1)));
    EXPECT_EQ(std::filesystem::file_size(pdir + "/" + CheckpointFile(1)), c.bytes());
  }

  // Again with no write in between: a new checkpoint of the same log (the
  // call always takes one of its own), then a third, which retires the
  // first (two are kept).
  auto again = client_->Checkpoint();
  ASSERT_THAT(again, IsOk());
  ASSERT_EQ(again->partitions_size(), 2);
  auto st2 = client_->Status();
  ASSERT_THAT(st2, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const v1::PartitionCheckpoint& c = again->partitions(p);
    EXPECT_EQ(c.partition(), p);
    EXPECT_EQ(c.id(), 2u);
    EXPECT_EQ(c.covered_address(), ck->partitions(p).covered_address());
    EXPECT_EQ(c.bytes(), ck->partitions(p).bytes());
    EXPECT_EQ(st2->partitions(p).last_checkpoint_id(), 2u);
    EXPECT_EQ(st2->partitions(p).checkpoints_taken(), 2u);
    EXPECT_THAT(CheckpointFiles(absl::StrCat(dir_, "/p", p)),
                ElementsAre(CheckpointFile(1), CheckpointFile(2)));
  }
  auto third = client_->Checkpoint();
  ASSERT_THAT(third, IsOk());
  server_->FlushRemovals();  // the retired checkpoint is unlinked in the background
  auto st3 = client_->Status();
  ASSERT_THAT(st3, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    EXPECT_EQ(third->partitions(p).id(), 3u);
    EXPECT_EQ(st3->partitions(p).checkpoints_taken(), 3u);
    EXPECT_THAT(CheckpointFiles(absl::StrCat(dir_, "/p", p)),
                ElementsAre(CheckpointFile(2), CheckpointFile(3)));
  }
  ExpectStore(*client_, model, {});
}

TEST_F(ServerTest, RestartAfterCheckpointRecoversFromTheCloseCheckpoint) {
  ASSERT_TRUE(options_.partition.checkpoint_on_close);  // the default
  std::map<std::string, Stored> model;
  KeyValues kvs;
  for (int i = 0; i < 300; ++i) kvs.emplace_back(absl::StrCat("k", i), absl::StrCat("v", i));
  PutAll(*client_, kvs, &model);
  ASSERT_THAT(client_->Delete("k7"), IsOk());
  model.erase("k7");
  auto ck = client_->Checkpoint();
  ASSERT_THAT(ck, IsOk());
  // Grow both partitions' logs past checkpoint 1.
  KeyValues late;
  for (int i = 0; i < 100; ++i) late.emplace_back(absl::StrCat("late/", i), absl::StrCat("l", i));
  PutAll(*client_, late, &model);
  auto before = client_->Status();
  ASSERT_THAT(before, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    ASSERT_EQ(ck->partitions(p).id(), 1u);
    ASSERT_GT(before->partitions(p).tail_address(), ck->partitions(p).covered_address());
  }

  // A clean shutdown checkpoints the grown log: the next start loads it and
  // replays nothing.
  Restart();
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const v1::PartitionStatus& s = st->partitions(p);
    const v1::PartitionStatus& b = before->partitions(p);
    EXPECT_EQ(s.recovered_from_checkpoint(), 2u);
    EXPECT_EQ(s.recovery_start_address(), b.tail_address());
    EXPECT_EQ(s.recovered_records(), 0u);
    EXPECT_EQ(s.checkpoints_rejected(), 0u);
    EXPECT_EQ(s.last_checkpoint_id(), 2u);
    EXPECT_EQ(s.last_checkpoint_covered_address(), b.tail_address());
    EXPECT_EQ(s.checkpoints_taken(), 0u);  // since this start
    EXPECT_EQ(s.keys(), b.keys());
    EXPECT_EQ(s.next_version(), b.next_version());
    EXPECT_EQ(s.tail_address(), b.tail_address());
    EXPECT_EQ(s.live_bytes(), b.live_bytes());
    EXPECT_EQ(s.dead_bytes(), b.dead_bytes());
    EXPECT_TRUE(s.error().empty()) << s.error();
  }
  ExpectStore(*client_, model, {"k7"});

  // Nothing written since: the next shutdown has nothing to checkpoint.
  Restart();
  st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    EXPECT_EQ(st->partitions(p).recovered_from_checkpoint(), 2u);
    EXPECT_EQ(st->partitions(p).recovered_records(), 0u);
    EXPECT_THAT(CheckpointFiles(absl::StrCat(dir_, "/p", p)),
                ElementsAre(CheckpointFile(1), CheckpointFile(2)));
  }
  ExpectStore(*client_, model, {"k7"});
  // Writes after the restart get versions after every recovered one.
  auto put = client_->Put("k1", "new");
  ASSERT_THAT(put, IsOk());
  EXPECT_GT(put->version(), model["k1"].version);
}

TEST_F(ServerTest, RestartWithoutCloseCheckpointReplaysOnlyTheLogAfterIt) {
  options_.partition.checkpoint_on_close = false;
  options_.partition.checkpoint_interval = absl::ZeroDuration();
  StartFresh();
  std::map<std::string, Stored> model;
  KeyValues kvs;
  for (int i = 0; i < 300; ++i) kvs.emplace_back(absl::StrCat("k", i), absl::StrCat("v", i));
  PutAll(*client_, kvs, &model);
  auto ck = client_->Checkpoint();
  ASSERT_THAT(ck, IsOk());
  auto at_ck = client_->Status();
  ASSERT_THAT(at_ck, IsOk());
  KeyValues late;
  for (int i = 0; i < 100; ++i) late.emplace_back(absl::StrCat("late/", i), absl::StrCat("l", i));
  PutAll(*client_, late, &model);
  auto before = client_->Status();
  ASSERT_THAT(before, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    ASSERT_GT(before->partitions(p).keys(), at_ck->partitions(p).keys());
  }

  Restart();
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const v1::PartitionStatus& s = st->partitions(p);
    const v1::PartitionStatus& b = before->partitions(p);
    EXPECT_EQ(s.recovered_from_checkpoint(), 1u);
    EXPECT_EQ(s.recovery_start_address(), ck->partitions(p).covered_address());
    // One record per key written after the checkpoint.
    EXPECT_EQ(s.recovered_records(), b.keys() - at_ck->partitions(p).keys());
    EXPECT_EQ(s.last_checkpoint_id(), 1u);
    EXPECT_EQ(s.keys(), b.keys());
    EXPECT_EQ(s.next_version(), b.next_version());
    EXPECT_EQ(s.tail_address(), b.tail_address());
    EXPECT_THAT(CheckpointFiles(absl::StrCat(dir_, "/p", p)), ElementsAre(CheckpointFile(1)));
  }
  ExpectStore(*client_, model, {});
}

TEST_F(ServerTest, RestartWithoutAnyCheckpointIsAFullReplay) {
  options_.partition.checkpoint_on_close = false;
  options_.partition.checkpoint_interval = absl::ZeroDuration();
  StartFresh();
  std::map<std::string, Stored> model;
  KeyValues kvs;
  for (int i = 0; i < 300; ++i) kvs.emplace_back(absl::StrCat("k", i), absl::StrCat("v", i));
  PutAll(*client_, kvs, &model);
  Restart();
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  uint64_t replayed = 0;
  for (const auto& s : st->partitions()) {
    EXPECT_EQ(s.recovered_from_checkpoint(), 0u);
    EXPECT_EQ(s.recovery_start_address(), 0u);
    EXPECT_EQ(s.last_checkpoint_id(), 0u);
    EXPECT_EQ(s.recovered_records(), s.keys());
    replayed += s.recovered_records();
  }
  EXPECT_EQ(replayed, 300u);
  ExpectStore(*client_, model, {});
}

TEST_F(ServerTest, CompactRemovesSegmentsAtTheRatioAndKeepsLatestValues) {
  constexpr uint64_t kSegment = 256 << 10;
  options_.partition.segment_size = kSegment;
  options_.partition.compaction_dead_ratio = 2.0;  // never on its own
  options_.partition.checkpoint_interval = absl::ZeroDuration();
  StartFresh();
  std::map<std::string, Stored> model;
  std::vector<std::string> gone;
  ASSERT_NO_FATAL_FAILURE(WriteColdAndHot(*client_, &model, &gone));

  auto pre = client_->ListSegments();
  ASSERT_THAT(pre, IsOk());
  // Per partition: the sealed segments wholly dead, and those at least
  // half dead but not wholly.
  std::map<uint32_t, std::vector<v1::Segment>> whole, half;
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const std::vector<v1::Segment> sealed = SealedSegments(*pre, p);
    ASSERT_GE(sealed.size(), 3u);
    for (const v1::Segment& s : sealed) {
      if (s.dead_ratio() == 1.0) {
        whole[p].push_back(s);
      } else if (s.dead_ratio() >= 0.5) {
        half[p].push_back(s);
      }
    }
    ASSERT_FALSE(whole[p].empty());
    ASSERT_FALSE(half[p].empty());
  }
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  std::vector<uint64_t> dead_before;
  for (const auto& s : st->partitions()) {
    EXPECT_EQ(s.max_segment_dead_ratio(), 1.0);
    EXPECT_GT(s.dead_ratio(), 0.5);
    EXPECT_EQ(s.segments_compacted(), 0u);
    dead_before.push_back(s.dead_bytes());
  }

  // A ratio outside [0, 1] is refused and nothing happens.
  for (double bad : {1.5, -0.1, std::nan("")}) {
    auto r = client_->Compact(bad);
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("min_dead_ratio")) << bad;
  }
  auto unchanged = client_->ListSegments();
  ASSERT_THAT(unchanged, IsOk());
  EXPECT_EQ(unchanged->DebugString(), pre->DebugString());
  st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (const auto& s : st->partitions()) {
    EXPECT_EQ(s.segments_compacted(), 0u);
    EXPECT_EQ(s.bytes_reclaimed(), 0u);
  }

  // 1 takes only the wholly dead segments: nothing to relocate.
  auto r1 = client_->Compact(1.0);
  ASSERT_THAT(r1, IsOk());
  ASSERT_EQ(r1->partitions_size(), 2);
  auto post1 = client_->ListSegments();
  ASSERT_THAT(post1, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const v1::PartitionCompaction& c = r1->partitions(p);
    EXPECT_EQ(c.partition(), p);
    EXPECT_EQ(c.segments_compacted(), whole[p].size());
    EXPECT_EQ(c.records_relocated(), 0u);
    uint64_t bytes = 0;
    std::set<uint64_t> left = SegmentIds(*pre, p);
    for (const v1::Segment& s : whole[p]) {
      bytes += s.end_address() - s.id() * kSegment;  // the file's bytes
      left.erase(s.id());
    }
    EXPECT_EQ(c.bytes_reclaimed(), bytes);
    EXPECT_EQ(SegmentIds(*post1, p), left);
  }

  // 0.5 takes the rest at least half dead, moving their live records.
  auto r2 = client_->Compact(0.5);
  ASSERT_THAT(r2, IsOk());
  ASSERT_EQ(r2->partitions_size(), 2);
  auto post2 = client_->ListSegments();
  ASSERT_THAT(post2, IsOk());
  st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const v1::PartitionCompaction& c = r2->partitions(p);
    EXPECT_EQ(c.partition(), p);
    EXPECT_GE(c.segments_compacted(), half[p].size());
    EXPECT_GT(c.records_relocated(), 0u);  // segment 0's cold keys
    EXPECT_GT(c.bytes_reclaimed(), 0u);
    const std::set<uint64_t> ids = SegmentIds(*post2, p);
    for (const v1::Segment& s : half[p]) EXPECT_FALSE(ids.contains(s.id())) << s.id();
    for (const v1::Segment& s : SealedSegments(*post2, p)) {
      EXPECT_LT(s.dead_ratio(), 0.5) << s.id();
    }
    // Nothing compacts on its own here: the counters are the two calls'.
    const v1::PartitionStatus& s = st->partitions(p);
    EXPECT_EQ(s.segments_compacted(),
              r1->partitions(p).segments_compacted() + c.segments_compacted());
    EXPECT_EQ(s.bytes_reclaimed(), r1->partitions(p).bytes_reclaimed() + c.bytes_reclaimed());
    EXPECT_EQ(s.records_relocated(),
              r1->partitions(p).records_relocated() + c.records_relocated());
    EXPECT_LT(s.max_segment_dead_ratio(), 0.5);
    EXPECT_EQ(s.compaction_error(), "");
    EXPECT_EQ(s.compaction_errors(), 0u);
    EXPECT_FALSE(s.has_compacting_segment());
    EXPECT_LT(s.dead_bytes(), dead_before[p]);
  }
  ExpectStore(*client_, model, gone);

  // 0 takes any sealed segment with a dead byte.
  auto r3 = client_->Compact(0.0);
  ASSERT_THAT(r3, IsOk());
  auto post3 = client_->ListSegments();
  ASSERT_THAT(post3, IsOk());
  for (const v1::Segment& s : post3->segments()) {
    if (s.sealed()) {
      EXPECT_EQ(s.dead_ratio(), 0.0) << s.partition() << "/" << s.id();
    }
  }
  st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (const auto& s : st->partitions()) EXPECT_EQ(s.max_segment_dead_ratio(), 0.0);
  ExpectStore(*client_, model, gone);

  // What compaction left recovers the same store.
  Restart();
  ExpectStore(*client_, model, gone);
  EXPECT_EQ(TotalKeys(), model.size());
}

TEST_F(ServerTest, RestartFromACheckpointTakenBeforeCompaction) {
  options_.partition.segment_size = 256 << 10;
  options_.partition.compaction_dead_ratio = 2.0;  // never on its own
  options_.partition.checkpoint_interval = absl::ZeroDuration();
  options_.partition.checkpoint_on_close = false;
  StartFresh();
  std::map<std::string, Stored> model;
  std::vector<std::string> gone;
  ASSERT_NO_FATAL_FAILURE(WriteColdAndHot(*client_, &model, &gone));
  auto ck = client_->Checkpoint();
  ASSERT_THAT(ck, IsOk());
  // After the checkpoint: more deletes of cold keys (whose puts sit in
  // segment 0) and one more round of the hot ones.
  for (int i = 4; i < 8; ++i) {
    const std::string k = absl::StrCat("cold/", i);
    ASSERT_THAT(client_->Delete(k), IsOk());
    model.erase(k);
    gone.push_back(k);
  }
  KeyValues hot;
  for (int j = 0; j < 16; ++j) {
    const std::string k = absl::StrCat("hot/", j);
    hot.emplace_back(k, RoundValue(k, 40));
  }
  PutAll(*client_, hot, &model);
  auto r = client_->Compact(0.0);
  ASSERT_THAT(r, IsOk());
  auto segs = client_->ListSegments();
  ASSERT_THAT(segs, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    EXPECT_GT(r->partitions(p).segments_compacted(), 0u);
    EXPECT_GT(r->partitions(p).records_relocated(), 0u);
    // The checkpoint's entries for the cold keys point into segment 0.
    ASSERT_FALSE(SegmentIds(*segs, p).contains(0));
  }
  ExpectStore(*client_, model, gone);
  auto before = client_->Status();
  ASSERT_THAT(before, IsOk());

  Restart();
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const v1::PartitionStatus& s = st->partitions(p);
    const v1::PartitionStatus& b = before->partitions(p);
    EXPECT_EQ(s.recovered_from_checkpoint(), 1u);
    EXPECT_EQ(s.recovery_start_address(), ck->partitions(p).covered_address());
    EXPECT_GT(s.recovered_records(), 0u);  // the relocated records among them
    EXPECT_EQ(s.keys(), b.keys());
    EXPECT_EQ(s.next_version(), b.next_version());
    EXPECT_EQ(s.live_bytes(), b.live_bytes());
    EXPECT_TRUE(s.error().empty()) << s.error();
  }
  ExpectStore(*client_, model, gone);
}

TEST_F(ServerTest, CompactWithoutRatioUsesTheServersThreshold) {
  options_.partition.segment_size = 256 << 10;
  options_.partition.compaction_dead_ratio = 0.5;  // also compacts on its own
  options_.partition.checkpoint_interval = absl::ZeroDuration();
  StartFresh();
  std::map<std::string, Stored> model;
  // 150 cold keys fill segment 0 of each partition; overwriting every tenth
  // leaves it about a tenth dead, under the threshold.
  KeyValues cold, rewrite;
  for (int i = 0; i < 150; ++i) {
    const std::string k = absl::StrCat("cold/", i);
    cold.emplace_back(k, RoundValue(k, 0));
    if (i % 10 == 0) rewrite.emplace_back(k, RoundValue(k, 1));
  }
  PutAll(*client_, cold, &model);
  PutAll(*client_, rewrite, &model);
  for (int round = 0; round < 40; ++round) {
    KeyValues hot;
    for (int j = 0; j < 10; ++j) {
      const std::string k = absl::StrCat("hot/", j);
      hot.emplace_back(k, RoundValue(k, round));
    }
    PutAll(*client_, hot, &model);
  }

  auto r = client_->Compact(std::nullopt);
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->partitions_size(), 2);
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  auto segs = client_->ListSegments();
  ASSERT_THAT(segs, IsOk());
  std::map<uint32_t, std::vector<v1::Segment>> low;  // dead, under the threshold
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    EXPECT_EQ(r->partitions(p).partition(), p);
    const v1::PartitionStatus& s = st->partitions(p);
    // The hot segments were compacted, by this call or on the server's own.
    EXPECT_GT(s.segments_compacted(), 0u);
    EXPECT_GT(s.bytes_reclaimed(), 0u);
    EXPECT_GE(s.segments_compacted(), r->partitions(p).segments_compacted());
    EXPECT_GE(s.bytes_reclaimed(), r->partitions(p).bytes_reclaimed());
    EXPECT_LT(s.max_segment_dead_ratio(), 0.5);
    EXPECT_EQ(s.compaction_error(), "");
    EXPECT_EQ(s.compaction_errors(), 0u);
    for (const v1::Segment& seg : SealedSegments(*segs, p)) {
      EXPECT_LT(seg.dead_ratio(), 0.5) << seg.id();
      if (seg.dead_ratio() > 0) low[p].push_back(seg);
    }
    ASSERT_FALSE(low[p].empty());  // left alone: under the threshold
  }

  auto zero = client_->Compact(0.0);
  ASSERT_THAT(zero, IsOk());
  auto after = client_->ListSegments();
  ASSERT_THAT(after, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    EXPECT_GE(zero->partitions(p).segments_compacted(), low[p].size());
    EXPECT_GT(zero->partitions(p).records_relocated(), 0u);
    const std::set<uint64_t> ids = SegmentIds(*after, p);
    for (const v1::Segment& s : low[p]) EXPECT_FALSE(ids.contains(s.id())) << s.id();
    for (const v1::Segment& s : SealedSegments(*after, p)) {
      EXPECT_EQ(s.dead_ratio(), 0.0) << s.id();
    }
  }
  ExpectStore(*client_, model, {});
}

TEST_F(ServerTest, CompactWithoutRatioDefaultsToHalfWhenAutomaticCompactionIsOff) {
  options_.partition.segment_size = 256 << 10;
  options_.partition.compaction_dead_ratio = 2;  // never on its own
  options_.partition.checkpoint_interval = absl::ZeroDuration();
  StartFresh();
  std::map<std::string, Stored> model;
  for (int round = 0; round < 40; ++round) {
    KeyValues hot;
    for (int j = 0; j < 10; ++j) {
      const std::string k = absl::StrCat("hot/", j);
      hot.emplace_back(k, RoundValue(k, round));
    }
    PutAll(*client_, hot, &model);
  }
  auto before = client_->Status();
  ASSERT_THAT(before, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    ASSERT_GE(before->partitions(p).max_segment_dead_ratio(), 0.5) << p;
    ASSERT_EQ(before->partitions(p).segments_compacted(), 0u) << p;
  }
  auto r = client_->Compact(std::nullopt);
  ASSERT_THAT(r, IsOk());
  auto st = client_->Status();
  ASSERT_THAT(st, IsOk());
  for (uint32_t p = 0; p < 2; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    EXPECT_GT(r->partitions(p).segments_compacted(), 0u);
    EXPECT_LT(st->partitions(p).max_segment_dead_ratio(), 0.5);
  }
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

// Shutdown with a lame duck: a health watcher sees NOT_SERVING while
// requests are still served; new requests get UNAVAILABLE only after it.
TEST_F(ServerTest, LameDuckReportsNotServingWhileStillServing) {
  options_.lame_duck = absl::Hours(1);  // ended below by EndLameDuck()
  Restart();
  ASSERT_THAT(client_->Put("before", "v"), IsOk());
  grpc::GenericStub stub(client_->channel());
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto call = stub.PrepareCall(&ctx, "/grpc.health.v1.Health/Watch", &cq);
  void* tag;
  bool ok;
  auto step = [&](intptr_t t) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), t);
    return ok;
  };
  auto read = [&](intptr_t t) -> std::string {
    grpc::ByteBuffer resp;
    call->Read(&resp, reinterpret_cast<void*>(t));
    if (!step(t)) return "(stream ended)";
    std::vector<grpc::Slice> slices;
    resp.Dump(&slices).IgnoreError();
    std::string out;
    for (const auto& sl : slices) out.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    return out;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  grpc::Slice empty("");
  grpc::ByteBuffer req(&empty, 1);
  call->Write(req, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  // HealthCheckResponse.status: SERVING = 1, NOT_SERVING = 2.
  EXPECT_EQ(read(3), std::string("\x08\x01", 2));

  std::thread stopper([&] { server_->Shutdown(absl::Seconds(5)); });
  EXPECT_EQ(read(4), std::string("\x08\x02", 2));
  // The watch ends here: an open stream would hold the shutdown that
  // follows for its whole grace period.
  ctx.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  // Lame duck: still served.
  EXPECT_THAT(client_->Put("during", "v"), IsOk());
  server_->EndLameDuck();
  stopper.join();
  auto after = client_->Put("after", "v");
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable) << after.status();
  // Both acknowledged writes survive the restart.
  server_.reset();
  options_.lame_duck = absl::ZeroDuration();
  StartServer();
  for (const char* key : {"before", "during"}) {
    auto g = client_->Get(key);
    ASSERT_THAT(g, IsOk());
    EXPECT_TRUE(g->found()) << key;
  }
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
