#!/usr/bin/env bash
# Installs the Debian 12 packages segkv builds, tests and benchmarks with.
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

PKGS=(
  bazel-bootstrap bazel-rules-java
  g++ pkg-config python3
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgoogle-glog-dev libgflags-dev
  libgtest-dev libgmock-dev
  librocksdb-dev libxxhash-dev libjemalloc-dev
)
# Optional extra packages for a particular job (e.g. etcd for service benches).
PKGS+=("$@")

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
