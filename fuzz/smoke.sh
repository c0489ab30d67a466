#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target and runs each one for
# FUZZ_SECONDS (default 60) from a copy of its committed seeds, so the seeds
# in fuzz/seeds/ stay clean. Exits non-zero if a build fails or any target
# crashes, times out or runs out of memory; prints executions, corpus size
# and coverage per target at the end.
#
#   fuzz/smoke.sh                         # all targets, 60 s each
#   FUZZ_SECONDS=600 fuzz/smoke.sh decide # one target, 10 minutes
#
# Works on stable Rust (RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags
# cargo-fuzz needs) and installs cargo-fuzz when it is missing. Crash inputs
# land in fuzz/artifacts/<target>/ (ignored by git).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

seconds=${FUZZ_SECONDS:-60}
all_targets=(signature envelope classify decide)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi
nice=${FUZZ_NICE:-10}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes -Z flags to rustc; stable accepts them with this set.
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

echo "== building ${targets[*]}"
for t in "${targets[@]}"; do
    nice -n "$nice" cargo fuzz build "$t"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=0
summary=()
for t in "${targets[@]}"; do
    corpus="$work/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    cp fuzz/seeds/"$t"/* "$corpus"/
    log="$work/$t.log"
    echo "== fuzzing $t for ${seconds}s (seeds: $(ls "$corpus" | wc -l))"
    status=ok
    if ! nice -n "$nice" cargo fuzz run "$t" "$corpus" -- \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -max_len=65536 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" \
        >"$log" 2>&1; then
        status=FAILED
        failed=1
        echo "-- $t failed; end of its log:"
        tail -n 60 "$log"
    fi
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n 1)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$done_line")
    ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.*corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")
    summary+=("$(printf '%-10s %-7s %12s %8s %8s %14s %8s' \
        "$t" "$status" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$(ls "$corpus" | wc -l)")")
done

echo
printf '%-10s %-7s %12s %8s %8s %14s %8s\n' target status executions cov ft corp files
printf '%s\n' "${summary[@]}"
exit "$failed"
