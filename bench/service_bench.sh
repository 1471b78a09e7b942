#!/usr/bin/env bash
# service_bench: segkvd, the no-op gRPC server (same KV service, does no
# work: the gRPC limit of this machine) and etcd, driven by the same
# segkv-bench loads on loopback in one run. Prints every result line, the
# ratios, and with --json a JSON object as the last line.
#
#   bench/service_bench.sh [--json] [--duration=5s] [--rounds=3]
#
# Each comparison runs as --rounds alternating pairs (segkv then the other
# side, then the other way round) and reports the median of each side and the ratio of the medians. On a small
# shared machine one long run of each side can land in different phases of
# the host's load, and the no-op server's own throughput is bimodal here
# (about 30k or 50k unary QPS from one run to the next); alternating rounds
# expose both sides to the same conditions. While one server is measured
# the others are stopped (SIGSTOP), so no idle server's background work
# (segkvd compacting what the last load wrote, its syncs and checkpoints;
# etcd's own) runs in another's window: it runs, and counts, in its own.
#
# The client shares the machine with the server under test. segkvd runs
# with --workers=1 here: on a 2-core machine that also runs the load
# generator, one worker thread plus gRPC's threads use the cores best (its
# default is one worker per core, for a machine of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

json=0
duration=5s
rounds=3
for arg in "$@"; do
  case "$arg" in
    --json) json=1 ;;
    --duration=*) duration="${arg#--duration=}" ;;
    --rounds=*) rounds="${arg#--rounds=}" ;;
    *) echo "usage: $0 [--json] [--duration=5s] [--rounds=3]" >&2; exit 2 ;;
  esac
done
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
  echo "service_bench: --rounds must be a positive integer" >&2
  exit 2
fi

tools/install_deps.sh etcd-server
bazel build --config=opt //server:segkvd //bench:segkv-bench //bench:segkv-noop-server >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/segkv-service-bench-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
failed=0

# Starts a server that prints "... listening on HOST:PORT" and sets $addr.
start_listener() {
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/.*listening on //p' "$work/$name.out")
    if [ -n "$addr" ]; then return; fi
    kill -0 "${pids[-1]}" 2>/dev/null || break  # it exited
    sleep 0.1
  done
  echo "service_bench: $name did not start:" >&2
  cat "$work/$name.err" >&2
  exit 1
}

# Two distinct free ports (etcd takes a client and a peer port; it has no
# "port 0"). Both are held until both are picked, so they differ; they are
# free again when etcd binds them, so another process could take one first:
# etcd then exits and the script says so.
free_ports() {
  python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])'
}

# bench LABEL FLAGS...: one segkv-bench run; appends its JSON line to
# $work/LABEL.jsonl. A failed run (segkv-bench exits non-zero: over 1% of
# requests failed) is reported and appends `null` (left out of the medians;
# the rounds still pair up); the script goes on and exits 1 at the end.
bench() {
  local label=$1; shift
  local out rc=0
  out=$(bazel-bin/bench/segkv-bench --duration="$duration" --json "$@") || rc=$?
  { echo "$out" | grep '^segkv-bench' || true; } | sed "s/^/[$label] /" >&2
  if [ "$rc" -ne 0 ]; then
    echo "service_bench: [$label] segkv-bench failed (exit $rc); this run is left out" >&2
    echo null >>"$work/$label.jsonl"
    failed=1
    return 0
  fi
  echo "$out" | tail -1 >>"$work/$label.jsonl"
}

# Only the server under test runs: the others are stopped (SIGSTOP), so the
# idle one's background work (segkvd's interval syncs, checkpoints and
# compaction of what the last load wrote; etcd's) never lands in the other
# side's measured window. It runs, and is charged, in its own rounds.
only() {  # PID: resume it, stop every other server
  for p in "${pids[@]}"; do
    if [ "$p" = "$1" ]; then kill -CONT "$p"; else kill -STOP "$p" 2>/dev/null || true; fi
  done
}

# pair LABEL_A PID_A "FLAGS_A" LABEL_B PID_B "FLAGS_B": --rounds rounds,
# alternating which side goes first.
pair() {
  local a=$1 pa=$2 fa=$3 b=$4 pb=$5 fb=$6
  for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then
      only "$pa"; bench "$a" $fa; only "$pb"; bench "$b" $fb
    else
      only "$pb"; bench "$b" $fb; only "$pa"; bench "$a" $fa
    fi
  done
}

segkvd=bazel-bin/server/segkvd

start_listener segkvd $segkvd --listen=127.0.0.1:0 --data_dir="$work/segkv-interval" \
  --workers=1 --durability=interval
sk=$addr
sk_pid=${pids[-1]}
start_listener noop bazel-bin/bench/segkv-noop-server --listen=127.0.0.1:0
noop=$addr
noop_pid=${pids[-1]}

