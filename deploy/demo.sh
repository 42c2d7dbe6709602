#!/usr/bin/env bash
# The README's first command: the WebSocket gateway on AF_XDP. Builds Sluice, sets up a
# two-namespace lab joined by a 2-queue veth, starts `sluice run --backend afxdp --app
# gateway` on the stack side (no kernel IP there: Sluice answers ARP, ICMP and TCP itself,
# one worker per queue), has real WebSocket clients (Python `websockets`) in the peer
# namespace subscribe to topics, has a backend publish through the control plane's ingest
# endpoint (POST /publish/{topic}) (two of the clients over wss://, with a throw-away
# self-signed certificate made on the fly), prints what each client received, `sluice stat` and a few
# metrics, then stops the gateway with SIGTERM and tears everything down, also on failure or
# Ctrl-C.
#
# It checks the outcome and exits non-zero, with a `demo.sh: FAIL` line per problem, unless
# every publication was acknowledged as queued to its topic's subscribers and every client
# received exactly the published messages of its topics, in publication order, and then close
# code 1001 (the clients write their results as JSON; the check compares them with what was
# published).
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
echo "==> a throw-away self-signed certificate for wss:// (made now, removed at the end)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=sluice-demo -addext "subjectAltName=IP:$STACK_IP" \
  -keyout "$work/wss.key" -out "$work/wss.pem" 2>/dev/null
echo "==> the gateway on AF_XDP: $STACK_IP ports 8080 (ws) and 8443 (wss), one worker per queue, control on 127.0.0.1:9100"
ip netns exec "$STACK_NS" "$sluice" run --backend afxdp --iface "$STACK_IF" \
  --ip "$STACK_IP/$PREFIX_LEN" --port 8080 --queues 2 --app gateway \
  --tls-port 8443 --tls-cert "$work/wss.pem" --tls-key "$work/wss.key" \
  --config "$work/gateway.toml" --control 127.0.0.1:9100 \
  >"$work/gateway.out" 2>"$work/gateway.log" &
gw_pid=$!
pids+=("$gw_pid")
wait_line "$work/gateway.out" '^listening' "the gateway"

echo "==> the kernel pings Sluice (ARP answered by Sluice)"
ip netns exec "$PEER_NS" ping -c 2 -i 0.2 "$STACK_IP" | sed -n '1,3p'

echo "==> 6 Python websockets clients subscribe (clients 0-2: news, 3-5: prices, 5 also news;"
echo "    clients 4 and 5 over wss://$STACK_IP:8443, trusting the throw-away certificate)"
# Each client records every message it receives and the close code into received.json.
ip netns exec "$PEER_NS" python3 - "$STACK_IP" "$work/received.json" "$work/wss.pem" >"$work/clients.out" 2>&1 <<'EOF' &
import asyncio, json, ssl, sys
import websockets

host, out, ca = sys.argv[1], sys.argv[2], sys.argv[3]
topics = {0: ["news"], 1: ["news"], 2: ["news"], 3: ["prices"], 4: ["prices"], 5: ["prices", "news"]}
tls = ssl.create_default_context(cafile=ca)
ready = 0

