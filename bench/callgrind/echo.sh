#!/usr/bin/env bash
# Instructions of the server's work per 64 B WebSocket echo, counted by callgrind through
# the stack driver on the in-memory wire (bench/examples/ws_echo_count.rs): only the
# out-of-line serve_frame / serve_poll are collected (the client and the wire are not),
# and set-up and warm-up cancel out: (I(2N) - I(N)) / N per round.
#   bench/callgrind/echo.sh [N]     (default 1000; needs valgrind)
# Prints instructions per message for `single` (one message per segment) and `pipelined`
# (16 messages in one segment).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000}
bin=${WS_ECHO_COUNT:-}
if [ -z "$bin" ]; then
  cargo build --release -q -p sluice-bench --example ws_echo_count
  bin=target/release/examples/ws_echo_count
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() {
  valgrind --tool=callgrind --collect-atstart=no \
    --toggle-collect='*serve_frame*' --toggle-collect='*serve_poll*' \
    --callgrind-out-file="$out/cg.$1.$2" "$bin" "$1" "$2" >/dev/null 2>"$out/log"
  callgrind_annotate "$out/cg.$1.$2" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}
for mode in single pipelined; do
  a=$(count "$mode" "$n")
  b=$(count "$mode" $((2 * n)))
  per=$([ "$mode" = single ] && echo 1 || echo 16)
  awk -v a="$a" -v b="$b" -v n="$n" -v per="$per" -v m="$mode" \
    'BEGIN { printf "%-9s %8.1f instructions per message (%d rounds: %d, %d rounds: %d)\n", m, (b - a) / (n * per), n, a, 2 * n, b }'
done
