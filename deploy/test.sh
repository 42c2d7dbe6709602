#!/usr/bin/env bash
# Sluice's whole test suite, as a newcomer or CI runs it on a fresh machine (root):
#   1. deploy/setup.sh           installs what the build and the tests need
#   2. cargo fmt --check         formatting gate
#   3. cargo clippy -D warnings  lint gate (all targets), for the default build and again
#                                with the `dpdk` feature
#   4. cargo build --release     the release binary (default features: no DPDK), then
#   5. deploy/demo.sh            the README's first command against it (it checks that every
#                                client received exactly its topics' messages, then 1001)
#   6. cargo build --release --features dpdk   the release binary with the DPDK backend
#   7. cargo test --workspace    unit, property, simulation, real-client and root lab tests,
#                                with the `dpdk` feature (its lab tests run --backend dpdk
#                                on DPDK's net_af_packet over the lab veth); root-only tests
#                                are #[ignore]d for plain `cargo test` and included here
#                                with --include-ignored; the Autobahn runs use the release
#                                binary of step 6 ($SLUICE_BIN)
#   8. deploy/fuzz-smoke.sh      builds the cargo-fuzz crates; every target >= 20 s and
#                                >= 10,000 runs from its committed seeds
#   9. deploy/fresh-check.sh     setup.sh and the demo in a fresh minimal Debian bookworm root
#  10. leftover check            no network namespace left behind
# Any failing step fails the command. Each stage prints its start (UTC, seconds since the
# start) and its duration; a table of all durations is printed at the end, pass or fail.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

t0=$(date +%s)
stage_names=()
stage_secs=()
stage_t0=""
stage_end() {
  [ -n "$stage_t0" ] || return 0
  local secs=$(($(date +%s) - stage_t0))
  stage_secs+=("$secs")
  printf '<== %s: %d s\n' "${stage_names[-1]}" "$secs"
  stage_t0=""
}
step() {
  stage_end
  stage_names+=("$*")
  stage_t0=$(date +%s)
  printf '\n==> [%s UTC, +%d s] %s\n' "$(date -u +%H:%M:%S)" $((stage_t0 - t0)) "$*"
}
stage_table() {
  local status=$? i
  stage_end
  printf '\nstage times (%s):\n' "$([ "$status" = 0 ] && echo passed || echo "FAILED, status $status")"
  for i in "${!stage_secs[@]}"; do
    awk -v s="${stage_secs[i]}" -v n="${stage_names[i]}" 'BEGIN { printf "  %5.1f min %6d s  %s\n", s / 60, s, n }'
  done
  awk -v s=$(($(date +%s) - t0)) 'BEGIN { printf "  %5.1f min %6d s  total\n", s / 60, s }'
}

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: must run as root (set-up installs packages; lab tests create namespaces)" >&2
  exit 1
fi

trap stage_table EXIT

step "set-up"
deploy/setup.sh

export PATH="$repo/.venv/bin:$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1

netns_before=$(ip netns list | awk '{print $1}' | sort)

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy --all-targets -D warnings; default features, then --features sluice/dpdk)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features sluice/dpdk -- -D warnings

step "release build (cargo build --release -p sluice; the demo and the Autobahn runs use it)"
cargo build --release --locked -p sluice --bin sluice
export SLUICE_BIN="$repo/target/release/sluice"

step "demo (SLUICE_BIN=target/release/sluice deploy/demo.sh)"
deploy/demo.sh

step "DPDK release build (cargo build --release -p sluice --features dpdk; the tests' \$SLUICE_BIN)"
cargo build --release --locked -p sluice --bin sluice --features dpdk

step "tests (cargo test --workspace --features sluice/dpdk, root lab tests included)"
cargo test --workspace --locked --features sluice/dpdk -- --include-ignored

step "fuzz smoke (deploy/fuzz-smoke.sh: every target >= 20 s and >= 10,000 runs)"
deploy/fuzz-smoke.sh

step "fresh machine (deploy/fresh-check.sh: setup.sh and the demo in a bookworm root)"
deploy/fresh-check.sh

step "leftover check"
left=$(comm -13 <(echo "$netns_before") <(ip netns list | awk '{print $1}' | sort))
if [ -n "$left" ]; then
  echo "test.sh: tests left namespaces behind: $left" >&2
  exit 1
fi
echo "all tests passed"
