#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/*.rs) for SECONDS each (default 60)
# and fails if any of them crashes, panics, times out or runs out of memory.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS="jws oauth1"  only these targets (default: all, one after another)
#   FUZZ_SANITIZER=address     AddressSanitizer (needs -Z flags: RUSTC_BOOTSTRAP=1 is set
#                              for it on stable); default `none`, plain stable
#   FUZZ_TOOLCHAIN=stable      the rustup toolchain
#   FUZZ_KEEP_GOING=1          run the whole time, collecting every crash (libFuzzer fork
#                              mode) instead of stopping at the first; still exit 1 if any
#   CARGO_TARGET_DIR           honoured (the fuzz build has its own flags; give it its own dir)
#
# The committed seeds (fuzz/corpus/<target>/) are only read; what a run finds
# goes to fuzz/corpus-work/<target>/, crashes to fuzz/artifacts/<target>/, the
# libFuzzer output to fuzz/logs/<target>.log (all git-ignored). A crash is
# replayed with `cargo fuzz run <target> fuzz/artifacts/<target>/crash-…`.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS]  (whole seconds per target, at least 1)" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
sanitizer="${FUZZ_SANITIZER:-none}"
toolchain="${FUZZ_TOOLCHAIN:-stable}"

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo "+$toolchain" install cargo-fuzz --locked
fi
if [ "$sanitizer" != none ]; then
    # The sanitizers are unstable rustc flags; this lets stable accept them.
    export RUSTC_BOOTSTRAP=1
fi

all_targets=$(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//')
targets="${FUZZ_TARGETS:-$all_targets}"
for t in $targets; do
    if ! grep -qx "$t" <<<"$all_targets"; then
        echo "unknown target $t; the targets are: $(echo $all_targets)" >&2
        exit 2
    fi
done

# -a: debug assertions and overflow checks, so an overflow is a finding too.
flags=(-s "$sanitizer" -a)
echo "== building the fuzz targets (sanitizer: $sanitizer, toolchain: $toolchain)"
for t in $targets; do
    cargo "+$toolchain" fuzz build "${flags[@]}" "$t"
done

mkdir -p fuzz/logs
failed=()
printf '%-14s %12s %8s %8s %8s  %s\n' target execs cov ft corpus result
for t in $targets; do
    work="fuzz/corpus-work/$t"
    mkdir -p "$work" "fuzz/artifacts/$t"
    log="fuzz/logs/$t.log"
    status=0
    found_before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    keep_going=()
    if [ -n "${FUZZ_KEEP_GOING:-}" ]; then
        keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    # New inputs go to the first directory; the seeds are read from the second.
    cargo "+$toolchain" fuzz run "${flags[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${keep_going[@]}" >"$log" 2>&1 || status=$?
    if [ "$(find "fuzz/artifacts/$t" -type f | wc -l)" -gt "$found_before" ] && [ "$status" -eq 0 ]; then
        status=1
    fi
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    if [ -z "$execs" ]; then
        # Fork mode prints no final stats: its last status line counts the runs.
        execs=$(grep -oE '^#[0-9]+' <<<"$last" | tr -d '#' || true)
    fi
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    corpus=$(find "$work" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $status; see $log and fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
    printf '%-14s %12s %8s %8s %8s  %s\n' "$t" "${execs:--}" "${cov:--}" "${ft:--}" "$corpus" "$result"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    for t in "${failed[@]}"; do
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "fuzz/logs/$t.log" | head -5 >&2 || true
    done
    exit 1
fi
echo "no crash in $(echo $targets | wc -w) target(s), ${seconds}s each"
