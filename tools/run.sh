#!/usr/bin/env bash
# segkv's main job: builds and starts segkvd on 127.0.0.1:7379 with its data
# in ./segkv-data (override with SEGKV_DATA / SEGKV_LISTEN, or pass segkvd
# flags as arguments). Installs the Debian packages it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
bazel build --config=opt //server:segkvd //client:segkvctl >&2
data="${SEGKV_DATA:-$PWD/segkv-data}"
listen="${SEGKV_LISTEN:-127.0.0.1:7379}"
cat >&2 <<MSG
segkvd: data in $data, serving on $listen (Ctrl-C stops it cleanly).
Try, from another shell in $PWD:
  bazel-bin/client/segkvctl --endpoint=$listen put hello world
  bazel-bin/client/segkvctl --endpoint=$listen get hello
  bazel-bin/client/segkvctl --endpoint=$listen status
MSG
exec bazel-bin/server/segkvd --data_dir="$data" --listen="$listen" "$@"
