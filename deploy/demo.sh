#!/usr/bin/env bash
# The README's main job: build Sluice, set up a two-namespace lab, run Sluice on AF_XDP on
# the stack side of the veth (no kernel IP there: Sluice answers ARP, ICMP and TCP itself),
# and have the Linux kernel's own TCP on the peer side talk to it. Then a real WebSocket
# client (Python `websockets`) talks to Sluice's WebSocket echo. Prints what the clients saw
# and Sluice's counters, and tears everything down, also on failure or Ctrl-C.
#
#   deploy/demo.sh            (root; installs what is missing via deploy/setup.sh)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
[ "$(id -u)" = 0 ] || { echo "demo.sh: must run as root" >&2; exit 1; }

deploy/setup.sh
export PATH="$repo/.venv/bin:$HOME/.cargo/bin:$PATH"
echo "==> building the release binary"
cargo build --release --locked -p sluice
sluice="$repo/target/release/sluice"

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

wait_ready() { # file, what
  for _ in $(seq 1 300); do
    grep -q '^listening' "$1" 2>/dev/null && { grep -m1 '^listening' "$1"; return 0; }
    sleep 0.1
  done
  echo "demo.sh: $2 did not become ready; its output:" >&2; cat "$1" >&2; return 1
}

echo "==> lab"
eval "$(deploy/lab.sh up --prefix "$prefix")"
echo "stack side: $STACK_NS/$STACK_IF $STACK_MAC (no kernel address)"
echo "peer side:  $PEER_NS/$PEER_IF $PEER_MAC $PEER_IP"

echo "==> Sluice tcp-echo on AF_XDP, $STACK_IP port 7"
ip netns exec "$STACK_NS" "$sluice" run --backend afxdp --iface "$STACK_IF" \
  --ip "$STACK_IP/$PREFIX_LEN" --port 7 --app tcp-echo >"$work/afxdp.out" 2>"$work/afxdp.log" &
pids+=($!)
wait_ready "$work/afxdp.out" "sluice (afxdp)"

echo "==> the kernel pings Sluice (ARP is answered by Sluice, no static entry)"
ip netns exec "$PEER_NS" ping -c 3 -i 0.2 "$STACK_IP"

echo "==> the kernel's TCP talks to Sluice"
ip netns exec "$PEER_NS" python3 - "$STACK_IP" <<'EOF'
import socket, sys, hashlib, threading
host = sys.argv[1]
with socket.create_connection((host, 7), timeout=10) as s:
    for i in range(3):
        msg = f"hello #{i} from the Linux kernel's TCP".encode()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += s.recv(4096)
        print(f"sent {msg.decode()!r:45} echoed {got.decode()!r}")
    blob = bytes((i * 7 + 13) % 256 for i in range(8 << 20))
    # Send from a thread while reading the echo here: an echo server cannot take more
    # than its buffers hold from a client that does not read.
    sender = threading.Thread(target=s.sendall, args=(blob,))
    sender.start()
    back = bytearray()
    while len(back) < len(blob):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        back += chunk
    sender.join()
    ok = hashlib.sha256(back).digest() == hashlib.sha256(blob).digest()
    print(f"8 MiB through Sluice and back: {'byte-exact' if ok else 'MISMATCH'}")
    if not ok:
        sys.exit(1)
EOF
echo "--- the peer's view of a connection (ss -tin) while one is open:"
ip netns exec "$PEER_NS" python3 - "$STACK_IP" <<'EOF' &
import socket, sys, time
s = socket.create_connection((sys.argv[1], 7), timeout=10)
s.sendall(b"x"); s.recv(1); time.sleep(1.5); s.close()
EOF
sleep 0.7
ip netns exec "$PEER_NS" ss -tin dst "$STACK_IP" | sed 's/^/    /'
wait $! || true

echo "==> Sluice WebSocket echo (kernel-socket backend, same codec) and Python websockets"
ip netns exec "$PEER_NS" "$sluice" run --backend kernel --ip 127.0.0.1 --port 0 --app ws-echo \
  >"$work/ws.out" 2>"$work/ws.log" &
pids+=($!)
line=$(wait_ready "$work/ws.out" "sluice (ws-echo)")
echo "$line"
port=$(sed -n 's/.* port=\([0-9]*\).*/\1/p' <<<"$line")
ip netns exec "$PEER_NS" python3 - "$port" <<'EOF'
import asyncio, sys
from websockets.asyncio.client import connect
async def main(port):
    async with connect(f"ws://127.0.0.1:{port}/demo", compression="deflate") as ws:
        print(f"negotiated extensions: {[e.name for e in ws.protocol.extensions]}")
        for msg in ["hello, Sluice", "ünïcödé ✓", "x" * 100_000]:
            await ws.send(msg)
            got = await ws.recv()
            shown = got if len(got) < 40 else f"{got[:12]}... ({len(got)} chars)"
            print(f"echoed: {shown!r} {'ok' if got == msg else 'MISMATCH'}")
            assert got == msg
asyncio.run(main(int(sys.argv[1])))
EOF

echo "==> stopping Sluice (SIGTERM: stop accepting, drain, detach XDP)"
kill -TERM "${pids[0]}"
wait "${pids[0]}" && echo "sluice (afxdp) exited 0"
pids=("${pids[@]:1}")
echo "--- its log:"
sed 's/^/    /' "$work/afxdp.log" | tail -n 8
echo "==> demo done; tearing the lab down"
