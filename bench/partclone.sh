#!/usr/bin/env bash
# Free space left out, against the way Clonezilla and FOG save a partition: a 4 GiB ext4 and a
# 4 GiB NTFS hold /usr/share and /usr/include, copied before and after a 1 GiB random file was
# written and deleted (its blocks are still in free space). asr create in UDZO and in ULMO
# (the densest) against `partclone.FS -c | zstd -3 -T0`. Goals: UDZO at most 1.10x and ULMO
# at most 1.0x the partclone+zstd size; asr create (UDZO) at most 1.0x its time.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need /usr/bin/time:time partclone.ext4:partclone zstd:zstd mkntfs:ntfs-3g mke2fs:e2fsprogs
need_asr
RUNS=${RUNS:-3}

# Builds WORK/pc-FS.raw once; the mounts live in a namespace of their own (see the tests).
make_disk() {
	local fs=$1 disk=$WORK/pc-$1.raw mnt=$WORK/pc-mnt
	[ -s "$disk" ] && return
	rm -f "$disk"
	truncate -s 4G "$disk"
	mkdir -p "$mnt"
	case $fs in
	ext4) mkfs.ext4 -q -F "$disk"; mount_cmd="mount -o loop" ;;
	ntfs) mkntfs -Q -F -q "$disk"; mount_cmd="ntfs-3g" ;;
	esac
	unshare --mount --propagation private bash -euo pipefail -c '
		'"$mount_cmd"' "$1" "$2"
		cp -r /usr/share "$2/share"
		head -c 1G /dev/urandom > "$2/deleted.bin"; sync
		rm "$2/deleted.bin"; sync
		cp -r /usr/include "$2/include"
		umount "$2"' sh "$disk" "$mnt"
}

for fs in ext4 ntfs; do
	echo "building the $fs disk" >&2
	make_disk "$fs"
done

for fs in ext4 ntfs; do
	disk=$WORK/pc-$fs.raw
	rm -f "$WORK"/pc-"$fs"-*.log
	for ((i = 1; i <= RUNS; i++)); do
		bench_run "$WORK/pc-$fs-udzo.log" "$WORK/pc-$fs.dmg" /dev/null "$ASR" create --source "$disk" --output "$WORK/pc-$fs.dmg"
		bench_run "$WORK/pc-$fs-pc.log" "$WORK/pc-$fs.pc.zst" /dev/null \
			sh -c 'partclone.'"$fs"' -q -c -s "$1" -o - 2>/dev/null | zstd -3 -T0 -q > "$2"' sh "$disk" "$WORK/pc-$fs.pc.zst"
	done
	bench_run "$WORK/pc-$fs-ulmo.log" "$WORK/pc-$fs-ulmo.dmg" /dev/null "$ASR" create --source "$disk" --format ULMO --output "$WORK/pc-$fs-ulmo.dmg"
	used=$("$ASR" info --source "$WORK/pc-$fs.dmg" | grep -m1 "in use" | sed 's/^[[:space:]]*//' || true)
	udzo=$(size_of "$WORK/pc-$fs.dmg") ulmo=$(size_of "$WORK/pc-$fs-ulmo.dmg") pc=$(size_of "$WORK/pc-$fs.pc.zst")
	read -r asr_best asr_med _ _ < <(summarize "$WORK/pc-$fs-udzo.log")
	read -r pc_best pc_med _ _ < <(summarize "$WORK/pc-$fs-pc.log")
	echo "## $fs, 4 GiB, 1 GiB deleted file in free space ($(mib "$(du -B1 "$disk" | cut -f1)") MiB of the file allocated), best and median of $RUNS runs"
	header
	row "asr create (UDZO)" "$(size_of "$disk")" "$WORK/pc-$fs-udzo.log" "$WORK/pc-$fs.dmg"
	row "asr create --format ULMO" "$(size_of "$disk")" "$WORK/pc-$fs-ulmo.log" "$WORK/pc-$fs-ulmo.dmg"
	row "partclone.$fs | zstd -3 -T0" "$(size_of "$disk")" "$WORK/pc-$fs-pc.log" "$WORK/pc-$fs.pc.zst"
	echo
	echo "asr info: ${used:-no usage line}"
	echo "sizes: UDZO $udzo, ULMO $ulmo, partclone+zstd $pc bytes; UDZO/partclone $(ratio "$udzo" "$pc"), ULMO/partclone $(ratio "$ulmo" "$pc");" \
		"create time asr/partclone $(ratio "$asr_best" "$pc_best") best, $(ratio "$asr_med" "$pc_med") median"
	verdict "$fs: UDZO at most 1.10x partclone | zstd -3 ($(ratio "$udzo" "$pc")x)" "$udzo <= 1.10 * $pc"
	verdict "$fs: ULMO at most 1.0x partclone | zstd -3 ($(ratio "$ulmo" "$pc")x)" "$ulmo <= $pc"
	verdict "$fs: asr create at most 1.0x the time of partclone | zstd -3 -T0 ($(ratio "$asr_best" "$pc_best")x)" "$asr_best <= $pc_best"
	echo
done
