#!/usr/bin/env bash
# Runs the engine benchmark (segkv partition vs RocksDB) with the optimised
# build. Arguments go to the benchmark, e.g. --keys=10000000 --json.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
bazel build --config=opt //bench:engine_bench
exec bazel-bin/bench/engine_bench "$@"
