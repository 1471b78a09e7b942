// Helpers the storage benchmarks share (engine_bench, recovery_bench).
#ifndef SEGKV_BENCH_BENCH_UTIL_H_
#define SEGKV_BENCH_BENCH_UTIL_H_

#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"

namespace segkv::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// "1.23x", or "-" when either side is missing.
inline std::string Ratio(double a, double b) {
  return b > 0 && a > 0 ? absl::StrFormat("%.2fx", a / b) : "-";
}

// Key i is "key" + 12 decimal digits, padded with '.' to the key size
// (>= 15). Keys are formatted on the fly into a reused buffer rather than
// looked up in a table, so the driver adds no cache miss of its own.
class KeyMaker {
 public:
  explicit KeyMaker(int size) : buf_(size, '.') { std::memcpy(buf_.data(), "key", 3); }
  const std::string& operator()(uint64_t i) {
    for (int d = 14; d >= 3; --d, i /= 10) buf_[d] = static_cast<char>('0' + i % 10);
    return buf_;
  }

 private:
  std::string buf_;
};

// A fresh directory under $TMPDIR (or /tmp) named after `name`; empty if
// it cannot be made.
inline std::string MakeScratchDir(const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return "";
  return tmpl;
}

}  // namespace segkv::bench

#endif  // SEGKV_BENCH_BENCH_UTIL_H_
