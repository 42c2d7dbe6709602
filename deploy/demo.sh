#!/usr/bin/env bash
# The README's main job: set up a lab, start Sluice in it, have a real client talk to it
# through the veth, print what happened, tear everything down (also on failure or Ctrl-C).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
[ "$(id -u)" = 0 ] || { echo "demo.sh: must run as root" >&2; exit 1; }

deploy/setup.sh
export PATH="$repo/.venv/bin:$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p sluice

prefix="sldemo$$"
cleanup() { deploy/lab.sh down --prefix "$prefix" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
eval "$(deploy/lab.sh up --prefix "$prefix")"
echo "lab: stack side $STACK_NS/$STACK_IF ($STACK_MAC), peer side $PEER_NS/$PEER_IF $PEER_IP"

target/release/sluice info
echo "peer -> stack side: ARP for $STACK_IP (no stack is answering yet in this build):"
ip netns exec "$PEER_NS" ping -c 1 -W 1 "$STACK_IP" || true
echo "demo done; tearing the lab down"
