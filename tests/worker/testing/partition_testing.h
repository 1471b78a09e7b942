// Helpers shared by the storage engine's tests.
#ifndef SEGKV_TESTS_WORKER_TESTING_PARTITION_TESTING_H_
#define SEGKV_TESTS_WORKER_TESTING_PARTITION_TESTING_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "worker/manifest.h"
#include "worker/mem_fs.h"
#include "worker/partition.h"

namespace segkv::worker::testing {

inline const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

// Matches an absl::Status or absl::StatusOr<T> with the given code.
MATCHER_P(StatusIs, code,
          std::string("has status code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = StatusOf(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = StatusOf(arg);
  *result_listener << "status is " << s;
  return s.ok();
}

inline constexpr char kDir[] = "/data/p0";

// Options for tests: the in-memory file system, tiny segments (8 KiB) and
// values of at most 512 bytes, so a few dozen records fill a segment.
inline PartitionOptions SmallOptions(MemFileSystem* fs,
                                     Durability d = Durability::kAlways) {
  PartitionOptions o;
  o.fs = fs;
  o.dir = kDir;
  o.segment_size = 8 << 10;
  o.max_value_size = 512;
  o.write_buffer_size = 1 << 10;
  o.durability = d;
  return o;
}

inline std::string SegmentPath(uint64_t id, const std::string& dir = kDir) {
  return dir + "/" + SegmentFileName(id);
}

}  // namespace segkv::worker::testing

#endif  // SEGKV_TESTS_WORKER_TESTING_PARTITION_TESTING_H_
