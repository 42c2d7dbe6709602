#!/usr/bin/env bash
# Sluice side-by-side benchmark on the network-namespace lab, in one command (issue 7).
#
#   bench/lab.sh [--quick] [--only GROUPS] [--rounds N] [--results DIR] [--no-build]
#                [--no-doc] [--server-cpu N] [--client-cpu N] [--rate R]
#   bench/lab.sh --scale [--quick] [--rounds N] [--max-queues N] [--results DIR] [--no-build]
#   bench/lab.sh --cluster [--quick] [--rounds N] [--cluster-rate R] [--results DIR] [--no-build]
#
# Builds the release binaries, creates a lab (deploy/lab.sh, unique prefix, removed on exit
# whatever happens), and runs every target with the same client settings, pinned the same
# way: the server under test on --server-cpu (default 0), the client (sluice-load, in the
# peer namespace) on --client-cpu (default 1).
#
# Groups (--only takes a comma list; default all but tls):
#   bypass  both ends spinning, the honest latency comparison (issue 13): A = the bypass
#           client (`sluice-load bypass`: Sluice's own stack on an AF_XDP socket of the
#           peer's veth, address 198.18.0.5) against Sluice on AF_XDP (ws-echo, tcp-echo);
#           B = the kernel client (`sluice-load --spin`) against the busy-polling kernel
#           servers (ref-ws-echo --spin, ref-tcp-echo --spin); C = the floor: bare frames
#           from an AF_XDP socket on the peer's veth to one on the stack's and back, no
#           TCP/IP (`sluice-load floor` -> `sluice-load reflect`; 70 B of payload beside
#           the 64 B WebSocket message, 64 B beside TCP). Scenarios: 1 conn 64 B ping-pong
#           and 100 conns 64 B pipeline 16, WebSocket and TCP; the floor in the ping-pong
#           tables only (one frame per message: not a throughput floor for TCP, which packs
#           many messages into a segment)
#   ws      WebSocket echo: Sluice ws-echo on AF_XDP, Sluice ws-echo on --backend kernel,
#           ref-tungstenite, ref-fastwebsockets, ref-ws-echo --spin, Sluice ws-echo on DPDK
#           (net_af_packet on the same veth; "not available" unless sluice was built with
#           the `dpdk` feature, which the build here adds when pkg-config finds libdpdk);
#           scenarios 1 conn 64 B
#           ping-pong (spinning client), 100 conns 64 B saturation (pipeline 16), 1,000
#           conns 1 KiB open loop at --rate msgs/s (default 20,000)
#   tcp     TCP echo ping-pong: Sluice tcp-echo on AF_XDP, on the kernel backend and on
#           DPDK (as for ws) vs ref-tcp-echo, blocking and --spin (1 conn and 100 conns)
#   bulk    bulk throughput, `sluice-load bulk`: Sluice tcp-discard on AF_XDP vs a kernel
#           discard server (`sluice-load sink`, blocking and --spin), over the same veth,
#           offloads off
#   fanout  gateway broadcast: 1 publisher (POST /publish on the control endpoint) ->
#           1,000 subscribers; Sluice gateway on AF_XDP and on the kernel backend
#           (blocking, and busy-polling with --busy-poll)
#   ceiling the load generator's own ceiling on loopback (rows in the ws/tcp tables)
#   tls     wss (issue 15), not in the default list: A = Sluice ws-echo on AF_XDP, B = Sluice
#           ws-echo --backend kernel (both with --tls-port), C = ref-tungstenite --tls-cert
#           (tokio-rustls); the same rustls client (sluice-load --tls --ca, SNI localhost)
#           for all. Scenarios: 1 conn 64 B ping-pong (spinning client), 100 conns 64 B
#           pipeline 16, full handshakes/s and resumed handshakes/s (`sluice-load
#           handshakes`, 16 slots: connect, TLS, upgrade, close). Rounds A B C A B C ...
#           (--rounds, default 3); medians (min..max), ratios to C, each side's core busy.
#           A P-256 test certificate (CN localhost, SAN localhost + the stack's address) is
#           generated with openssl into RESULTS/tls (no committed key). The peer namespace
#           gets tcp_tw_reuse=1 and a wide port range for the handshake churn. Writes
#           RESULTS/tls/summary.md; does not touch the docs (`--only tls` runs only this).
# Every target is labelled by how its server waits: "spin" (busy-polls: AF_XDP workers,
# the --spin references) or "block" (sleeps in epoll/tokio). Only one server runs at a time.
# Rounds (issue 13): every group runs its targets in turn, A B C ... A B C ..., for
# --rounds rounds (default 3); lab-report shows each figure's median with its range
# (min..max), marks a ratio "~" when the two ranges overlap, and labels client-bound rows
# (a blocking client's core >= 90 % busy, or within 10 % of the generator's ceiling).
#
# --scale (issue 12): for Q = 1, 2, 4, ... up to nproc/2 (or --max-queues), a lab with Q
# veth queues; per round, A = Sluice ws-echo on AF_XDP (--queues Q, workers pinned to cores
# 0..Q-1), B = Q `ref-ws-echo --spin` kernel servers (server i on core i, port 9201+i);
# the same client for both: sluice-load, Q threads pinned to cores nproc/2.., 64
# connections x pipeline 16 x 64 B per thread (thread i talks to server i on B). Rounds
# A B A B ... (--rounds, default 3). Prints per Q the median msgs/s (min..max), the scaling
# against Q = 1, Sluice / kernel, and each side's server- and client-core busy (/proc/stat
# over the measurement window); writes RESULTS/scale.json. Does not touch the docs.
#
# --cluster (issue 17): the gateway's cluster mode over NATS. nats-server (Debian's) on the
# stack namespace's loopback; the same fan-out client as the fanout group (1 publisher,
# POST /publish -> 1,000 subscribers on the AF_XDP gateway, 64 B), each case twice: closed
# loop (the next POST when the last returned: throughput) and open loop at --cluster-rate
# publications/s (default 100, i.e. 100,000 deliveries/s: latency at the same load).
# Per round: A = one node (cluster off; the publisher posts to the subscribers' node),
# B = one node with cluster on (the same, plus each publication handed to NATS),
# C = cross-node (the publisher posts to a second node, a kernel-backend gateway on
# 198.18.0.4; every delivery crosses NATS). Rounds A B C A B C ... (--rounds, default 3).
# Prints per case the median (min..max) of p50, p99 and deliveries/s and the ratios to A;
# writes RESULTS/cluster/summary.txt. Gateways and nats-server share --server-cpu; does
# not touch the docs.
#
# A target that cannot start (e.g. an app the AF_XDP backend does not serve yet) is
# reported as "not available (its error line)" and the run goes on.
#
# Prebuilt binaries (a bare machine without cargo): SLUICE_BIN=path/to/sluice and
# BENCH_BIN_DIR=dir (sluice-load, ref-*, lab-report); either one, or no cargo on PATH,
# skips the build. Needs only deploy/lab.sh beside this script, ip, ethtool, taskset.
#
# Output: one table per scenario (p50/p90/p99/p99.9/max, msgs/s, ratios to the best
# kernel-socket target), JSON under the results dir (default target/bench-lab/<time>),
# docs/bench-lab.svg (percentile plot) and the lab section of docs/BENCHMARKS.md
# (between <!-- lab:begin --> and <!-- lab:end -->) unless --no-doc.
# Runtime after the build: ~15 min by default (3 rounds of every group; measured on the
# 2-core VM, 2026-12-07), a few minutes with --quick (one short round); --scale --quick on
# 2 cores ~15 s, a default --scale ~45 s per Q.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
ONLY="bypass,ws,tcp,bulk,fanout,ceiling"
RESULTS=""
BUILD=1
SCALE=0
ROUNDS=3
MAX_QUEUES=""
DOC=1
SERVER_CPU=0
CLIENT_CPU=1
RATE=""
CLUSTER=0
CLUSTER_RATE=100

