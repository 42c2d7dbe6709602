#!/usr/bin/env bash
# The README's first command: the WebSocket gateway on AF_XDP. Builds Sluice, sets up a
# two-namespace lab joined by a 2-queue veth, starts `sluice run --backend afxdp --app
# gateway` on the stack side (no kernel IP there: Sluice answers ARP, ICMP and TCP itself,
# one worker per queue), has real WebSocket clients (Python `websockets`) in the peer
# namespace subscribe to topics, has a backend publish through the control plane's ingest
# endpoint (POST /publish/{topic}), prints what each client received, `sluice stat` and a few
# metrics, then stops the gateway with SIGTERM (clients see close 1001) and tears everything
# down, also on failure or Ctrl-C.
#
#   deploy/demo.sh            (root; installs what is missing via deploy/setup.sh)
#   SLUICE_BIN=target/debug/sluice deploy/demo.sh    (skip set-up and the release build)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
[ "$(id -u)" = 0 ] || { echo "demo.sh: must run as root" >&2; exit 1; }

export PATH="$repo/.venv/bin:$HOME/.cargo/bin:$PATH"
if [ -n "${SLUICE_BIN:-}" ]; then
  sluice=$(realpath "$SLUICE_BIN")
else
  deploy/setup.sh
  echo "==> building the release binary"
  cargo build --release --locked -p sluice
  sluice="$repo/target/release/sluice"
fi

prefix="sldemo$$"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  deploy/lab.sh down --prefix "$prefix" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_line() { # file, pattern, what
  for _ in $(seq 1 300); do
    grep -q "$2" "$1" 2>/dev/null && { grep -m1 "$2" "$1"; return 0; }
    sleep 0.1
  done
  echo "demo.sh: $3 did not become ready; its output:" >&2; cat "$1" >&2; return 1
}

echo "==> lab: two namespaces, a veth pair with 2 queues"
eval "$(deploy/lab.sh up --prefix "$prefix" --queues 2)"
echo "stack side: $STACK_NS/$STACK_IF $STACK_MAC (no kernel address)"
echo "peer side:  $PEER_NS/$PEER_IF $PEER_MAC $PEER_IP"

cat >"$work/gateway.toml" <<'EOF'
[[route]]
path = "/ws"
kind = "pubsub"

[[route]]
path = "/echo"
kind = "echo"
EOF
echo "==> the gateway on AF_XDP: $STACK_IP port 8080, one worker per queue, control on 127.0.0.1:9100"
ip netns exec "$STACK_NS" "$sluice" run --backend afxdp --iface "$STACK_IF" \
  --ip "$STACK_IP/$PREFIX_LEN" --port 8080 --queues 2 --app gateway \
  --config "$work/gateway.toml" --control 127.0.0.1:9100 \
  >"$work/gateway.out" 2>"$work/gateway.log" &
gw_pid=$!
pids+=("$gw_pid")
wait_line "$work/gateway.out" '^listening' "the gateway"

echo "==> the kernel pings Sluice (ARP answered by Sluice)"
ip netns exec "$PEER_NS" ping -c 2 -i 0.2 "$STACK_IP" | sed -n '1,3p'

echo "==> 6 Python websockets clients subscribe (clients 0-2: news, 3-5: prices, 5 also news)"
ip netns exec "$PEER_NS" python3 - "$STACK_IP" >"$work/clients.out" 2>&1 <<'EOF' &
import asyncio, json, sys
import websockets

host = sys.argv[1]
topics = {0: ["news"], 1: ["news"], 2: ["news"], 3: ["prices"], 4: ["prices"], 5: ["prices", "news"]}
ready = 0

async def client(i):
    global ready
    async with websockets.connect(f"ws://{host}:8080/ws", ping_interval=None) as ws:
        for t in topics[i]:
            await ws.send(json.dumps({"op": "subscribe", "topic": t}))
            assert json.loads(await ws.recv())["op"] == "subscribed"
        ready += 1
        if ready == len(topics):
            print("ready", flush=True)
        got = []
        try:
            async for raw in ws:
                m = json.loads(raw)
                got.append(f"{m['topic']}: {m['data']}")
        except websockets.ConnectionClosed:
            pass
        code = ws.close_code
        return i, got, code

async def main():
    for i, got, code in sorted(await asyncio.gather(*(client(i) for i in topics))):
        print(f"client {i} ({'+'.join(topics[i])}) received {len(got)}, then close {code}:")
        for line in got:
            print(f"    {line}")

asyncio.run(main())
EOF
clients_pid=$!
wait_line "$work/clients.out" '^ready' "the clients" >/dev/null

echo "==> a backend publishes through the ingest endpoint (POST /publish/{topic})"
publish() { # topic, text
  printf '  POST /publish/%-7s %-34s -> ' "$1" "\"$2\""
  ip netns exec "$STACK_NS" curl -sS -X POST --data-binary "$2" "http://127.0.0.1:9100/publish/$1"
  echo
}
publish news "Sluice runs on AF_XDP"
publish prices "ACME 101.5"
publish news "one frame, many subscribers"
publish prices "ACME 102.0"
publish news "per-topic order holds"

echo "==> sluice stat (per-connection table with the TCP engine's view)"
ip netns exec "$STACK_NS" "$sluice" stat --control 127.0.0.1:9100 |
  sed -n '/^connections:/,$p' | sed 's/^/    /'

echo "==> a few metrics (GET /metrics)"
sleep 0.6 # XDP counters are folded in every 0.5 s
ip netns exec "$STACK_NS" curl -sS http://127.0.0.1:9100/metrics |
  grep -E '^sluice_(published_total|messages_out_total|connections_open|xdp_packets_total|tcp_connections|worker_busy_ratio)' |
  sed 's/^/    /'

echo "==> SIGTERM: the gateway stops accepting, flushes, closes every client with 1001"
kill -TERM "$gw_pid"
wait "$gw_pid" && echo "the gateway exited 0"
pids=()
wait "$clients_pid" || { echo "demo.sh: the clients failed:" >&2; cat "$work/clients.out" >&2; exit 1; }
echo "==> what the clients received"
grep -v '^ready' "$work/clients.out"
echo "--- the gateway's log (last lines):"
sed 's/^/    /' "$work/gateway.log" | tail -n 5
echo "==> demo done; tearing the lab down"
