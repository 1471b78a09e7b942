// The layout of segkvd's data directory:
//   <dir>/SEGKV     identity: format version and partition count
//   <dir>/p<k>/     partition k (MANIFEST and segments, docs/format/log.md)
// The partition count is fixed when the directory is created: keys are
// routed by hash modulo the count, so opening it with another count would
// look every key up in the wrong partition.
#ifndef SEGKV_SERVER_DATA_DIR_H_
#define SEGKV_SERVER_DATA_DIR_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "worker/fs.h"

namespace segkv::server {

// Creates `dir` for `partitions` partitions, or checks that an existing one
// was created for that many (FAILED_PRECONDITION with a clear message if
// not; DATA_LOSS if its identity file is damaged).
absl::Status OpenDataDir(worker::FileSystem* fs, const std::string& dir,
                         uint32_t partitions);

std::string PartitionDir(const std::string& dir, uint32_t partition);

}  // namespace segkv::server

#endif  // SEGKV_SERVER_DATA_DIR_H_
