#!/usr/bin/env bash
# segkv's main job. Until the gRPC server lands this runs the storage
# engine's benchmark against RocksDB (see tools/bench.sh).
set -euo pipefail
exec "$(dirname "$0")/bench.sh" "$@"
