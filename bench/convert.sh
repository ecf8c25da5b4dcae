#!/usr/bin/env bash
# asr convert (UDZO -> RAW) against dmg2img on the same UDZO image made by asr; both outputs must
# match the corpus byte for byte. Targets: asr >= 3x dmg2img wall speed, peak RSS < 256 MiB.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time dmg2img:dmg2img
need_asr
"$BENCH/corpus.sh" >&2

dmg=$WORK/corpus.dmg ours=$WORK/convert-asr.raw theirs=$WORK/convert-dmg2img.raw
# Reuse create.sh's image only if it is newer than both the corpus and the binary.
if ! [ "$dmg" -nt "$CORPUS" ] || ! [ "$dmg" -nt "$ASR" ]; then
	"$ASR" create --source "$CORPUS" --output "$dmg" --overwrite >&2
fi
rm -f "$WORK"/convert-*.log
for ((i = 1; i <= RUNS; i++)); do
	bench_run "$WORK/convert-asr.log" "$ours" "$dmg" "$ASR" convert --source "$dmg" --format RAW --output "$ours"
	bench_run "$WORK/convert-dmg2img.log" "$theirs" "$dmg" dmg2img -s -i "$dmg" -o "$theirs"
done

want=$(sha256sum <"$CORPUS" | cut -d' ' -f1)
for f in "$ours" "$theirs"; do
	[ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$want" ] || { echo "FAIL  $f differs from the corpus" >&2; exit 1; }
done

bytes=$(size_of "$CORPUS")
read -r asr_best asr_med _ asr_rss < <(summarize "$WORK/convert-asr.log")
read -r d2i_best d2i_med _ _ < <(summarize "$WORK/convert-dmg2img.log")
# Interference from other work only ever adds time, so the verdict uses the best runs.
speed=$(ratio "$d2i_best" "$asr_best") speed_med=$(ratio "$d2i_med" "$asr_med")

echo "## convert: $(mib "$(size_of "$dmg")") MiB UDZO image to a $(mib "$bytes") MiB raw disk, best and median of $RUNS runs"
header
row "asr convert --format RAW" "$bytes" "$WORK/convert-asr.log" "$ours"
row "dmg2img" "$bytes" "$WORK/convert-dmg2img.log" "$theirs"
echo
echo "both outputs have the corpus's sha256 ($want)"
echo "disk space used: asr $(du -m "$ours" | cut -f1) MiB (zero runs left as holes), dmg2img $(du -m "$theirs" | cut -f1) MiB"
echo "speed ratio (dmg2img wall / asr wall): ${speed}x best, ${speed_med}x median"
verdict "asr convert at least 3x dmg2img (${speed}x)" "$d2i_best / $asr_best >= 3"
verdict "asr convert peak RSS below 256 MiB ($(mib $((asr_rss * 1024))) MiB)" "$asr_rss < 262144"
