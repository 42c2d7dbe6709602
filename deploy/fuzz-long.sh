#!/usr/bin/env bash
# The long fuzz runs (not part of CI): builds both cargo-fuzz crates, then runs every
# target once, one after another, for FUZZ_LONG_SECONDS (default 600) each at nice 19, so
# it can run in the background on a shared machine. Usage:
#
#   deploy/fuzz-long.sh OUT_DIR [TARGET...]     # default: every target of tcp/fuzz, ws/fuzz
#   setsid nohup deploy/fuzz-long.sh /tmp/fuzz-long > /tmp/fuzz-long.log 2>&1 &
#
# OUT_DIR/results.tsv gets one line per target as it finishes:
#   target  seconds  runs  corpus  crash
# (runs from libFuzzer's final "Done N runs in S second(s)"; corpus = files in the working
# corpus afterwards; crash = yes|no). Each target starts from its committed seeds plus the
# corpus of an earlier run in OUT_DIR/corpus/<crate>-<target>/ (kept, never written back
# to the repository); crashing inputs go to OUT_DIR/artifacts/<crate>-<target>/ and the
# libFuzzer log to OUT_DIR/logs/. The binaries are copied to OUT_DIR/bin first, so a
# rebuild of the tree meanwhile does not change what is being fuzzed.
# docs/TESTING.md records the results.
set -uo pipefail
source "$(dirname "$0")/fuzz-lib.sh"

out=${1:?usage: deploy/fuzz-long.sh OUT_DIR [crate/target...]}
shift
seconds=${FUZZ_LONG_SECONDS:-600}
mkdir -p "$out"/{bin,corpus,artifacts,logs}
out=$(cd "$out" && pwd)

renice -n 19 $$ >/dev/null
fuzz_build || {
  echo "fuzz-long: build failed" >&2
  exit 1
}

wanted=("$@")
if [ "${#wanted[@]}" = 0 ]; then
  for crate in "${FUZZ_CRATES[@]}"; do
    for target in $(fuzz_targets "$crate"); do wanted+=("$crate/$target"); done
  done
fi
for ct in "${wanted[@]}"; do
  cp "$(fuzz_bin "${ct%%/*}" "${ct##*/}")" "$out/bin/${ct/\//-}"
done

results=$out/results.tsv
[ -f "$results" ] || printf 'target\tseconds\truns\tcorpus\tcrash\n' >"$results"
for ct in "${wanted[@]}"; do
  crate=${ct%%/*}
  target=${ct##*/}
  name=$crate-$target
  corpus=$out/corpus/$name
  artifacts=$out/artifacts/$name
  log=$out/logs/$name.log
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz-long: $ct for $seconds s ($(date -u +%H:%M:%S))"
  start=$(date +%s)
  if nice -n 19 "$out/bin/$name" -artifact_prefix="$artifacts/" -timeout=60 \
    -print_final_stats=1 -max_total_time="$seconds" \
    "$corpus" "$(fuzz_seeds "$crate" "$target")" >"$log" 2>&1; then
    crash=no
  else
    crash=yes
  fi
  elapsed=$(($(date +%s) - start))
  printf '%s\t%s\t%s\t%s\t%s\n' "$ct" "$elapsed" "$(fuzz_done_runs "$log")" \
    "$(ls "$corpus" | wc -l)" "$crash" >>"$results"
  tail -n 1 "$results"
done
echo "fuzz-long: done ($(date -u +%H:%M:%S)); results in $results"
