#!/usr/bin/env bash
# Builds both cargo-fuzz crates (tcp/fuzz, ws/fuzz) and runs every fuzz target as a short
# smoke from its committed seed corpus (<crate>/fuzz/seeds/<target>/): at least
# FUZZ_SMOKE_SECONDS (default 20) seconds AND at least FUZZ_SMOKE_RUNS (default 10,000)
# executions each, whichever is more: a timed run first, then, if it made fewer runs than
# that, a second run for the missing count. A failed build, a crash (panic, failed
# assertion, sanitizer report), a timeout or a target without seeds fails the script.
#
# The working corpus is a temporary copy, so the repository stays clean; a crashing input
# is kept under $FUZZ_SMOKE_KEEP (default /tmp/sluice-fuzz-smoke-failures) and printed.
# deploy/test.sh runs this as its own stage. Long runs: deploy/fuzz-long.sh.
set -euo pipefail
source "$(dirname "$0")/fuzz-lib.sh"

seconds=${FUZZ_SMOKE_SECONDS:-20}
min_runs=${FUZZ_SMOKE_RUNS:-10000}
keep=${FUZZ_SMOKE_KEEP:-/tmp/sluice-fuzz-smoke-failures}

fuzz_build

work=$(mktemp -d /tmp/sluice-fuzz-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT

failed=()
for crate in "${FUZZ_CRATES[@]}"; do
  for target in $(fuzz_targets "$crate"); do
    seeds=$(fuzz_seeds "$crate" "$target")
    if [ -z "$(ls -A "$seeds" 2>/dev/null)" ]; then
      echo "fuzz-smoke: $crate/$target has no seed corpus in $seeds" >&2
      failed+=("$crate/$target (no seeds)")
      continue
    fi
    corpus=$work/$crate-$target/corpus
    artifacts=$work/$crate-$target/artifacts
    mkdir -p "$corpus" "$artifacts"
    log=$work/$crate-$target/timed.log
    status=ok
    runs=0
    if fuzz_run "$crate" "$target" "$corpus" "$artifacts" "$log" -max_total_time="$seconds"; then
      runs=$(fuzz_done_runs "$log")
      if [ "$runs" -lt "$min_runs" ]; then
        more=$((min_runs - runs))
        log2=$work/$crate-$target/runs.log
        if fuzz_run "$crate" "$target" "$corpus" "$artifacts" "$log2" -runs="$more"; then
          extra=$(fuzz_done_runs "$log2")
          runs=$((runs + extra))
        else
          status=crash
          log=$log2
        fi
      fi
    else
      status=crash
    fi
    if [ "$status" = ok ] && [ "$runs" -lt "$min_runs" ]; then
      status="too few runs ($runs < $min_runs)"
    fi
    printf 'fuzz-smoke: %-4s %-18s runs=%-9s corpus=%-5s %s\n' "$crate" "$target" "$runs" \
      "$(ls "$corpus" | wc -l)" "$status"
    if [ "$status" != ok ]; then
      failed+=("$crate/$target ($status)")
      tail -n 60 "$log" >&2
      mkdir -p "$keep/$crate-$target"
      cp -r "$artifacts/." "$keep/$crate-$target/" 2>/dev/null || true
      echo "fuzz-smoke: crashing inputs (if any) kept in $keep/$crate-$target" >&2
    fi
  done
done

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'fuzz-smoke: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz-smoke: every target ran >= ${seconds} s and >= ${min_runs} executions without a crash"