async def client(i):
    global ready
    url, ctx = (f"wss://{host}:8443/ws", tls) if i >= 4 else (f"ws://{host}:8080/ws", None)
    async with websockets.connect(url, ssl=ctx, ping_interval=None) as ws:
        for t in topics[i]:
            await ws.send(json.dumps({"op": "subscribe", "topic": t}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply == {"op": "subscribed", "topic": t}, reply
        ready += 1
        if ready == len(topics):
            print("ready", flush=True)
        got = []
        try:
            # Bounded: the demo stops the gateway within seconds; a hung client must not
            # hang the demo (or CI).
            async with asyncio.timeout(60):
                async for raw in ws:
                    m = json.loads(raw)
                    got.append([m.get("op"), m.get("topic"), m.get("data")])
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            print(f"client {i}: no close within 60 s", flush=True)
        code = ws.close_code
        return {"client": i, "topics": topics[i], "received": got, "close": code}

async def main():
    results = sorted(await asyncio.gather(*(client(i) for i in topics)), key=lambda r: r["client"])
    with open(out, "w") as f:
        json.dump(results, f)
    for r in results:
        print(f"client {r['client']} ({'+'.join(r['topics'])}{', wss' if r['client'] >= 4 else ''}) received {len(r['received'])}, "
              f"then close {r['close']}:")
        for op, topic, data in r["received"]:
            print(f"    {topic}: {data}" if op == "message" else f"    (op {op}) {topic}: {data}")

asyncio.run(main())
EOF
clients_pid=$!
pids+=("$clients_pid")
wait_line "$work/clients.out" '^ready' "the clients" >/dev/null

echo "==> a backend publishes through the ingest endpoint (POST /publish/{topic})"
# published.jsonl: one {"topic", "data", "reply"} per publication, for the check below.
publish() { # topic, text
  local reply
  printf '  POST /publish/%-7s %-34s -> ' "$1" "\"$2\""
  reply=$(ip netns exec "$STACK_NS" curl -sS --max-time 10 -X POST --data-binary "$2" \
    "http://127.0.0.1:9100/publish/$1") || reply="(curl failed: exit $?)"
  echo "$reply"
  python3 -c 'import json, sys; print(json.dumps({"topic": sys.argv[1], "data": sys.argv[2], "reply": sys.argv[3]}))' \
    "$1" "$2" "$reply" >>"$work/published.jsonl"
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
  grep -E '^sluice_(published_total|messages_out_total|connections_open|tls_handshakes_total\{result="ok"|xdp_packets_total|tcp_connections|worker_busy_ratio)' |
  sed 's/^/    /'

echo "==> SIGTERM: the gateway stops accepting, flushes, closes every client with 1001"
kill -TERM "$gw_pid"
gw_status=0
wait "$gw_pid" || gw_status=$?
pids=("$clients_pid")
if [ "$gw_status" = 0 ]; then
  echo "the gateway exited 0"
else
  echo "demo.sh: FAIL: the gateway exited with status $gw_status; its log:" >&2
  sed 's/^/    /' "$work/gateway.log" >&2
  exit 1
fi
wait "$clients_pid" || {
  echo "demo.sh: FAIL: the clients failed:" >&2; cat "$work/clients.out" >&2; exit 1
}
pids=()
echo "==> what the clients received"
grep -v '^ready' "$work/clients.out"
echo "--- the gateway's log (last lines):"
sed 's/^/    /' "$work/gateway.log" | tail -n 5

echo "==> check: every client got exactly its topics' publications, in order, then close 1001"
python3 - "$work/published.jsonl" "$work/received.json" <<'EOF'
import json, sys

published = [json.loads(line) for line in open(sys.argv[1])]
results = json.load(open(sys.argv[2]))
fails = []
subscribers = {}
for r in results:
    for t in r["topics"]:
        subscribers[t] = subscribers.get(t, 0) + 1
for p in published:
    want = {"topic": p["topic"], "delivered": subscribers.get(p["topic"], 0)}
    try:
        got = json.loads(p["reply"])
    except ValueError:
        got = p["reply"]
    if got != want:
        fails.append(f"POST /publish/{p['topic']} {p['data']!r}: reply {got!r}, expected {want!r}")
for r in results:
    want = [["message", p["topic"], p["data"]] for p in published if p["topic"] in r["topics"]]
    if r["received"] != want:
        fails.append(f"client {r['client']} ({'+'.join(r['topics'])}) received {r['received']!r}, "
                     f"expected {want!r}")
    if r["close"] != 1001:
        fails.append(f"client {r['client']}: close code {r['close']}, expected 1001")
if len(results) != 6:
    fails.append(f"{len(results)} client results, expected 6")
for f in fails:
    print(f"demo.sh: FAIL: {f}", file=sys.stderr)
if fails:
    sys.exit(1)
n = sum(len(r["received"]) for r in results)
print(f"ok: {len(published)} publications acknowledged; {len(results)} clients received "
      f"exactly their {n} messages in order, then close 1001")
EOF
echo "==> demo done; tearing the lab down"
