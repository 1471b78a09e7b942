#!/usr/bin/env bash
# Runs a storage benchmark with the optimised build:
#   tools/bench.sh [engine] [args...]   one partition vs RocksDB (engine_bench)
#   tools/bench.sh recovery [args...]   checkpoint restart vs full replay, and
#                                       puts with vs without compaction
#                                       (recovery_bench)
#   tools/bench.sh compaction [args...] compaction with its shortcuts and
#                                       young-segment wait vs reading every
#                                       victim at once (compaction_bench)
# Arguments go to the benchmark, e.g. --keys=10000000 --json.
set -euo pipefail
cd "$(dirname "$0")/.."
target=engine_bench
case "${1:-}" in
  engine) shift ;;
  recovery) target=recovery_bench; shift ;;
  compaction) target=compaction_bench; shift ;;
esac
tools/install_deps.sh
bazel build --config=opt "//bench:${target}"
exec "bazel-bin/bench/${target}" "$@"
