#!/usr/bin/env bash
# The files of an image through asr mount's volumes/ against the same ext4 filesystem read by
# the kernel (a read-only loop mount of the raw corpus) and by fuse2fs -o ro (e2fsprogs' own
# FUSE reader of it), each with the page cache dropped before every run:
#  1. `tar -cf - . | wc -c`: every file's bytes, in directory order;
#  2. `find . -type f | wc -l`: the tree's metadata alone.
# The byte and file counts must agree across the three. Run it when nothing else runs (no
# test suite): the times are wall-clock. Every mount made here is unmounted on exit.
# Goals: tar at least 0.7x the kernel's speed and 5x fuse2fs's; asr mount peaks under 256 MiB.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time fuse2fs:fuse2fs fusermount3:fuse3
need_asr
"$BENCH/corpus.sh" >&2

dmg=$WORK/corpus.dmg
if ! [ "$dmg" -nt "$CORPUS" ] || ! [ "$dmg" -nt "$ASR" ]; then
	"$ASR" create --source "$CORPUS" --output "$dmg" --overwrite >&2
fi
A=$WORK/vol-asr K=$WORK/vol-kernel F=$WORK/vol-fuse2fs
mkdir -p "$A" "$K" "$F"
for m in "$A" "$K" "$F"; do
	if mountpoint -q "$m"; then echo "volumes: $m is already a mount point; unmount it first" >&2; exit 1; fi
done
cleanup() {
	mountpoint -q "$A" && { "$ASR" unmount "$A" || fusermount3 -u -z "$A" || true; }
	mountpoint -q "$K" && { umount "$K" || umount -l "$K" || true; }
	mountpoint -q "$F" && { fusermount3 -u "$F" || fusermount3 -u -z "$F" || true; }
	rmdir "$A" "$K" "$F" 2>/dev/null || true
}
trap cleanup EXIT

"$ASR" mount "$dmg" "$A" >&2
mounter=$(pgrep -n -f -- " mount .*$A\$") || { echo "volumes: no asr mount process for $A" >&2; exit 1; }
mount -o ro,loop "$CORPUS" "$K"
fuse2fs -o ro,fakeroot "$CORPUS" "$F" >/dev/null 2>&1
volume=$(echo "$A"/volumes/0-*)
[ -d "$volume" ] || { echo "volumes: asr mount shows no volume in $A/volumes" >&2; exit 1; }

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# usage: measure NAME DIR: RUNS runs of each command; logs "wall_s ... " per run and the counts.
measure() {
	local name=$1 dir=$2 i
	rm -f "$WORK/vol-$name-tar.log" "$WORK/vol-$name-find.log"
	for ((i = 0; i < RUNS; i++)); do
		settle
		drop_caches
		/usr/bin/time -a -o "$WORK/vol-$name-tar.log" -f '%e %M %U %S' \
			sh -c "cd '$dir' && tar --exclude=./lost+found -cf - . | wc -c" >"$WORK/vol-$name-tar.out"
		drop_caches
		/usr/bin/time -a -o "$WORK/vol-$name-find.log" -f '%e %M %U %S' \
			sh -c "cd '$dir' && find . -path ./lost+found -prune -o -type f -print | wc -l" >"$WORK/vol-$name-find.out"
	done
}

measure asr "$volume"
measure kernel "$K"
measure fuse2fs "$F"

echo "## volumes/: the corpus's files through asr mount, the kernel's ext4 and fuse2fs"
echo
echo "$(mib "$(size_of "$dmg")") MiB UDZO image of a $(mib "$(size_of "$CORPUS")") MiB ext4 disk; page cache dropped before every run; best and median of $RUNS."
echo "tar: \`tar -cf - . | wc -c\` (every file's bytes); find: \`find . -type f | wc -l\` (metadata only)."
echo
printf '| %-34s | %6s | %6s | %7s | %13s |\n' reader "best s" median "MB/s" "bytes / files"
printf '|%s|%s|%s|%s|%s|\n' ------------------------------------ -------- -------- --------- ---------------
for pair in "asr:asr mount volumes/" "kernel:kernel ext4, loop, ro" "fuse2fs:fuse2fs -o ro"; do
	name=${pair%%:*} label=${pair#*:}
	read -r best med _ _ < <(summarize "$WORK/vol-$name-tar.log")
	bytes=$(cat "$WORK/vol-$name-tar.out")
	printf '| %-34s | %6.2f | %6.2f | %7s | %13s |\n' "tar: $label" "$best" "$med" "$(mbps "$bytes" "$best")" "$bytes"
done
for pair in "asr:asr mount volumes/" "kernel:kernel ext4, loop, ro" "fuse2fs:fuse2fs -o ro"; do
	name=${pair%%:*} label=${pair#*:}
	read -r best med _ _ < <(summarize "$WORK/vol-$name-find.log")
	printf '| %-34s | %6.2f | %6.2f | %7s | %13s |\n' "find: $label" "$best" "$med" "-" "$(cat "$WORK/vol-$name-find.out")"
done
echo
same_bytes=$(cat "$WORK"/vol-*-tar.out | sort -u | wc -l)
same_files=$(cat "$WORK"/vol-*-find.out | sort -u | wc -l)
verdict "the three readers give the same tar byte count" "$same_bytes == 1"
verdict "the three readers find the same files" "$same_files == 1"
read -r asr_best _ _ _ < <(summarize "$WORK/vol-asr-tar.log")
read -r f2_best _ _ _ < <(summarize "$WORK/vol-fuse2fs-tar.log")
read -r k_best _ _ _ < <(summarize "$WORK/vol-kernel-tar.log")
echo "tar through volumes/: $(ratio "$f2_best" "$asr_best")x fuse2fs's speed, $(ratio "$k_best" "$asr_best")x the kernel's (best runs)"
verdict "tar at least 0.7x the kernel's speed" "$k_best / $asr_best >= 0.7"
verdict "tar at least 5x fuse2fs's speed" "$f2_best / $asr_best >= 5"
# VmHWM: the mount process's peak resident memory over every run above.
peak_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$mounter/status")
echo "asr mount's peak resident memory: $(awk -v k="$peak_kib" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
verdict "the mount process peaks under 256 MiB" "$peak_kib < 262144"
