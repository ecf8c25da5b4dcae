#!/usr/bin/env bash
# make fuzz: every harness under libFuzzer for FUZZ_SECONDS each, seeded from the fixtures,
# then a table of executions and crashes. Exits 1 if any harness left a crash, timeout or
# out-of-memory input (in fuzz/crashes/, named after the harness).
#
#   fuzz/run.sh FUZZ_BINARY FIXTURE_DIR
#   FUZZ_SECONDS (60)  FUZZ_TARGETS (all)  FUZZ_JOBS (harnesses at once, 1)
#
# fuzz/seeds/ is rewritten each run; fuzz/corpus/<harness>/ keeps what libFuzzer found
# interesting, so later runs start further on. Both are ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$1
fixtures=$2
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-$("$bin" --list)}
jobs=${FUZZ_JOBS:-1}

rm -rf fuzz/seeds fuzz/logs
mkdir -p fuzz/seeds fuzz/logs fuzz/crashes
# Leaks are not checked here either: Foundation's Process (the filesystem seeds are made by
# mkfs tools) leaks a weak reference.
ASAN_OPTIONS=detect_leaks=0 "$bin" --write-seeds fuzz/seeds "$fixtures"/*.dmg $(ls "$fixtures"/../fs/*.raw 2>/dev/null)
ls fuzz/crashes >fuzz/logs/crashes.before

# -malloc_limit_mb: no single allocation may exceed what the formats allow us to make
# (a 64 MiB chunk, XZ's 256 MiB dictionary cap); -timeout: no input may take 10 s.
run_one() {
    local t=$1
    # Whole small filesystems are seeds past libFuzzer's default 1 MiB input limit.
    local max_len=""
    case $t in filesystem|hfsplus|ext|fat|apfs) max_len="-max_len=4500000" ;; esac
    mkdir -p "fuzz/corpus/$t"
    # SWIFT_BACKTRACE: Swift's crash reporter would fight ASan's over the signal. Leaks are
    # not checked: Foundation leaks on its error paths (CFError), which is not ours to fix.
    ASR_FUZZ_TARGET=$t SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 \
        "$bin" -max_total_time="$seconds" -print_final_stats=1 -detect_leaks=0 \
        -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=320 $max_len \
        -dict="fuzz/seeds/$t.dict" -artifact_prefix="fuzz/crashes/$t-" \
        "fuzz/corpus/$t" "fuzz/seeds/$t" >"fuzz/logs/$t.log" 2>&1 || true
    echo "  $t done"
}
export -f run_one
export bin seconds
echo "fuzzing $(echo $targets | wc -w) harnesses for ${seconds} s each, $jobs at a time"
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {}'

final_stat() { grep -h "^stat::$2:" "fuzz/logs/$1.log" | tail -1 | awk '{print $2}'; }
printf '\n%-8s %12s %10s %8s %8s %8s\n' harness executions exec/s corpus new crashes
total=0
for t in $targets; do
    runs=$(final_stat "$t" number_of_executed_units)
    found=$(ls fuzz/crashes | grep "^$t-" | grep -cvxF -f fuzz/logs/crashes.before || true)
    printf '%-8s %12s %10s %8s %8s %8s\n' "$t" "${runs:-?}" "$(final_stat "$t" average_exec_per_sec)" \
        "$(ls "fuzz/corpus/$t" | wc -l)" "$(final_stat "$t" new_units_added)" "$found"
    total=$((total + ${runs:-0}))
done
printf '%-8s %12s\n' total "$total"

new=$(ls fuzz/crashes | grep -vxF -f fuzz/logs/crashes.before || true)
if [ -n "$new" ]; then
    echo "new crashing inputs in fuzz/crashes/ (the harness's log in fuzz/logs/):"
    echo "$new"
    exit 1
fi