# Each run also reports the CPU time the server process used per key in
# its measured window (--server_pid): less noisy than QPS on this machine.
sk_cpu="--server_pid=$sk_pid"
noop_cpu="--server_pid=$noop_pid"
pair put_segkv "$sk_pid" "--target=segkv --endpoint=$sk --mix=put:100 --inflight=64 $sk_cpu" \
     put_noop "$noop_pid" "--target=noop --endpoint=$noop --mix=put:100 --inflight=64 $noop_cpu"
pair get_segkv "$sk_pid" "--target=segkv --endpoint=$sk --mix=get:100 --inflight=64 --preload $sk_cpu" \
     get_noop "$noop_pid" "--target=noop --endpoint=$noop --mix=get:100 --inflight=64 --preload $noop_cpu"
pair batch_segkv "$sk_pid" "--target=segkv --endpoint=$sk --mix=batch_put:100 --batch=100 --inflight=16 $sk_cpu" \
     batch_noop "$noop_pid" "--target=noop --endpoint=$noop --mix=batch_put:100 --batch=100 --inflight=16 $noop_cpu"
kill -CONT "$sk_pid"; kill "$sk_pid"; wait "$sk_pid" 2>/dev/null || true
keep=(); for p in "${pids[@]}"; do [ "$p" = "$sk_pid" ] || keep+=("$p"); done
pids=("${keep[@]}")

start_listener segkvd-always $segkvd --listen=127.0.0.1:0 --data_dir="$work/segkv-always" \
  --workers=1 --durability=always
sk=$addr
sk_pid=${pids[-1]}
sk_cpu="--server_pid=$sk_pid"
read -r client_port peer_port < <(free_ports)
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client_port" \
  --advertise-client-urls "http://127.0.0.1:$client_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$peer_port" \
  --logger=zap --log-level=error >"$work/etcd.out" 2>&1 &
pids+=($!)
etcd_pid=$!
etcd_cpu="--server_pid=$etcd_pid"
etcd_up=0
for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$client_port") 2>/dev/null; then etcd_up=1; break; fi
  kill -0 "$etcd_pid" 2>/dev/null || break  # it exited
  sleep 0.1
done
# Its port accepts before it has elected itself leader: wait until a Put
# goes through.
if [ "$etcd_up" = 1 ]; then
  etcd_up=0
  for _ in $(seq 1 100); do
    if timeout 10 bazel-bin/bench/segkv-bench --target=etcd --endpoint="127.0.0.1:$client_port" \
         --mix=put:100 --inflight=1 --duration=100ms --warmup=0s >/dev/null 2>&1; then
      etcd_up=1; break
    fi
    kill -0 "$etcd_pid" 2>/dev/null || break
    sleep 0.1
  done
fi
if [ "$etcd_up" != 1 ]; then
  echo "service_bench: etcd did not start serving on 127.0.0.1:$client_port:" >&2
  cat "$work/etcd.out" >&2
  exit 1
fi
pair sync_put_segkv "$sk_pid" "--target=segkv --endpoint=$sk --mix=put:100 --inflight=256 $sk_cpu" \
     etcd_put "$etcd_pid" "--target=etcd --endpoint=127.0.0.1:$client_port --mix=put:100 --inflight=256 $etcd_cpu"
# The most any server could reach at this load here: the no-op server at
# 256 in flight. It bounds what the durable-Put-vs-etcd ratio can be.
only "$noop_pid"
for r in $(seq 1 "$rounds"); do
  bench put256_noop --target=noop --endpoint="$noop" --mix=put:100 --inflight=256 $noop_cpu
done

python3 - "$work" "$json" "$rounds" <<'PY'
import json, statistics, sys
work, want_json, rounds = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
import os
def load(k):  # a label none of whose runs succeeded has no file
  path = f"{work}/{k}.jsonl"
  return [json.loads(l) for l in open(path)] if os.path.exists(path) else []
runs = {k: load(k) for k in
        ["put_segkv", "put_noop", "get_segkv", "get_noop", "batch_segkv",
         "batch_noop", "sync_put_segkv", "etcd_put", "put256_noop"]}
def num(x, fmt):  # a figure no run produced prints as n/a
  return "n/a" if x is None else format(x, fmt)
def rnd(x, n=None):
  return None if x is None else round(x, n)
# Each figure is the median over the rounds. A CPU time segkv-bench could
# not read is -1: left out, and a figure with no round at all is None.
def median(vals):
  vals = [v for v in vals if v is not None and v >= 0]
  return statistics.median(vals) if vals else None
r = {k: {f: median(x[f] for x in v if x is not None)
         for f in ("qps", "keys_per_s", "p99_us", "server_cpu_us_per_key",
                   "client_cpu_us_per_key")}
     for k, v in runs.items()}
def ratio(a, b): return a / b if a is not None and b else 0.0
def cpu(x): return "n/a" if x is None else f"{x:.2f}"
print(f"medians of {rounds} alternating rounds each")
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
  print(f"{name:32} {num(a, '12.0f'):>12} {num(b, '12.0f'):>12} {other:>6} {ratio(a, b):7.2f}  {bar}")
