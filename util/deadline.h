// A gRPC deadline `d` from now, for any absl::Duration a flag can hold.
// now + ToChronoMilliseconds(d) overflows for an infinite or very long `d`
// (system_clock counts nanoseconds: the sum wraps to a time in the past, so
// the call fails at once); those become "no deadline" instead.
#ifndef SEGKV_UTIL_DEADLINE_H_
#define SEGKV_UTIL_DEADLINE_H_

#include <chrono>

#include "absl/time/time.h"

namespace segkv {

inline std::chrono::system_clock::time_point DeadlineAfter(absl::Duration d) {
  const auto now = std::chrono::system_clock::now();
  if (d <= absl::ZeroDuration()) return now;
  // 100 years: far from overflow, and longer than any call should wait.
  if (d >= absl::Hours(24 * 365 * 100)) return std::chrono::system_clock::time_point::max();
  return now + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                   absl::ToChronoNanoseconds(d));
}

}  // namespace segkv

#endif  // SEGKV_UTIL_DEADLINE_H_