die() { echo "bench/lab.sh: $*" >&2; exit 2; }
usage() { sed -n '2,50p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --only) ONLY=${2:?--only needs a list}; shift 2 ;;
    --results) RESULTS=${2:?--results needs a directory}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-doc) DOC=0; shift ;;
    --server-cpu) SERVER_CPU=${2:?}; shift 2 ;;
    --client-cpu) CLIENT_CPU=${2:?}; shift 2 ;;
    --rate) RATE=${2:?}; shift 2 ;;
    --scale) SCALE=1; shift ;;
    --cluster) CLUSTER=1; shift ;;
    --cluster-rate) CLUSTER_RATE=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --max-queues) MAX_QUEUES=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, AF_XDP)"
for g in ${ONLY//,/ }; do
  case "$g" in bypass|ws|tcp|bulk|fanout|ceiling|tls) ;; *) die "unknown group '$g'" ;; esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number"
[ -z "$MAX_QUEUES" ] || [[ "$MAX_QUEUES" =~ ^[1-9][0-9]*$ ]] || die "--max-queues must be a positive number"

if [ "$QUICK" = 1 ]; then
  WARMUP=0.3; DURATION=1; BULK_S=1; RATE=${RATE:-5000}
else
  WARMUP=1; DURATION=5; BULK_S=5; RATE=${RATE:-20000}
fi
[ -n "$RESULTS" ] || RESULTS="$ROOT/target/bench-lab/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
BIN="${BENCH_BIN_DIR:-$ROOT/target/release}"
SLUICE="${SLUICE_BIN:-$ROOT/target/release/sluice}"
# Prebuilt binaries given, or no cargo here: use what is there.
if [ -n "${SLUICE_BIN:-}${BENCH_BIN_DIR:-}" ] || ! command -v cargo >/dev/null 2>&1; then
  BUILD=0
fi

if [ "$BUILD" = 1 ]; then
  echo "== building release binaries" >&2
  # The DPDK target needs the `dpdk` feature, and that needs libdpdk-dev.
  features=()
  if pkg-config --exists libdpdk 2>/dev/null; then features=(--features sluice/dpdk); fi
  (cd "$ROOT" && cargo build --release --locked -p sluice -p sluice-bench --bins "${features[@]}") >&2
fi
[ -x "$SLUICE" ] || die "missing $SLUICE (build it, or set SLUICE_BIN)"
for b in sluice-load ref-tungstenite ref-fastwebsockets ref-tcp-echo ref-ws-echo lab-report; do
  [ -x "$BIN/$b" ] || die "missing $BIN/$b (build it, or set BENCH_BIN_DIR)"
done
for t in ip ethtool taskset; do
  command -v "$t" >/dev/null 2>&1 || die "needs '$t' on PATH"
done

