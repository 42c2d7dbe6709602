# Shared by deploy/fuzz-smoke.sh (CI) and deploy/fuzz-long.sh (by hand): building the two
# cargo-fuzz crates (tcp/fuzz, ws/fuzz) and running one libFuzzer target.
# Source it; it defines functions and variables only.

# cargo-fuzz is pinned; installed into ~/.cargo/bin when missing or another version.
FUZZ_CARGO_FUZZ_VERSION=0.13.2
# The fuzz crates, relative to the repository root.
FUZZ_CRATES=(tcp ws)

fuzz_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Installs the pinned cargo-fuzz unless it is already there.
fuzz_install() {
  if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $FUZZ_CARGO_FUZZ_VERSION" ]; then
    echo "fuzz: installing cargo-fuzz $FUZZ_CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$FUZZ_CARGO_FUZZ_VERSION" --locked
  fi
}

# The target directory of crate $1 (under the workspace's ignored target/).
fuzz_target_dir() { echo "$fuzz_repo/target/fuzz/$1"; }

# The fuzz targets of crate $1: the [[bin]] names of $1/fuzz/Cargo.toml.
fuzz_targets() {
  awk '/^\[\[bin\]\]/{bin=1; next} bin && /^name *=/{gsub(/.*= *"|".*/, ""); print; bin=0}' \
    "$fuzz_repo/$1/fuzz/Cargo.toml"
}

# The built binary of target $2 of crate $1.
fuzz_bin() { echo "$(fuzz_target_dir "$1")/x86_64-unknown-linux-gnu/release/$2"; }

# The committed seed corpus of target $2 of crate $1.
fuzz_seeds() { echo "$fuzz_repo/$1/fuzz/seeds/$2"; }

# Builds every target of both crates (stable Rust, hence RUSTC_BOOTSTRAP=1). Each crate has
# its own Cargo.lock: `cargo fetch --locked` fails if it is stale (cargo fuzz build has no
# --locked of its own), so the build uses exactly the committed versions.
fuzz_build() {
  fuzz_install
  local crate
  for crate in "${FUZZ_CRATES[@]}"; do
    cargo fetch --locked --manifest-path "$fuzz_repo/$crate/fuzz/Cargo.toml"
    (cd "$fuzz_repo/$crate" &&
      RUSTC_BOOTSTRAP=1 cargo fuzz build --target-dir "$(fuzz_target_dir "$crate")")
  done
}

# fuzz_run CRATE TARGET CORPUS_DIR ARTIFACT_DIR LOG [libFuzzer flags...]
# Runs the target over a writable copy of the corpus (CORPUS_DIR, which the caller seeds)
# with the committed seeds as a read-only second corpus; stdout+stderr go to LOG. Returns
# libFuzzer's status (non-zero on a crash, leak, timeout or out-of-memory).
fuzz_run() {
  local crate=$1 target=$2 corpus=$3 artifacts=$4 log=$5
  shift 5
  "$(fuzz_bin "$crate" "$target")" -artifact_prefix="$artifacts/" -timeout=25 \
    -print_final_stats=1 "$@" "$corpus" "$(fuzz_seeds "$crate" "$target")" >"$log" 2>&1
}

# The run count from a log's final "Done N runs in S second(s)" line (0 when absent).
fuzz_done_runs() {
  sed -n 's/^Done \([0-9]*\) runs in .*/\1/p' "$1" | tail -n 1 | grep . || echo 0
}
