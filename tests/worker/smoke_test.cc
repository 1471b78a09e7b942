#include "gtest/gtest.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"

namespace segkv::worker {
TEST(Smoke, PutGet) {
  MemFileSystem fs;
  PartitionOptions o;
  o.fs = &fs;
  o.dir = "/d/p0";
  o.segment_size = 64 << 10;
  o.max_value_size = 1024;
  auto p = Partition::Open(o);
  ASSERT_TRUE(p.ok()) << p.status();
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE((*p)->Put("k" + std::to_string(i), std::string(100, 'a' + i % 26)).ok());
  }
  ReadResult r;
  ASSERT_TRUE((*p)->Get("k7", &r).ok());
  EXPECT_TRUE(r.found);
  EXPECT_EQ(r.value, std::string(100, 'a' + 7));
  p->reset();
  auto q = Partition::Open(o);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE((*q)->Get("k1999", &r).ok());
  EXPECT_TRUE(r.found);
  EXPECT_EQ((*q)->Stats().keys, 2000u);
}
}  // namespace segkv::worker
