// How many CPUs this process may use, for the default worker count.
#ifndef SEGKV_SERVER_CPUS_H_
#define SEGKV_SERVER_CPUS_H_

#include <vector>

#include "absl/strings/string_view.h"

namespace segkv::server {

// The CPUs this process may run on (sched_getaffinity: a cpuset or
// taskset narrows it), in increasing order.
std::vector<int> AllowedCpus();

// CPUs' worth of time a cgroup v2 `cpu.max` file ("<quota> <period>" or
// "max <period>") allows, rounded up; 0 for no limit or an unreadable
// line. A Kubernetes CPU limit of 1500m reads "150000 100000": 2.
int CpusFromCgroupCpuMax(absl::string_view cpu_max);

// min(AllowedCpus().size(), the limit in /sys/fs/cgroup/cpu.max), at
// least 1: what --workers=0 means for a new data directory.
int UsableCpus();

}  // namespace segkv::server

#endif  // SEGKV_SERVER_CPUS_H_
