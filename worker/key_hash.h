// The one hash of a key that segkv uses everywhere: XXH3-64. The high 32
// bits are the index fingerprint (worker/hash_index.h); the low 32 bits pick
// the partition (server routing), so the two stay independent. The value is
// stable across processes and versions: changing it changes which partition
// owns a key and invalidates index checkpoints.
#ifndef SEGKV_WORKER_KEY_HASH_H_
#define SEGKV_WORKER_KEY_HASH_H_

#include <cstdint>
#include "absl/strings/string_view.h"

#define XXH_INLINE_ALL
#include <xxhash.h>
#undef XXH_INLINE_ALL

namespace segkv::worker {

inline uint64_t KeyHash(absl::string_view key) {
  return XXH3_64bits(key.data(), key.size());
}

inline uint32_t PartitionOf(uint64_t key_hash, uint32_t partitions) {
  return static_cast<uint32_t>(key_hash & 0xffffffffu) % partitions;
}

}  // namespace segkv::worker

#endif  // SEGKV_WORKER_KEY_HASH_H_
