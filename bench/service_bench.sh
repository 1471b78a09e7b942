#!/usr/bin/env bash
# service_bench: segkvd, the no-op gRPC server (same KV service, does no
# work: the gRPC limit of this machine) and etcd, driven by the same
# segkv-bench loads on loopback in one run. Prints every result line, the
# ratios, and with --json a JSON object as the last line.
#
#   bench/service_bench.sh [--json] [--duration=10s]
#
# The client shares the machine with the server under test. segkvd runs
# with --workers=1 here: on a 2-core machine that also runs the load
# generator, one worker thread plus gRPC's threads use the cores best (its
# default is one worker per core, for a machine of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

json=0
duration=10s
for arg in "$@"; do
  case "$arg" in
    --json) json=1 ;;
    --duration=*) duration="${arg#--duration=}" ;;
    *) echo "usage: $0 [--json] [--duration=10s]" >&2; exit 2 ;;
  esac
done

tools/install_deps.sh etcd-server
bazel build --config=opt //server:segkvd //bench:segkv-bench //bench:segkv-noop-server >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/segkv-service-bench-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a server that prints "... listening on HOST:PORT" and sets $addr.
start_listener() {
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/.*listening on //p' "$work/$name.out")
    if [ -n "$addr" ]; then return; fi
    sleep 0.1
  done
  echo "service_bench: $name did not start:" >&2
  cat "$work/$name.err" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench() {  # label, segkv-bench flags...
  local label=$1; shift
  local out
  out=$(bazel-bin/bench/segkv-bench --duration="$duration" --json "$@")
  echo "$out" | grep '^segkv-bench' | sed "s/^/[$label] /" >&2
  echo "$out" | tail -1 >"$work/$label.json"
}

segkvd=bazel-bin/server/segkvd
stop_all() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
}

start_listener segkvd $segkvd --listen=127.0.0.1:0 --data_dir="$work/segkv-interval" \
  --workers=1 --durability=interval
sk=$addr
start_listener noop bazel-bin/bench/segkv-noop-server --listen=127.0.0.1:0
noop=$addr

bench put_segkv --target=segkv --endpoint="$sk" --mix=put:100 --inflight=64
bench put_noop --target=noop --endpoint="$noop" --mix=put:100 --inflight=64
bench get_segkv --target=segkv --endpoint="$sk" --mix=get:100 --inflight=64 --preload
bench get_noop --target=noop --endpoint="$noop" --mix=get:100 --inflight=64 --preload
bench batch_segkv --target=segkv --endpoint="$sk" --mix=batch_put:100 --batch=100 --inflight=16
bench batch_noop --target=noop --endpoint="$noop" --mix=batch_put:100 --batch=100 --inflight=16
stop_all

start_listener segkvd-always $segkvd --listen=127.0.0.1:0 --data_dir="$work/segkv-always" \
  --workers=1 --durability=always
bench sync_put_segkv --target=segkv --endpoint="$addr" --mix=put:100 --inflight=256
stop_all

client_port=$(free_port)
peer_port=$(free_port)
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client_port" \
  --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$peer_port" \
  --logger=zap --log-level=error >"$work/etcd.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$client_port") 2>/dev/null && break
  sleep 0.1
done
bench etcd_put --target=etcd --endpoint="127.0.0.1:$client_port" --mix=put:100 --inflight=256

python3 - "$work" "$json" <<'PY'
import json, sys
work, want_json = sys.argv[1], sys.argv[2] == "1"
r = {k: json.load(open(f"{work}/{k}.json")) for k in
     ["put_segkv", "put_noop", "get_segkv", "get_noop", "batch_segkv",
      "batch_noop", "sync_put_segkv", "etcd_put"]}
def ratio(a, b): return a / b if b else 0.0
rows = [
  ("unary Put @64 (interval) QPS", r["put_segkv"]["qps"], r["put_noop"]["qps"], "no-op", ">= 0.85"),
  ("unary Put @64 p99 us", r["put_segkv"]["p99_us"], r["put_noop"]["p99_us"], "no-op", "<= 1.3"),
  ("unary Get @64 QPS", r["get_segkv"]["qps"], r["get_noop"]["qps"], "no-op", ">= 0.85"),
  ("unary Get @64 p99 us", r["get_segkv"]["p99_us"], r["get_noop"]["p99_us"], "no-op", "<= 1.3"),
  ("BatchWrite 100 keys/s", r["batch_segkv"]["keys_per_s"], r["batch_noop"]["keys_per_s"], "no-op", ">= 0.7"),
  ("durable Put @256 QPS", r["sync_put_segkv"]["qps"], r["etcd_put"]["qps"], "etcd", ">= 5"),
]
print(f"{'load':32} {'segkv':>12} {'other':>12} {'vs':>6} {'ratio':>7}  bar")
for name, a, b, other, bar in rows:
  print(f"{name:32} {a:12.0f} {b:12.0f} {other:>6} {ratio(a, b):7.2f}  {bar}")
if want_json:
  print(json.dumps({
    "put_qps": round(r["put_segkv"]["qps"]), "get_qps": round(r["get_segkv"]["qps"]),
    "noop_qps": round(r["put_noop"]["qps"]), "noop_get_qps": round(r["get_noop"]["qps"]),
    "batch_put_keys_per_s": round(r["batch_segkv"]["keys_per_s"]),
    "noop_batch_keys_per_s": round(r["batch_noop"]["keys_per_s"]),
    "sync_put_qps": round(r["sync_put_segkv"]["qps"]), "etcd_put_qps": round(r["etcd_put"]["qps"]),
    "put_p99_us": r["put_segkv"]["p99_us"], "noop_p99_us": r["put_noop"]["p99_us"],
    "get_p99_us": r["get_segkv"]["p99_us"], "noop_get_p99_us": r["get_noop"]["p99_us"],
    "put_ratio": round(ratio(r["put_segkv"]["qps"], r["put_noop"]["qps"]), 3),
    "get_ratio": round(ratio(r["get_segkv"]["qps"], r["get_noop"]["qps"]), 3),
    "batch_ratio": round(ratio(r["batch_segkv"]["keys_per_s"], r["batch_noop"]["keys_per_s"]), 3),
    "sync_vs_etcd": round(ratio(r["sync_put_segkv"]["qps"], r["etcd_put"]["qps"]), 2),
  }))
PY
