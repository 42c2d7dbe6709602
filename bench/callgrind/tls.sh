#!/usr/bin/env bash
# Instructions of the server's TLS work per echoed message, counted by callgrind on the wss
# layer in memory (bench/examples/tls_echo_count.rs: `Tls` around a plain echo, a rustls
# client, TLS 1.3 AES-128-GCM, one record each way per message): only the out-of-line
# `serve` is collected (the client is not), and the handshake cancels out:
# (I(2N) - I(N)) / N per message.
#   bench/callgrind/tls.sh [N]     (default 500; needs valgrind)
# TLS_ECHO_COUNT=path/to/tls_echo_count counts a binary built elsewhere (another commit).
# Prints instructions per message for 64 B, 1,400 B (one segment's worth) and 16 KiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-500}
bin=${TLS_ECHO_COUNT:-}
if [ -z "$bin" ]; then
  cargo build --release -q -p sluice-bench --example tls_echo_count
  bin=${CARGO_TARGET_DIR:-target}/release/examples/tls_echo_count
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() {
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*serve*' \
    --callgrind-out-file="$out/cg.$1.$2" "$bin" "$1" "$2" >/dev/null 2>"$out/log"
  callgrind_annotate "$out/cg.$1.$2" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}
for size in 64 1400 16384; do
  a=$(count "$size" "$n")
  b=$(count "$size" $((2 * n)))
  awk -v a="$a" -v b="$b" -v n="$n" -v s="$size" \
    'BEGIN { printf "%6d B %10.1f instructions per message (%.2f per byte; %d rounds: %d, %d rounds: %d)\n", s, (b - a) / n, (b - a) / n / s, n, a, 2 * n, b }'
done