print(f"ceiling of the line above: the no-op server at Put @256 does {num(r['put256_noop']['qps'], '.0f')} QPS, "
      f"{ratio(r['put256_noop']['qps'], r['etcd_put']['qps']):.2f}x etcd")
print("CPU time per key in the measured window, microseconds (medians; steadier than QPS):")
print(f"{'load':32} {'segkv srv':>12} {'other srv':>12} {'vs':>6} {'ratio':>7} {'client(s)':>10} {'client(o)':>10}")
cpu_rows = [
  ("unary Put @64", "put_segkv", "put_noop", "no-op"),
  ("unary Get @64", "get_segkv", "get_noop", "no-op"),
  ("BatchWrite 100 (per key)", "batch_segkv", "batch_noop", "no-op"),
  ("durable Put @256", "sync_put_segkv", "etcd_put", "etcd"),
]
for name, a, b, other in cpu_rows:
  x, y = r[a]["server_cpu_us_per_key"], r[b]["server_cpu_us_per_key"]
  print(f"{name:32} {cpu(x):>12} {cpu(y):>12} {other:>6} {ratio(x, y):7.2f} "
        f"{cpu(r[a]['client_cpu_us_per_key']):>10} {cpu(r[b]['client_cpu_us_per_key']):>10}")
print(f"{'no-op Put @256':32} {'':>12} {cpu(r['put256_noop']['server_cpu_us_per_key']):>12} "
      f"{'':>6} {'':>7} {'':>10} {cpu(r['put256_noop']['client_cpu_us_per_key']):>10}")
print("per round (segkv / other side):")
for a, b, f in [("put_segkv", "put_noop", "qps"), ("get_segkv", "get_noop", "qps"),
                ("batch_segkv", "batch_noop", "keys_per_s"), ("sync_put_segkv", "etcd_put", "qps")]:
  one = lambda x: "failed" if x is None else f"{x[f]:.0f}"
  print(f"  {a:16} " + "  ".join(f"{one(x)}/{one(y)}" for x, y in zip(runs[a], runs[b])))
if want_json:
  print(json.dumps({
    "put_qps": rnd(r["put_segkv"]["qps"]), "get_qps": rnd(r["get_segkv"]["qps"]),
    "noop_qps": rnd(r["put_noop"]["qps"]), "noop_get_qps": rnd(r["get_noop"]["qps"]),
    "batch_put_keys_per_s": rnd(r["batch_segkv"]["keys_per_s"]),
    "noop_batch_keys_per_s": rnd(r["batch_noop"]["keys_per_s"]),
    "sync_put_qps": rnd(r["sync_put_segkv"]["qps"]), "etcd_put_qps": rnd(r["etcd_put"]["qps"]),
    "put_p99_us": r["put_segkv"]["p99_us"], "noop_p99_us": r["put_noop"]["p99_us"],
    "get_p99_us": r["get_segkv"]["p99_us"], "noop_get_p99_us": r["get_noop"]["p99_us"],
    "put_ratio": rnd(ratio(r["put_segkv"]["qps"], r["put_noop"]["qps"]), 3),
    "get_ratio": rnd(ratio(r["get_segkv"]["qps"], r["get_noop"]["qps"]), 3),
    "batch_ratio": rnd(ratio(r["batch_segkv"]["keys_per_s"], r["batch_noop"]["keys_per_s"]), 3),
    "sync_vs_etcd": rnd(ratio(r["sync_put_segkv"]["qps"], r["etcd_put"]["qps"]), 2),
    "noop_put256_qps": rnd(r["put256_noop"]["qps"]),
    "noop256_vs_etcd": rnd(ratio(r["put256_noop"]["qps"], r["etcd_put"]["qps"]), 2),
    "put_server_cpu_us": r["put_segkv"]["server_cpu_us_per_key"],
    "noop_put_server_cpu_us": r["put_noop"]["server_cpu_us_per_key"],
    "get_server_cpu_us": r["get_segkv"]["server_cpu_us_per_key"],
    "noop_get_server_cpu_us": r["get_noop"]["server_cpu_us_per_key"],
    "batch_server_cpu_us_per_key": r["batch_segkv"]["server_cpu_us_per_key"],
    "noop_batch_server_cpu_us_per_key": r["batch_noop"]["server_cpu_us_per_key"],
    "sync_put_server_cpu_us": r["sync_put_segkv"]["server_cpu_us_per_key"],
    "etcd_put_server_cpu_us": r["etcd_put"]["server_cpu_us_per_key"],
    "noop_put256_server_cpu_us": r["put256_noop"]["server_cpu_us_per_key"],
    "client_cpu_us": {k: r[k]["client_cpu_us_per_key"] for k in runs},
    "rounds": rounds,
  }))
PY
if [ "$failed" != 0 ]; then
  echo "service_bench: some runs failed (see above); their figures are left out" >&2
  exit 1
fi
