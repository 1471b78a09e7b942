// Model-based test: random operations against a Partition and a std::map
// side by side, with clean reopens (full replay) in between, under every
// durability policy. After every step the two must agree on every key,
// value and version, and the partition's key count and live bytes must
// match the model.
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/worker/testing/partition_testing.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"
#include "worker/record.h"

namespace segkv::worker {
namespace {

using ::segkv::worker::testing::IsOk;
using ::segkv::worker::testing::SmallOptions;
using ::segkv::worker::testing::StatusIs;

struct Entry {
  std::string value;
  uint64_t version;
};

class ModelTest : public ::testing::TestWithParam<Durability> {};

void CheckAgainstModel(Partition& p, const std::map<std::string, Entry>& model,
                       int key_space) {
  ReadResult r;
  uint64_t live = 0;
  for (int i = 0; i < key_space; ++i) {
    const std::string key = absl::StrCat("k", i);
    ASSERT_THAT(p.Get(key, &r), IsOk());
    auto it = model.find(key);
    if (it == model.end()) {
      ASSERT_FALSE(r.found) << key;
      continue;
    }
    ASSERT_TRUE(r.found) << key;
    ASSERT_EQ(r.value, it->second.value) << key;
    ASSERT_EQ(r.version, it->second.version) << key;
    live += RecordSize(key.size(), it->second.value.size());
  }
  EXPECT_EQ(p.Stats().keys, model.size());
  EXPECT_EQ(p.Stats().live_bytes, live);
}

TEST_P(ModelTest, AgreesWithMapAcrossReopens) {
  for (int seed = 0; seed < 60; ++seed) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    std::mt19937_64 rng(seed);
    MemFileSystem fs;
    PartitionOptions o = SmallOptions(&fs, GetParam());
    o.write_buffer_size = 128 + rng() % 4096;
    const int key_space = 10 + rng() % 200;
    auto p = Partition::Open(o);
    ASSERT_THAT(p, IsOk());
    std::map<std::string, Entry> model;
    std::vector<WriteOp> ops;
    std::vector<std::string> keys, values;
    std::vector<WriteResult> results;
    for (int step = 0; step < 8; ++step) {
      const int n = 200 + rng() % 800;
      for (int i = 0; i < n; ++i) {
        const size_t batch = rng() % 3 == 0 ? 1 + rng() % 20 : 1;
        keys.clear();
        values.clear();
        for (size_t b = 0; b < batch; ++b) {
          keys.push_back(absl::StrCat("k", rng() % key_space));
          values.push_back(std::string(rng() % 300, static_cast<char>('a' + rng() % 26)));
        }
        ops.clear();
        for (size_t b = 0; b < batch; ++b) {
          WriteOp op = rng() % 4 == 0 ? WriteOp::Delete(keys[b])
                                      : WriteOp::Put(keys[b], values[b]);
          op.return_previous = rng() % 2;
          if (rng() % 5 == 0) {
            auto it = model.find(keys[b]);
            const uint64_t cur = it == model.end() ? 0 : it->second.version;
            op.expected_version = rng() % 3 == 0 ? cur + 1 : cur;
          }
          ops.push_back(op);
        }
        ASSERT_THAT(p->get()->ApplyBatch(ops, &results), IsOk());
        for (size_t b = 0; b < batch; ++b) {
          const WriteOp& op = ops[b];
          const WriteResult& res = results[b];
          auto it = model.find(std::string(op.key));
          const uint64_t cur = it == model.end() ? 0 : it->second.version;
          ASSERT_EQ(res.previous_version, cur);
          ASSERT_EQ(res.existed, it != model.end());
          if (op.expected_version.has_value() && *op.expected_version != cur) {
            ASSERT_THAT(res.status, StatusIs(absl::StatusCode::kFailedPrecondition));
            continue;
          }
          ASSERT_THAT(res.status, IsOk());
          if (op.return_previous && it != model.end()) {
            ASSERT_EQ(res.previous_value, it->second.value);
          }
          if (op.type == WriteOp::Type::kPut) {
            ASSERT_GT(res.version, cur);
            model[std::string(op.key)] = Entry{std::string(op.value), res.version};
          } else if (it != model.end()) {
            model.erase(it);
          }
        }
      }
      CheckAgainstModel(**p, model, key_space);
      if (rng() % 2) {
        ASSERT_THAT((*p)->Close(), IsOk());
        p->reset();
        p = Partition::Open(o);
        ASSERT_THAT(p, IsOk());
        CheckAgainstModel(**p, model, key_space);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, ModelTest,
                         ::testing::Values(Durability::kAlways,
                                           Durability::kInterval,
                                           Durability::kNone),
                         [](const auto& info) {
                           return std::string(DurabilityName(info.param));
                         });

}  // namespace
}  // namespace segkv::worker
