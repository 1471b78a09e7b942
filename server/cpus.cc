#include "server/cpus.h"

#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace segkv::server {

std::vector<int> AllowedCpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
    }
  }
  if (cpus.empty()) {
    const int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int c = 0; c < n; ++c) cpus.push_back(c);
  }
  return cpus;
}

int CpusFromCgroupCpuMax(absl::string_view cpu_max) {
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::StripAsciiWhitespace(cpu_max), ' ', absl::SkipEmpty());
  int64_t quota = 0, period = 0;
  if (f.size() != 2 || f[0] == "max" || !absl::SimpleAtoi(f[0], &quota) ||
      !absl::SimpleAtoi(f[1], &period) || quota <= 0 || period <= 0) {
    return 0;
  }
  return static_cast<int>((quota + period - 1) / period);
}

int UsableCpus() {
  int n = static_cast<int>(AllowedCpus().size());
  std::ifstream f("/sys/fs/cgroup/cpu.max");
  std::string line;
  if (f && std::getline(f, line)) {
    const int limit = CpusFromCgroupCpuMax(line);
    if (limit > 0) n = std::min(n, limit);
  }
  return std::max(n, 1);
}

}  // namespace segkv::server
