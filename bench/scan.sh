#!/usr/bin/env bash
# asr imagescan of the corpus's UDZO image against decoding it with dmg2img and hashing the
# stream with sha256sum (what an admin would do to get a checksum without asr). imagescan does
# more: SHA-256 per chunk and of the disk, SHA-1, CRC-32 check, and rewriting the image with
# its scan data (fsync included). Targets: >= 2.5x the pipeline, peak RSS < 256 MiB.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time dmg2img:dmg2img
need_asr
"$BENCH/corpus.sh" >&2

dmg=$WORK/corpus.dmg fresh=$WORK/scan.dmg
if ! [ "$dmg" -nt "$CORPUS" ] || ! [ "$dmg" -nt "$ASR" ]; then
	"$ASR" create --source "$CORPUS" --output "$dmg" --overwrite >&2
fi
rm -f "$WORK"/scan-*.log
for ((i = 1; i <= RUNS; i++)); do
	cp "$dmg" "$fresh"  # imagescan rewrites its input: every run starts unscanned
	bench_run "$WORK/scan-asr.log" "$WORK/scan.none" "$fresh" "$ASR" imagescan --source "$fresh"
	bench_run "$WORK/scan-pipe.log" "$WORK/scan.none" "$dmg" sh -c 'dmg2img -s -i "$1" -o /dev/stdout | sha256sum >/dev/null' sh "$dmg"
done
"$ASR" verify --source "$fresh" >/dev/null

bytes=$(size_of "$CORPUS")
read -r asr_best asr_med _ asr_rss < <(summarize "$WORK/scan-asr.log")
read -r pipe_best pipe_med _ _ < <(summarize "$WORK/scan-pipe.log")
speed=$(ratio "$pipe_best" "$asr_best") speed_med=$(ratio "$pipe_med" "$asr_med")

echo "## imagescan: $(mib "$(size_of "$dmg")") MiB UDZO image of a $(mib "$bytes") MiB disk, best and median of $RUNS runs"
header
row "asr imagescan" "$bytes" "$WORK/scan-asr.log" "$fresh"
row "dmg2img -s | sha256sum" "$bytes" "$WORK/scan-pipe.log" "$dmg"
echo
echo "the scanned image verifies (asr verify); speed ratio (pipeline wall / asr wall): ${speed}x best, ${speed_med}x median"
verdict "asr imagescan at least 2.5x dmg2img | sha256sum (${speed}x)" "$pipe_best / $asr_best >= 2.5"
verdict "asr imagescan peak RSS below 256 MiB ($(mib $((asr_rss * 1024))) MiB)" "$asr_rss < 262144"
