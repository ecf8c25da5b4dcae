#!/usr/bin/env bash
# asr restore of the scanned corpus image, verify included, into a writable FUSE target's
# disk.img (asr mount --target) against the same restore into a plain sparse file.
# Target: the FUSE target at least 0.7x the plain file's speed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time fusermount3:fuse3
need_asr
"$BENCH/corpus.sh" >&2

scanned=$WORK/restore.dmg
if ! [ "$scanned" -nt "$CORPUS" ] || ! [ "$scanned" -nt "$ASR" ]; then
	"$ASR" create --source "$CORPUS" --output "$scanned" --overwrite >&2
	"$ASR" imagescan --source "$scanned" >/dev/null
fi
bytes=$(size_of "$CORPUS")
mnt=$WORK/target-mnt backing=$WORK/target-backing.raw plain=$WORK/target-plain.raw
mkdir -p "$mnt"
rm -f "$backing"
"$ASR" mount --target "$backing" --size "$bytes" "$mnt"
trap '"$ASR" unmount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || true' EXIT

rm -f "$WORK"/target-*.log
for ((i = 1; i <= RUNS; i++)); do
	bench_run "$WORK/target-plain.log" "$plain" "$scanned" "$ASR" restore --source "$scanned" --target "$plain" --erase --noprompt
	# The mount's disk.img cannot be removed; bench_run gets a stand-in output path.
	bench_run "$WORK/target-fuse.log" "$WORK/target-none" "$scanned" "$ASR" restore --source "$scanned" --target "$mnt/disk.img" --erase --noprompt
done
pid=$(pgrep -f "asr mount .*--target $backing" | head -1)
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
want=$(sha256sum <"$CORPUS" | cut -d' ' -f1)
for f in "$plain" "$mnt/disk.img"; do
	[ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$want" ] || { echo "FAIL  $f differs from the corpus" >&2; exit 1; }
done
"$ASR" unmount "$mnt"
trap - EXIT
[ "$(sha256sum <"$backing" | cut -d' ' -f1)" = "$want" ] || { echo "FAIL  the backing file differs from the corpus" >&2; exit 1; }

read -r plain_best plain_med _ _ < <(summarize "$WORK/target-plain.log")
read -r fuse_best fuse_med _ _ < <(summarize "$WORK/target-fuse.log")
echo "## restore into a writable FUSE target: $(mib "$(size_of "$scanned")") MiB scanned UDZO image, $(mib "$bytes") MiB disk, best and median of $RUNS runs"
header
row "restore into a sparse file" "$bytes" "$WORK/target-plain.log" "$plain"
row "restore into MNT/disk.img" "$bytes" "$WORK/target-fuse.log" "$backing"
echo
echo "disk.img, the backing file after unmount and the plain file all have the corpus's sha256"
echo "mount process peak RSS: $(mib $((rss * 1024))) MiB; backing file uses $(du -m "$backing" | cut -f1) MiB"
echo "speed ratio (plain / FUSE wall): $(ratio "$plain_best" "$fuse_best")x best, $(ratio "$plain_med" "$fuse_med")x median"
verdict "restore into the FUSE target at least 0.7x the sparse file ($(ratio "$plain_best" "$fuse_best")x)" "$plain_best / $fuse_best >= 0.7"
