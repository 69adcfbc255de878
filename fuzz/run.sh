#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and fails on the first crash.
#   fuzz/run.sh [SECONDS]     default 20 s per target (CI); a few minutes each locally
# Needs only the stable toolchain: cargo-fuzz's nightly flags are enabled with RUSTC_BOOTSTRAP=1.
# Inputs a run discovers go to a scratch directory, not into the committed corpus; a crash
# leaves its input in fuzz/artifacts/<target>/ (fix it, then add it to fuzz/corpus/<target>/).
set -euo pipefail
secs="${1:-20}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
targets=$(cargo fuzz list)
cargo fuzz build 2>&1 | tail -n 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for t in $targets; do
    mkdir -p "$work/$t" "corpus/$t"
    log="$work/$t.log"
    if cargo fuzz run "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)
        cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
        echo "fuzz $t: ok: ${runs:-?} (${cov:-?})"
    else
        echo "fuzz $t: FAILED (crash or error); last lines of its log:"
        tail -n 40 "$log"
        ls -1 "artifacts/$t" 2>/dev/null | sed 's/^/  artifact: /' || true
        status=1
    fi
done
exit $status
