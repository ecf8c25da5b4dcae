#!/usr/bin/env bash
# asr create (UDZO) against gzip -6 on the same raw disk: speed, size and asr's peak memory.
# Targets: asr >= 4x gzip -6 wall speed, image <= 2% larger than the .gz, peak RSS < 256 MiB.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time gzip:gzip
need_asr
"$BENCH/corpus.sh" >&2

dmg=$WORK/corpus.dmg gz=$WORK/corpus.raw.gz
rm -f "$WORK"/create-*.log
# Runs alternate between the two tools so any drift in machine load hits both alike.
for ((i = 1; i <= RUNS; i++)); do
	bench_run "$WORK/create-asr.log" "$dmg" "$CORPUS" "$ASR" create --source "$CORPUS" --output "$dmg"
	bench_run "$WORK/create-gzip.log" "$gz" "$CORPUS" sh -c 'exec gzip -6 -c "$1" >"$2"' gzip "$CORPUS" "$gz"
done

bytes=$(size_of "$CORPUS")
read -r asr_best asr_med _ asr_rss < <(summarize "$WORK/create-asr.log")
read -r gz_best gz_med _ _ < <(summarize "$WORK/create-gzip.log")
# Interference from other work only ever adds time, so the verdict uses the best runs.
speed=$(ratio "$gz_best" "$asr_best") speed_med=$(ratio "$gz_med" "$asr_med")
size=$(awk -v a="$(size_of "$dmg")" -v b="$(size_of "$gz")" 'BEGIN { printf "%.4f", a / b }')

echo "## create: $(mib "$bytes") MiB raw disk, best and median of $RUNS runs"
header
row "asr create (UDZO)" "$bytes" "$WORK/create-asr.log" "$dmg"
row "gzip -6" "$bytes" "$WORK/create-gzip.log" "$gz"
echo
echo "speed ratio (gzip wall / asr wall): ${speed}x best, ${speed_med}x median"
echo "size ratio (asr image / gzip):      $size"
verdict "asr create at least 4x gzip -6 (${speed}x)" "$gz_best / $asr_best >= 4"
verdict "image no more than 2% above gzip -6 ($size)" "$(size_of "$dmg") <= 1.02 * $(size_of "$gz")"
verdict "asr create peak RSS below 256 MiB ($(mib $((asr_rss * 1024))) MiB)" "$asr_rss < 262144"
