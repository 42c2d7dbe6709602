#!/usr/bin/env bash
# Sluice's whole test suite, as a newcomer or CI runs it on a fresh machine (root):
#   1. deploy/setup.sh           installs what the build and the tests need
#   2. cargo fmt --check         formatting gate
#   3. cargo clippy -D warnings  lint gate (all targets)
#   4. cargo test --workspace    unit, property, simulation, real-client and root lab tests
#                                (root-only tests are #[ignore]d for plain `cargo test` and
#                                included here with --include-ignored); the Autobahn runs
#                                use the release binary ($SLUICE_BIN)
#   5. deploy/fuzz-smoke.sh      builds the cargo-fuzz crates; every target >= 20 s and
#                                >= 10,000 runs from its committed seeds
# Any failing step fails the command.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: must run as root (set-up installs packages; lab tests create namespaces)" >&2
  exit 1
fi

step "set-up"
deploy/setup.sh

export PATH="$repo/.venv/bin:$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1

netns_before=$(ip netns list | awk '{print $1}' | sort)

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy --all-targets -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "release binary (the Autobahn runs use it through SLUICE_BIN)"
cargo build --release --locked -p sluice --bin sluice
export SLUICE_BIN="$repo/target/release/sluice"

step "tests (cargo test --workspace, root lab tests included)"
cargo test --workspace --locked -- --include-ignored

step "fuzz smoke (deploy/fuzz-smoke.sh: every target >= 20 s and >= 10,000 runs)"
deploy/fuzz-smoke.sh

step "leftover check"
left=$(comm -13 <(echo "$netns_before") <(ip netns list | awk '{print $1}' | sort))
if [ -n "$left" ]; then
  echo "test.sh: tests left namespaces behind: $left" >&2
  exit 1
fi
echo "all tests passed"