# ---- the lab ----------------------------------------------------------------------------
PREFIX="slb$$"
PREFIX=${PREFIX:0:12}
SERVER_PIDS=()
CONFIG=""
LAB_UP=0
NATS_PID=""
stop_nats() {
  if [ -n "$NATS_PID" ]; then
    kill -TERM "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=""
  fi
}
cleanup() {
  set +e
  stop_server
  stop_nats
  [ -n "$CONFIG" ] && rm -f "$CONFIG"
  lab_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lab_up() { # QUEUES: creates the lab and sets STACK_NS, PEER_NS, STACK_IF, PEER_IF, STACK
  LAB_UP=1
  eval "$("$ROOT/deploy/lab.sh" up --prefix "$PREFIX" --queues "$1")"
  STACK="$STACK_IP"
  # LAB.md: the peer's offloads off (deploy/lab.sh does it; checked here).
  ip netns exec "$PEER_NS" ethtool -K "$PEER_IF" tx off tso off gso off gro off >/dev/null 2>&1 || true
}

lab_down() {
  if [ "$LAB_UP" = 1 ]; then
    "$ROOT/deploy/lab.sh" down --prefix "$PREFIX" >/dev/null 2>&1 || true
    LAB_UP=0
  fi
}

commit_line() {
  if (cd "$ROOT" && git rev-parse --short HEAD >/dev/null 2>&1); then
    echo "$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (dirty)')"
  else
    echo "unknown (not a git checkout)"
  fi
}

machine_header() { # LAB-LINE PINNING-LINE
  echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit:   $(commit_line)"
  echo "cpu:      $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
  echo "kernel:   $(uname -r)"
  echo "load avg: $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "memory:   $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "lab:      $1"
  echo "pinning:  $2"
  echo "mode:     $([ "$QUICK" = 1 ] && echo "--quick (smoke run, not for quoting)" || echo "default") warm-up ${WARMUP} s, measured ${DURATION} s"
}

# How each target's server waits for work, for the tables (lab-report reads it).
cat >"$RESULTS/waits.txt" <<WAITS
sluice-afxdp spin
sluice-dpdk spin
sluice-kernel block
ref-tungstenite block
ref-fastwebsockets block
ref-ws-echo-spin spin
ref-tcp-echo block
ref-tcp-echo-spin spin
load-generator-ceiling block
kernel-to-kernel block
kernel-to-kernel-spin spin
sluice-kernel-spin spin
kernel-ws-spin spin
bypass-to-sluice-afxdp spin
kernel-to-ref-ws-echo-spin spin
kernel-to-ref-tcp-echo-spin spin
floor-afxdp-reflect spin
WAITS

kernel_ip() { # add|del ADDR
  ip -n "$STACK_NS" addr "$1" "$2/24" dev "$STACK_IF" 2>/dev/null || true
}

# start_server LOGNAME CMD...: runs CMD in the stack namespace pinned to $PIN (default
# SERVER_CPU; a list lets the process pin its own threads inside it) and waits for its
# `listening` line. Several may run at once (--scale); stop_server stops them all. On
# failure prints one error line, stops them all and returns 1.
start_server() {
  local log="$RESULTS/$1.log"; shift
  local pid
  ip netns exec "$STACK_NS" taskset -c "${PIN:-$SERVER_CPU}" "$@" >"$log" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  local i
  for i in $(seq 1 200); do
    if grep -q '^listening' "$log" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      ERROR_LINE=$( (grep -iE 'error|not (available|supported)|unsupported' "$log" || tail -n1 "$log") | tail -n1 | cut -c1-200)
      [ -n "$ERROR_LINE" ] || ERROR_LINE="exited without a listening line"
      stop_server
      return 1
    fi
    sleep 0.1
  done
  ERROR_LINE="no listening line within 20 s"
  stop_server
  return 1
}

stop_server() {
  local pid i
  for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PIDS=()
}

# ---- --scale -----------------------------------------------------------------------------
SCALE_WS_PORT=9101
SCALE_KERNEL_PORT=9201
# scale_client DIR NAME PORT PORTS Q CLIENT_CORES: the same client for both sides.
scale_client() {
  local dir=$1 name=$2 port=$3 ports=$4 q=$5 cores=$6
  echo "-- q$q / $name" >&2
  ip netns exec "$PEER_NS" "$BIN/sluice-load" "$STACK:$port" --ports "$ports" --proto ws \
    -c $((64 * q)) -s 64 -k 16 -t "$q" --pin "$cores" --connect-timeout 20 \
    --warmup "$WARMUP" -d "$DURATION" --json "$dir/$name.json" >&2 ||
    echo "   (sluice-load reported errors; kept in the JSON)" >&2
  [ -s "$dir/$name.json" ] || echo "sluice-load wrote no report" >"$dir/$name.error"
}

run_scale() {
  local ncpu half qs=() q r i dir sc cc ok
  ncpu=$(nproc)
  half=$((ncpu / 2))
  [ "$half" -ge 1 ] || die "--scale needs at least 2 cores (servers on one half, clients on the other)"
  q=1
  while [ "$q" -le "$half" ] && { [ -z "$MAX_QUEUES" ] || [ "$q" -le "$MAX_QUEUES" ]; }; do
    qs+=("$q"); q=$((q * 2))
  done
  machine_header "veth with Q queues (Q = ${qs[*]}), peer offloads off (tx tso gso gro), AF_XDP copy mode" \
    "servers on cores 0..Q-1 (Sluice worker i / ref-ws-echo i on core i), client threads on cores $half..$half+Q-1; $ROUNDS rounds A B" \
    >"$RESULTS/machine.txt"
  cat "$RESULTS/machine.txt" >&2
  for q in "${qs[@]}"; do
    dir="$RESULTS/scale/q$q"
    mkdir -p "$dir"
    sc="0-$((q - 1))"
    cc="$half-$((half + q - 1))"
    printf 'server_cores %s\nclient_cores %s\n' "$sc" "$cc" >"$dir/meta.txt"
    lab_up "$q"
    for r in $(seq 1 "$ROUNDS"); do
      echo "== scale: Q=$q round $r/$ROUNDS: A sluice ws-echo on AF_XDP" >&2
      kernel_ip del "$STACK"
      if PIN="$sc" start_server "scale-q$q-sluice-afxdp.r$r" "$SLUICE" run --backend afxdp \
          --iface "$STACK_IF" --ip "$STACK/24" --port "$SCALE_WS_PORT" --queues "$q" \
          --cores "$sc" --app ws-echo --compression off --log-level warn; then
        scale_client "$dir" "sluice-afxdp.r$r" "$SCALE_WS_PORT" 1 "$q" "$cc"
        stop_server
      else
        echo "$ERROR_LINE" >"$dir/sluice-afxdp.r$r.error"
        echo "   not available: $ERROR_LINE" >&2
      fi
      echo "== scale: Q=$q round $r/$ROUNDS: B $q x ref-ws-echo --spin" >&2
      kernel_ip add "$STACK"
      ok=1
      for i in $(seq 0 $((q - 1))); do
        if ! PIN="$i" start_server "scale-q$q-kernel-ws-spin.r$r.s$i" "$BIN/ref-ws-echo" --spin \
            --pin "$i" --addr "$STACK:$((SCALE_KERNEL_PORT + i))"; then
          ok=0; break
        fi
      done
      if [ "$ok" = 1 ]; then
        scale_client "$dir" "kernel-ws-spin.r$r" "$SCALE_KERNEL_PORT" "$q" "$q" "$cc"
        stop_server
      else
        echo "$ERROR_LINE" >"$dir/kernel-ws-spin.r$r.error"
        echo "   not available: $ERROR_LINE" >&2
      fi
      kernel_ip del "$STACK"
    done
    lab_down
  done
  echo "== report" >&2
  "$BIN/lab-report" --scale "$RESULTS"
  echo "results: $RESULTS (scale.json)" >&2
}

# ---- --cluster ---------------------------------------------------------------------------

run_cluster() {
  command -v nats-server >/dev/null 2>&1 || die "--cluster needs nats-server (deploy/setup.sh installs it)"
  local dir="$RESULTS/cluster" r gw_port=9004 ctl=198.18.0.3 node_a=198.18.0.4 f
  mkdir -p "$dir"
  lab_up 1
  machine_header "veth $STACK_IF/$PEER_IF, peer offloads off, AF_XDP copy mode; nats-server $(nats-server --version | awk '{print $2}') on the stack namespace's loopback" \
    "gateways and nats-server on CPU $SERVER_CPU, client (sluice-load fanout, peer namespace) on CPU $CLIENT_CPU; $ROUNDS rounds A B C" \
    >"$RESULTS/machine.txt"
  cat "$RESULTS/machine.txt" >&2
  local base="[control]
token = \"bench-lab\"
[limits]
max_connections = 5000
max_connections_per_ip = 5000
[[route]]
path = \"/live\"
kind = \"pubsub\"
compression = false
slow_consumer = \"drop-newest\"
max_queued_bytes = 4194304
"
  local cl="[cluster]
enabled = true
servers = [\"nats://127.0.0.1:4222\"]"
  printf '%s' "$base" >"$dir/single.toml"
  printf '%s\n%s\nnode = "b"\n' "$base" "$cl" >"$dir/node-b.toml"
  printf '%s\n%s\nnode = "a"\n' "$base" "$cl" >"$dir/node-a.toml"
  kernel_ip add "$ctl"
  kernel_ip add "$node_a"
  ip netns exec "$STACK_NS" taskset -c "$SERVER_CPU" nats-server -a 127.0.0.1 -p 4222 \
    >"$RESULTS/nats-server.log" 2>&1 &
  NATS_PID=$!
  sleep 0.5
  fan() { # NAME INGEST: closed loop (throughput), then open loop at $CLUSTER_RATE (latency)
    local mode extra
    for mode in closed open; do
      extra=()
      [ "$mode" = open ] && extra=(--publish-rate "$CLUSTER_RATE")
      echo "-- cluster / $1 $mode" >&2
      ip netns exec "$PEER_NS" "$BIN/sluice-load" fanout "$STACK:$gw_port" --ingest "$2" \
        --path /live --ingest-token bench-lab -c 1000 -s 64 --connect-timeout 20 \
        --pin "$CLIENT_CPU" "${extra[@]}" \
        --warmup "$WARMUP" -d "$DURATION" --json "$dir/$1-$mode.json" >&2 ||
        echo "   (sluice-load reported errors; kept in the JSON)" >&2
    done
  }
  gw_b() { # LOG CONFIG: the subscribers' node, on AF_XDP
    start_server "$1" "$SLUICE" run --backend afxdp --iface "$STACK_IF" --ip "$STACK/24" \
      --port "$gw_port" --app gateway --config "$2" --control "$ctl:9100" \
      --cores "$SERVER_CPU" --log-level warn
  }
  for r in $(seq 1 "$ROUNDS"); do
    echo "== cluster round $r/$ROUNDS: A one node, cluster off" >&2
    if gw_b "cluster-a.r$r" "$dir/single.toml"; then
      fan "a-single.r$r" "$ctl:9100"; stop_server
    else
      echo "$ERROR_LINE" >"$dir/a-single.r$r.error"
    fi
    echo "== cluster round $r/$ROUNDS: B one node, cluster on" >&2
    if gw_b "cluster-b.r$r" "$dir/node-b.toml"; then
      fan "b-single-cluster.r$r" "$ctl:9100"; stop_server
    else
      echo "$ERROR_LINE" >"$dir/b-single-cluster.r$r.error"
    fi
    echo "== cluster round $r/$ROUNDS: C cross-node (publish on node a, subscribers on node b)" >&2
    if gw_b "cluster-c-b.r$r" "$dir/node-b.toml" &&
        start_server "cluster-c-a.r$r" "$SLUICE" run --backend kernel --ip "$node_a" \
          --port 9005 --app gateway --config "$dir/node-a.toml" --control "$node_a:9101" \
          --log-level warn; then
      fan "c-cross-node.r$r" "$node_a:9101"; stop_server
    else
      echo "$ERROR_LINE" >"$dir/c-cross-node.r$r.error"
    fi
  done
  stop_nats
  kernel_ip del "$node_a"
  kernel_ip del "$ctl"
  echo "== report" >&2
  python3 - "$dir" "$CLUSTER_RATE" <<'PY' | tee "$dir/summary.txt"
import json, os, statistics, sys
d = sys.argv[1]
rate = sys.argv[2]
cases = []
for mode, label in [("closed", "closed loop"), ("open", f"open loop, {rate} publications/s")]:
    cases += [(f"a-single.r", mode, f"A one node, cluster off; {label}"),
              (f"b-single-cluster.r", mode, f"B one node, cluster on; {label}"),
              (f"c-cross-node.r", mode, f"C cross-node over NATS; {label}")]
rows = {}
for key, mode, title in cases:
    runs = []
    for f in sorted(os.listdir(d)):
        if f.startswith(key) and f.endswith(f"-{mode}.json"):
            j = json.load(open(os.path.join(d, f)))
            runs.append((j["latency_us"]["p50"], j["latency_us"]["p99"], j["msgs_per_s"], j["error_total"]))
    rows[(key, mode)] = (title, runs)
def cell(vals, fmt):
    if not vals:
        return "n/a"
    return f"{fmt(statistics.median(vals))} ({fmt(min(vals))}..{fmt(max(vals))})"
us = lambda v: f"{v:.0f}"
mps = lambda v: f"{v/1e3:.1f}k"
print("| case | rounds | p50 us | p99 us | deliveries/s | p50 / A's p50 | deliveries/s / A's | errors |")
print("|---|---|---|---|---|---|---|---|")
for (key, mode), (title, runs) in rows.items():
    base = rows[("a-single.r", mode)][1]
    r50 = rdel = "-"
    if base and runs:
        r50 = f"{statistics.median([r[0] for r in runs]) / statistics.median([b[0] for b in base]):.2f}x"
        rdel = f"{statistics.median([r[2] for r in runs]) / statistics.median([b[2] for b in base]):.2f}x"
    print(f"| {title} | {len(runs)} | {cell([r[0] for r in runs], us)} | {cell([r[1] for r in runs], us)} "
          f"| {cell([r[2] for r in runs], mps)} | {r50} | {rdel} | {sum(r[3] for r in runs)} |")
PY
  echo "results: $RESULTS (cluster/summary.txt)" >&2
}

# ---- tls (wss) ---------------------------------------------------------------------------
TLS_WS_PORT=9011
TLS_PORT=9443
TLS_HS_SLOTS=16
# tls_client DIR NAME ARGS...: sluice-load over TLS in the peer namespace, pinned.
tls_client() {
  local dir=$1 name=$2; shift 2
  echo "-- tls / $name" >&2
  ip netns exec "$PEER_NS" "$BIN/sluice-load" "$@" --tls --ca "$TLS_DIR/cert.pem" \
    --sni localhost --pin "$CLIENT_CPU" --connect-timeout 20 \
    --warmup "$WARMUP" -d "$DURATION" --json "$dir/$name.json" >&2 ||
    echo "   (sluice-load reported errors; kept in the JSON)" >&2
  [ -s "$dir/$name.json" ] || echo "sluice-load wrote no report" >"$dir/$name.error"
}
tls_runs() { # TARGET ROUND
  local t="$STACK:$TLS_PORT"
  tls_client "$TLS_DIR/1-pingpong" "$1.r$2" "$t" -c 1 -s 64 --spin
  tls_client "$TLS_DIR/2-c100" "$1.r$2" "$t" -c 100 -s 64 -k 16
  tls_client "$TLS_DIR/3-hs-full" "$1.r$2" handshakes "$t" -c "$TLS_HS_SLOTS"
  tls_client "$TLS_DIR/4-hs-resumed" "$1.r$2" handshakes "$t" -c "$TLS_HS_SLOTS" --resume
}
run_tls() {
  command -v openssl >/dev/null 2>&1 || die "the tls group needs openssl (deploy/setup.sh installs it)"
  TLS_DIR="$RESULTS/tls"
  local r d t
  for d in 1-pingpong 2-c100 3-hs-full 4-hs-resumed; do mkdir -p "$TLS_DIR/$d"; done
  [ "$LAB_UP" = 1 ] || lab_up 1
  # A throwaway P-256 certificate for this run only; basicConstraints CA:FALSE, since
  # webpki refuses a CA certificate as the server's own.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:$STACK" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null ||
    die "openssl could not make the test certificate"
  # Handshake churn: the client closes first, so its ports sit in TIME_WAIT.
  ip netns exec "$PEER_NS" sysctl -qw net.ipv4.tcp_tw_reuse=1 || true
  ip netns exec "$PEER_NS" sysctl -qw net.ipv4.ip_local_port_range="1024 65535" || true
  machine_header "veth $STACK_IF/$PEER_IF, peer offloads off (tx tso gso gro), AF_XDP copy mode; TLS 1.3, ring provider on both ends, X25519 (the client offers it first), P-256 ECDSA certificate" \
    "server on CPU $SERVER_CPU, client (sluice-load --tls, peer namespace) on CPU $CLIENT_CPU; $ROUNDS rounds A B C" \
    >"$TLS_DIR/machine.txt"
  cat "$TLS_DIR/machine.txt" >&2
  for r in $(seq 1 "$ROUNDS"); do
    echo "== tls round $r/$ROUNDS: A sluice ws-echo on AF_XDP (spin)" >&2
    # The TLS port is given as --port too: before 7ad8982 the AF_XDP driver listened on
    # the --port list only (harmless after it: the port is not added twice).
    kernel_ip del "$STACK"
    if start_server "tls-sluice-afxdp.r$r" "$SLUICE" run --backend afxdp --iface "$STACK_IF" \
        --ip "$STACK/24" --port "$TLS_WS_PORT" --port "$TLS_PORT" --tls-port "$TLS_PORT" \
        --tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem" --app ws-echo \
        --compression off --cores "$SERVER_CPU" --log-level warn; then
      tls_runs a-sluice-afxdp "$r"; stop_server
    else
      for d in 1-pingpong 2-c100 3-hs-full 4-hs-resumed; do echo "$ERROR_LINE" >"$TLS_DIR/$d/a-sluice-afxdp.r$r.error"; done
      echo "   not available: $ERROR_LINE" >&2
    fi
    kernel_ip add "$STACK"
    echo "== tls round $r/$ROUNDS: B sluice ws-echo --backend kernel (block)" >&2
    if start_server "tls-sluice-kernel.r$r" "$SLUICE" run --backend kernel --ip "$STACK" \
        --port "$TLS_WS_PORT" --tls-port "$TLS_PORT" --tls-cert "$TLS_DIR/cert.pem" \
        --tls-key "$TLS_DIR/key.pem" --app ws-echo --compression off --log-level warn; then
      tls_runs b-sluice-kernel "$r"; stop_server
    else
      for d in 1-pingpong 2-c100 3-hs-full 4-hs-resumed; do echo "$ERROR_LINE" >"$TLS_DIR/$d/b-sluice-kernel.r$r.error"; done
      echo "   not available: $ERROR_LINE" >&2
    fi
    echo "== tls round $r/$ROUNDS: C ref-tungstenite + tokio-rustls (block)" >&2
    if start_server "tls-ref-tungstenite.r$r" "$BIN/ref-tungstenite" --addr "$STACK:$TLS_PORT" \
        --tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem"; then
      tls_runs c-ref-tungstenite "$r"; stop_server
    else
      for d in 1-pingpong 2-c100 3-hs-full 4-hs-resumed; do echo "$ERROR_LINE" >"$TLS_DIR/$d/c-ref-tungstenite.r$r.error"; done
      echo "   not available: $ERROR_LINE" >&2
    fi
    kernel_ip del "$STACK"
  done
  rm -f "$TLS_DIR/key.pem"
  echo "== tls report" >&2
  python3 - "$TLS_DIR" "$SERVER_CPU" "$CLIENT_CPU" <<'PY' | tee "$TLS_DIR/summary.md"
import json, os, statistics, sys
d, scpu, ccpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
scen = [("1-pingpong", "1 conn, 64 B ping-pong (spinning client)"),
        ("2-c100", "100 conns, 64 B, pipeline 16"),
        ("3-hs-full", "full handshakes (16 slots)"),
        ("4-hs-resumed", "resumed handshakes (16 slots, --resume)")]
targets = [("a-sluice-afxdp", "A Sluice ws-echo, AF_XDP", "spin"),
           ("b-sluice-kernel", "B Sluice ws-echo, kernel backend", "block"),
           ("c-ref-tungstenite", "C tokio-tungstenite + tokio-rustls", "block")]
def busy(j, cpu):
    for c in j.get("cpu_busy", []):
        if c["cpu"] == cpu:
            return c["busy"] * 100
    return float("nan")
def cell(v, f):
    if not v:
        return "n/a"
    return f"{f(statistics.median(v))} ({f(min(v))}..{f(max(v))})"
us = lambda v: f"{v:.1f}"
rate = lambda v: f"{v/1e3:.2f}k" if v >= 1e4 else f"{v:.0f}"
pct = lambda v: f"{v:.0f}"
print("| scenario | target | wait | rounds | p50 us | p99 us | msgs/s or handshakes/s | / C | server core busy % | client core busy % | resumed | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for sd, stitle in scen:
    runs = {}
    for key, _, _ in targets:
        rs = []
        for f in sorted(os.listdir(os.path.join(d, sd))):
            if f.startswith(key + ".r") and f.endswith(".json"):
                rs.append(json.load(open(os.path.join(d, sd, f))))
        runs[key] = rs
    base = runs["c-ref-tungstenite"]
    for key, title, wait in targets:
        rs = runs[key]
        if not rs:
            errs = [open(os.path.join(d, sd, f)).read().strip() for f in sorted(os.listdir(os.path.join(d, sd))) if f.startswith(key) and f.endswith(".error")]
            print(f"| {stitle} | {title} | {wait} | 0 | not available: {errs[0] if errs else 'no run'} |||||||| ")
            continue
        m = [j["msgs_per_s"] for j in rs]
        ratio = "-"
        if base and key != "c-ref-tungstenite":
            ratio = f"{statistics.median(m) / statistics.median([j['msgs_per_s'] for j in base]):.2f}x"
        resumed = "-"
        if sd.startswith("3") or sd.startswith("4"):
            tot = sum(j["tls_full"] + j["tls_resumed"] for j in rs)
            resumed = f"{sum(j['tls_resumed'] for j in rs)}/{tot}"
        print(f"| {stitle} | {title} | {wait} | {len(rs)} | {cell([j['latency_us']['p50'] for j in rs], us)} "
              f"| {cell([j['latency_us']['p99'] for j in rs], us)} | {cell(m, rate)} | {ratio} "
              f"| {cell([busy(j, scpu) for j in rs], pct)} | {cell([busy(j, ccpu) for j in rs], pct)} "
              f"| {resumed} | {sum(j['error_total'] for j in rs)} |")
PY
  echo "results: $RESULTS (tls/summary.md)" >&2
}

if [ "$SCALE" = 1 ]; then
  run_scale
  exit 0
fi
if [ "$ONLY" = tls ]; then
  run_tls
  exit 0
fi
if [ "$CLUSTER" = 1 ]; then
  run_cluster
  exit 0
fi

lab_up 1
machine_header "veth $STACK_IF/$PEER_IF, peer offloads off (tx tso gso gro), AF_XDP copy mode" \
  "server on CPU $SERVER_CPU, client (sluice-load, peer namespace) on CPU $CLIENT_CPU; $ROUNDS rounds, each group's targets in turn per round" \
  >"$RESULTS/machine.txt"
cat "$RESULTS/machine.txt" >&2

scenario() { # DIR TITLE: creates the scenario directory
  mkdir -p "$RESULTS/$1"
  echo "$2" >"$RESULTS/$1/title.txt"
}

# client SCENARIO TARGETFILE ARGS...: sluice-load in the peer namespace, pinned.
client() {
  local dir=$1 name=$2; shift 2
  echo "-- $dir / $name" >&2
  ip netns exec "$PEER_NS" "$BIN/sluice-load" "$@" --pin "$CLIENT_CPU" \
    --warmup "$WARMUP" -d "$DURATION" --json "$RESULTS/$dir/$name.json" >&2 ||
    echo "   (sluice-load reported errors; kept in the JSON)" >&2
}

unavailable() { # SCENARIO... TARGETFILE: records why a target did not run
  local name=${!#} d
  for d in "${@:1:$#-1}"; do
    echo "$ERROR_LINE" >"$RESULTS/$d/$name.error"
  done
  echo "   $name not available: $ERROR_LINE" >&2
}

WS_PORT=9001
TCP_PORT=9002
FLOOR_PORT=9009
# The bypass client's and the floor pinger's own addresses on the peer's veth (the kernel
# keeps 198.18.0.1; the XDP programs take only these).
BYPASS_IP=198.18.0.5
FLOOR_IP=198.18.0.6
BYPASS_SCENARIOS=(0a-bypass-ws-pingpong 0b-bypass-ws-c100 0c-bypass-tcp-pingpong 0d-bypass-tcp-c100)
if want bypass; then
  scenario 0a-bypass-ws-pingpong "Both ends spinning: WebSocket, 1 connection, 64 B ping-pong (bypass client -> Sluice on AF_XDP; kernel client -> ref-ws-echo --spin; floor: 70 B frames AF_XDP to AF_XDP, no TCP/IP)"
  scenario 0b-bypass-ws-c100 "Both ends spinning: WebSocket, 100 connections, 64 B, pipeline 16 (bypass client -> Sluice on AF_XDP; kernel client -> ref-ws-echo --spin)"
  scenario 0c-bypass-tcp-pingpong "Both ends spinning: TCP echo, 1 connection, 64 B ping-pong (bypass client -> Sluice on AF_XDP; kernel client -> ref-tcp-echo --spin; floor: 64 B frames AF_XDP to AF_XDP, no TCP/IP)"
  scenario 0d-bypass-tcp-c100 "Both ends spinning: TCP echo, 100 connections, 64 B, pipeline 16 (bypass client -> Sluice on AF_XDP; kernel client -> ref-tcp-echo --spin)"
  BP=(--iface "$PEER_IF" --ip "$BYPASS_IP/24")
  for r in $(seq 1 "$ROUNDS"); do
  echo "== bypass round $r/$ROUNDS: A bypass client -> sluice on AF_XDP" >&2
  if start_server sluice-afxdp-ws-bp.r$r "$SLUICE" run --backend afxdp --iface "$STACK_IF" \
      --ip "$STACK/24" --port "$WS_PORT" --app ws-echo --compression off --cores "$SERVER_CPU" \
      --log-level warn; then
    client 0a-bypass-ws-pingpong 1-bypass-to-sluice-afxdp.r$r bypass "$STACK:$WS_PORT" "${BP[@]}" --proto ws -c 1 -s 64
    client 0b-bypass-ws-c100 1-bypass-to-sluice-afxdp.r$r bypass "$STACK:$WS_PORT" "${BP[@]}" --proto ws -c 100 -s 64 -k 16
    stop_server
  else
    unavailable 0a-bypass-ws-pingpong 0b-bypass-ws-c100 1-bypass-to-sluice-afxdp.r$r
  fi
  if start_server sluice-afxdp-tcp-bp.r$r "$SLUICE" run --backend afxdp --iface "$STACK_IF" \
      --ip "$STACK/24" --port "$TCP_PORT" --app tcp-echo --cores "$SERVER_CPU" --log-level warn; then
    client 0c-bypass-tcp-pingpong 1-bypass-to-sluice-afxdp.r$r bypass "$STACK:$TCP_PORT" "${BP[@]}" --proto tcp -c 1 -s 64
    client 0d-bypass-tcp-c100 1-bypass-to-sluice-afxdp.r$r bypass "$STACK:$TCP_PORT" "${BP[@]}" --proto tcp -c 100 -s 64 -k 16
    stop_server
  else
    unavailable 0c-bypass-tcp-pingpong 0d-bypass-tcp-c100 1-bypass-to-sluice-afxdp.r$r
  fi
  kernel_ip add "$STACK"
  echo "== bypass round $r/$ROUNDS: B kernel client (spin) -> busy-polling kernel servers" >&2
  if start_server ref-ws-echo-spin-bp.r$r "$BIN/ref-ws-echo" --spin --addr "$STACK:$WS_PORT"; then
    client 0a-bypass-ws-pingpong 2-kernel-to-ref-ws-echo-spin.r$r "$STACK:$WS_PORT" --proto ws -c 1 -s 64 --spin
    client 0b-bypass-ws-c100 2-kernel-to-ref-ws-echo-spin.r$r "$STACK:$WS_PORT" --proto ws -c 100 -s 64 -k 16 --spin
    stop_server
  else
    unavailable 0a-bypass-ws-pingpong 0b-bypass-ws-c100 2-kernel-to-ref-ws-echo-spin.r$r
  fi
  if start_server ref-tcp-echo-spin-bp.r$r "$BIN/ref-tcp-echo" --spin --addr "$STACK:$TCP_PORT"; then
    client 0c-bypass-tcp-pingpong 2-kernel-to-ref-tcp-echo-spin.r$r "$STACK:$TCP_PORT" --proto tcp -c 1 -s 64 --spin
    client 0d-bypass-tcp-c100 2-kernel-to-ref-tcp-echo-spin.r$r "$STACK:$TCP_PORT" --proto tcp -c 100 -s 64 -k 16 --spin
    stop_server
  else
    unavailable 0c-bypass-tcp-pingpong 0d-bypass-tcp-c100 2-kernel-to-ref-tcp-echo-spin.r$r
  fi
  kernel_ip del "$STACK"
  echo "== bypass round $r/$ROUNDS: C the floor (AF_XDP frames there and back, no TCP/IP)" >&2
  if start_server reflect.r$r "$BIN/sluice-load" reflect --iface "$STACK_IF" \
      --addr "$STACK:$FLOOR_PORT" --pin "$SERVER_CPU"; then
    FL=(floor "$STACK:$FLOOR_PORT" --iface "$PEER_IF" --ip "$FLOOR_IP" --dst-mac "$STACK_MAC")
    client 0a-bypass-ws-pingpong 9-floor-afxdp-reflect.r$r "${FL[@]}" -s 70
    client 0c-bypass-tcp-pingpong 9-floor-afxdp-reflect.r$r "${FL[@]}" -s 64
    stop_server
  else
    unavailable 0a-bypass-ws-pingpong 0c-bypass-tcp-pingpong 9-floor-afxdp-reflect.r$r
  fi
  done
fi

# The DPDK target's EAL: no hugepages, no PCI, no runtime files (the lab has none of them).
DPDK_EAL="--no-huge --no-shconf --no-pci -m 512 --log-level=*:warning"
WS_SCENARIOS=(1-ws-pingpong 2-ws-c100 3-ws-open1000)
ws_runs() { # TARGETFILE
  client 1-ws-pingpong "$1" "$STACK:$WS_PORT" --proto ws -c 1 -s 64 --spin
  client 2-ws-c100 "$1" "$STACK:$WS_PORT" --proto ws -c 100 -s 64 -k 16
  client 3-ws-open1000 "$1" "$STACK:$WS_PORT" --proto ws -c 1000 -s 1024 --mode open --rate "$RATE" -k 4
}

if want ws; then
  scenario 1-ws-pingpong "WebSocket, 1 connection, 64 B ping-pong (spinning client)"
  scenario 2-ws-c100 "WebSocket, 100 connections, 64 B, pipeline 16 (saturation)"
  scenario 3-ws-open1000 "WebSocket, 1,000 connections, 1 KiB, open loop at $RATE msgs/s"
  for r in $(seq 1 "$ROUNDS"); do
  echo "== ws round $r/$ROUNDS: sluice ws-echo on AF_XDP" >&2
  if start_server sluice-afxdp-ws.r$r "$SLUICE" run --backend afxdp --iface "$STACK_IF" \
      --ip "$STACK/24" --port "$WS_PORT" --app ws-echo --compression off --cores "$SERVER_CPU" \
      --log-level warn; then
    ws_runs 1-sluice-afxdp.r$r; stop_server
  else
    unavailable "${WS_SCENARIOS[@]}" 1-sluice-afxdp.r$r
  fi
  echo "== ws round $r/$ROUNDS: sluice ws-echo on DPDK (net_af_packet on the veth)" >&2
  if start_server sluice-dpdk-ws.r$r "$SLUICE" run --backend dpdk \
      --dpdk-port "net_af_packet0,iface=$STACK_IF" --eal-args "$DPDK_EAL" \
      --ip "$STACK/24" --port "$WS_PORT" --app ws-echo --compression off --cores "$SERVER_CPU" \
      --log-level warn; then
    ws_runs 6-sluice-dpdk.r$r; stop_server
  else
    unavailable "${WS_SCENARIOS[@]}" 6-sluice-dpdk.r$r
  fi
  kernel_ip add "$STACK"
  echo "== ws round $r/$ROUNDS: sluice ws-echo on the kernel backend" >&2
  if start_server sluice-kernel-ws.r$r "$SLUICE" run --backend kernel --ip "$STACK" \
      --port "$WS_PORT" --app ws-echo --compression off --log-level warn; then
    ws_runs 2-sluice-kernel.r$r; stop_server
  else
    unavailable "${WS_SCENARIOS[@]}" 2-sluice-kernel.r$r
  fi
  echo "== ws round $r/$ROUNDS: ref-tungstenite" >&2
  if start_server ref-tungstenite.r$r "$BIN/ref-tungstenite" --addr "$STACK:$WS_PORT"; then
    ws_runs 3-ref-tungstenite.r$r; stop_server
  else
    unavailable "${WS_SCENARIOS[@]}" 3-ref-tungstenite.r$r
  fi
  echo "== ws round $r/$ROUNDS: ref-fastwebsockets" >&2
  if start_server ref-fastwebsockets.r$r "$BIN/ref-fastwebsockets" --addr "$STACK:$WS_PORT"; then
    ws_runs 4-ref-fastwebsockets.r$r; stop_server
  else
    unavailable "${WS_SCENARIOS[@]}" 4-ref-fastwebsockets.r$r
  fi
  echo "== ws round $r/$ROUNDS: ref-ws-echo --spin (busy-polling epoll)" >&2
  if start_server ref-ws-echo-spin.r$r "$BIN/ref-ws-echo" --spin --addr "$STACK:$WS_PORT"; then
    ws_runs 5-ref-ws-echo-spin.r$r; stop_server
  else
    unavailable "${WS_SCENARIOS[@]}" 5-ref-ws-echo-spin.r$r
  fi
  kernel_ip del "$STACK"
  if want ceiling; then
    echo "== ws round $r/$ROUNDS: load generator ceiling (loopback in the peer namespace)" >&2
    C=(ceiling --responder-pin "$SERVER_CPU")
    client 1-ws-pingpong 9-load-generator-ceiling.r$r "${C[@]}" --proto ws -c 1 -s 64 --spin
    client 2-ws-c100 9-load-generator-ceiling.r$r "${C[@]}" --proto ws -c 100 -s 64 -k 16
    client 3-ws-open1000 9-load-generator-ceiling.r$r "${C[@]}" --proto ws -c 1000 -s 1024 --mode open --rate "$RATE" -k 4
  fi
  done
fi

TCP_SCENARIOS=(5-tcp-pingpong 6-tcp-c100)
tcp_runs() {
  client 5-tcp-pingpong "$1" "$STACK:$TCP_PORT" --proto tcp -c 1 -s 64 --spin
  client 6-tcp-c100 "$1" "$STACK:$TCP_PORT" --proto tcp -c 100 -s 64 -k 16
}
if want tcp; then
  scenario 5-tcp-pingpong "TCP echo, 1 connection, 64 B ping-pong (spinning client)"
  scenario 6-tcp-c100 "TCP echo, 100 connections, 64 B, pipeline 16 (saturation)"
  for r in $(seq 1 "$ROUNDS"); do
  echo "== tcp round $r/$ROUNDS: sluice tcp-echo on AF_XDP" >&2
  if start_server sluice-afxdp-tcp.r$r "$SLUICE" run --backend afxdp --iface "$STACK_IF" \
      --ip "$STACK/24" --port "$TCP_PORT" --app tcp-echo --cores "$SERVER_CPU" --log-level warn; then
    tcp_runs 1-sluice-afxdp.r$r; stop_server
  else
    unavailable "${TCP_SCENARIOS[@]}" 1-sluice-afxdp.r$r
  fi
  echo "== tcp round $r/$ROUNDS: sluice tcp-echo on DPDK (net_af_packet on the veth)" >&2
  if start_server sluice-dpdk-tcp.r$r "$SLUICE" run --backend dpdk \
      --dpdk-port "net_af_packet0,iface=$STACK_IF" --eal-args "$DPDK_EAL" \
      --ip "$STACK/24" --port "$TCP_PORT" --app tcp-echo --cores "$SERVER_CPU" --log-level warn; then
    tcp_runs 6-sluice-dpdk.r$r; stop_server
  else
    unavailable "${TCP_SCENARIOS[@]}" 6-sluice-dpdk.r$r
  fi
  kernel_ip add "$STACK"
  echo "== tcp round $r/$ROUNDS: sluice tcp-echo on the kernel backend" >&2
  if start_server sluice-kernel-tcp.r$r "$SLUICE" run --backend kernel --ip "$STACK" \
      --port "$TCP_PORT" --app tcp-echo --log-level warn; then
    tcp_runs 2-sluice-kernel.r$r; stop_server
  else
    unavailable "${TCP_SCENARIOS[@]}" 2-sluice-kernel.r$r
  fi
  echo "== tcp round $r/$ROUNDS: ref-tcp-echo" >&2
  if start_server ref-tcp-echo.r$r "$BIN/ref-tcp-echo" --addr "$STACK:$TCP_PORT"; then
    tcp_runs 3-ref-tcp-echo.r$r; stop_server
  else
    unavailable "${TCP_SCENARIOS[@]}" 3-ref-tcp-echo.r$r
  fi
  echo "== tcp round $r/$ROUNDS: ref-tcp-echo --spin (busy-polling epoll)" >&2
  if start_server ref-tcp-echo-spin.r$r "$BIN/ref-tcp-echo" --spin --addr "$STACK:$TCP_PORT"; then
    tcp_runs 4-ref-tcp-echo-spin.r$r; stop_server
  else
    unavailable "${TCP_SCENARIOS[@]}" 4-ref-tcp-echo-spin.r$r
  fi
  kernel_ip del "$STACK"
  if want ceiling; then
    echo "== tcp round $r/$ROUNDS: load generator ceiling" >&2
    client 5-tcp-pingpong 9-load-generator-ceiling.r$r ceiling --responder-pin "$SERVER_CPU" --proto tcp -c 1 -s 64 --spin
    client 6-tcp-c100 9-load-generator-ceiling.r$r ceiling --responder-pin "$SERVER_CPU" --proto tcp -c 100 -s 64 -k 16
  fi
  done
fi

BULK_PORT=9003
bulk_run() { # TARGETFILE
  echo "-- 7-bulk / $1" >&2
  ip netns exec "$PEER_NS" taskset -c "$CLIENT_CPU" "$BIN/sluice-load" bulk "$STACK:$BULK_PORT" \
    -d "$BULK_S" --json "$RESULTS/7-bulk/$1.json" >&2 || {
      ERROR_LINE="bulk client failed"; unavailable 7-bulk "$1"; }
}
if want bulk; then
  scenario 7-bulk "Bulk TCP, 1 connection, peer -> server over one veth (offloads off), $BULK_S s"
  for r in $(seq 1 "$ROUNDS"); do
  echo "== bulk round $r/$ROUNDS: sluice tcp-discard on AF_XDP" >&2
  if start_server sluice-afxdp-bulk.r$r "$SLUICE" run --backend afxdp --iface "$STACK_IF" \
      --ip "$STACK/24" --port "$BULK_PORT" --app tcp-discard --cores "$SERVER_CPU" --log-level warn; then
    bulk_run 1-sluice-afxdp.r$r; stop_server
  else
    unavailable 7-bulk 1-sluice-afxdp.r$r
  fi
  kernel_ip add "$STACK"
  echo "== bulk round $r/$ROUNDS: kernel discard (sluice-load sink)" >&2
  if start_server kernel-sink.r$r "$BIN/sluice-load" sink --addr "$STACK:$BULK_PORT"; then
    bulk_run 2-kernel-to-kernel.r$r; stop_server
  else
    unavailable 7-bulk 2-kernel-to-kernel.r$r
  fi
  echo "== bulk round $r/$ROUNDS: kernel discard, busy-polling (sluice-load sink --spin)" >&2
  if start_server kernel-sink-spin.r$r "$BIN/sluice-load" sink --spin --addr "$STACK:$BULK_PORT"; then
    bulk_run 3-kernel-to-kernel-spin.r$r; stop_server
  else
    unavailable 7-bulk 3-kernel-to-kernel-spin.r$r
  fi
  kernel_ip del "$STACK"
  done
fi

GW_PORT=9004
CONTROL_IP=198.18.0.3
fanout_run() { # TARGETFILE
  client 8-fanout "$1" fanout "$STACK:$GW_PORT" --ingest "$CONTROL_IP:9100" --path /live \
    --ingest-token bench-lab \
    -c 1000 -s 64 --connect-timeout 20
}
if want fanout; then
  scenario 8-fanout "Gateway broadcast: 1 publisher (POST /publish, closed loop) -> 1,000 subscribers; msgs/s = deliveries/s, latency = publish to delivery"
  CONFIG=$(mktemp /tmp/sluice-bench-gw.XXXXXX.toml)
  cat >"$CONFIG" <<EOF
[control]
enabled = true
token = "bench-lab"           # the control plane is on a lab address, not loopback
[limits]
max_connections = 5000
max_connections_per_ip = 5000
[[route]]
path = "/live"
kind = "pubsub"
compression = false
slow_consumer = "drop-newest"
max_queued_bytes = 4194304
EOF
  # The control plane is kernel sockets on a second address of the stack's interface
  # (frames for it pass the XDP filter to the kernel).
  kernel_ip add "$CONTROL_IP"
  for r in $(seq 1 "$ROUNDS"); do
  echo "== fanout round $r/$ROUNDS: sluice gateway on AF_XDP" >&2
  if start_server sluice-afxdp-gw.r$r "$SLUICE" run --backend afxdp --iface "$STACK_IF" \
      --ip "$STACK/24" --port "$GW_PORT" --app gateway --config "$CONFIG" \
      --control "$CONTROL_IP:9100" --cores "$SERVER_CPU" --log-level warn; then
    fanout_run 1-sluice-afxdp.r$r; stop_server
  else
    unavailable 8-fanout 1-sluice-afxdp.r$r
  fi
  kernel_ip add "$STACK"
  echo "== fanout round $r/$ROUNDS: sluice gateway on the kernel backend" >&2
  if start_server sluice-kernel-gw.r$r "$SLUICE" run --backend kernel --ip "$STACK" \
      --port "$GW_PORT" --app gateway --config "$CONFIG" --control "$CONTROL_IP:9100" \
      --log-level warn; then
    fanout_run 2-sluice-kernel.r$r; stop_server
  else
    unavailable 8-fanout 2-sluice-kernel.r$r
  fi
  echo "== fanout round $r/$ROUNDS: sluice gateway on the kernel backend, busy-polling" >&2
  if start_server sluice-kernel-spin-gw.r$r "$SLUICE" run --backend kernel --busy-poll \
      --ip "$STACK" --port "$GW_PORT" --app gateway --config "$CONFIG" \
      --control "$CONTROL_IP:9100" --log-level warn; then
    fanout_run 3-sluice-kernel-spin.r$r; stop_server
  else
    unavailable 8-fanout 3-sluice-kernel-spin.r$r
  fi
  kernel_ip del "$STACK"
  done
  kernel_ip del "$CONTROL_IP"
fi

echo "load avg: $(cut -d' ' -f1-3 /proc/loadavg) at end" >>"$RESULTS/machine.txt"
echo "== report" >&2
REPORT_ARGS=("$RESULTS" --svg "$RESULTS/bench-lab.svg")
if [ "$DOC" = 1 ]; then
  REPORT_ARGS=("$RESULTS" --svg "$ROOT/docs/bench-lab.svg" --doc "$ROOT/docs/BENCHMARKS.md")
fi
"$BIN/lab-report" "${REPORT_ARGS[@]}"
echo "results: $RESULTS" >&2
if want tls; then
  run_tls
fi
