#!/usr/bin/env bash
# asr mount (read-only FUSE view of a UDZO image) against the tools that decode the same image:
#  1. sequential `dd` of MNT/disk.img with the page cache dropped before each run, against
#     `asr convert --format RAW` and `dmg2img -o /dev/null`, alternating; the bytes are checked
#     once against the corpus. Targets: dd >= 0.8x asr convert's speed, >= 2x dmg2img's.
#  2. random 4 KiB reads with fio (4 threads, psync, 10 s) on MNT/disk.img and on corpus.raw.
#  3. peak RSS (VmHWM) of the mount process after the whole disk was read. Target < 256 MiB.
#  4. time for `asr mount` to return (it checks every CRC-32 first), and with -o noverify.
# Every mount made here is unmounted on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time dmg2img:dmg2img fio:fio fusermount3:fuse3
need_asr
"$BENCH/corpus.sh" >&2

dmg=$WORK/corpus.dmg converted=$WORK/mount-convert.raw
MNT=$WORK/mnt
# Reuse create.sh's image only if it is newer than both the corpus and the binary (as convert.sh).
if ! [ "$dmg" -nt "$CORPUS" ] || ! [ "$dmg" -nt "$ASR" ]; then
	"$ASR" create --source "$CORPUS" --output "$dmg" --overwrite >&2
fi

mkdir -p "$MNT"
if mountpoint -q "$MNT"; then echo "mount: $MNT is already a mount point; unmount it first" >&2; exit 1; fi
daemon=
cleanup() {
	if [ -n "$daemon" ] || mountpoint -q "$MNT" 2>/dev/null; then
		unmount || fusermount3 -u -z "$MNT" || true
	fi
	rmdir "$MNT" 2>/dev/null || true
}
trap cleanup EXIT

# Writes dirty pages back, then drops the page cache (clean pages, dentries, inodes), so the
# next read of MNT/disk.img goes through FUSE instead of the kernel's copy of it.
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# The mount process's id: the daemon `asr mount` leaves behind (it runs as "asr mount
# --foreground ... IMAGE MNT").
mount_pid() {
	local pids
	pids=$(pgrep -f "asr mount.*$MNT\$") || { echo "mount: no process serves $MNT" >&2; return 1; }
	[ "$(wc -w <<<"$pids")" -eq 1 ] || { echo "mount: several processes serve $MNT: $pids" >&2; return 1; }
	echo "$pids"
}
vm_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# CPU seconds (user and system) a process has used so far; fields 14 and 15 of /proc/PID/stat.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print $12 / hz, $13 / hz }' "/proc/$1/stat"; }

# Unmounts MNT and waits for the mount process to end. A mount namespace made while MNT is
# mounted (a test that runs daemons under unshare -m, say) holds a copy of the mount and so keeps
# the FUSE connection open: the process then never sees the end, and asr unmount waits for it
# indefinitely (SIGTERM does not stop that wait: hence timeout's -k). After 10 s the mount
# process is sent SIGTERM, by its id (only the one started here), which ends it.
unmount() {
	local w
	timeout -k 1 10 "$ASR" unmount "$MNT" || true
	if mountpoint -q "$MNT"; then echo "mount: cannot unmount $MNT" >&2; return 1; fi
	[ -n "$daemon" ] || return 0
	for ((w = 0; w < 50; w++)); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$daemon" 2>/dev/null; then
		echo "mount: process $daemon still serving after the unmount (its mount lives on in another mount namespace); sending SIGTERM" >&2
		kill -TERM "$daemon"
		for ((w = 0; w < 50; w++)); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
	fi
	daemon=
}

# One timed run of a command whose output is discarded (no output file to remove): like
# bench_run otherwise, plus a dropped page cache. Appends "wall rss user sys" to LOG.
# usage: cold_run LOG INPUT command...
cold_run() {
	local log=$1 in=$2
	shift 2
	drop_caches
	settle
	warm "$in"
	/usr/bin/time -a -o "$log" -f '%e %M %U %S' "$@" >&2
}

# One dd of the whole mounted disk. The log line is dd's wall time, the mount process's VmHWM
# so far, and the user and system CPU of dd and the mount process together (the decoding
# happens in the mount process, the copies in both).
dd_run() {
	local log=$1 one=$WORK/mount-dd.one u0 s0 u1 s1 wall rss u s
	rm -f "$one"
	drop_caches
	settle
	warm "$dmg"
	read -r u0 s0 < <(proc_cpu "$daemon")
	/usr/bin/time -o "$one" -f '%e %M %U %S' dd if="$MNT/disk.img" of=/dev/null bs=1M status=none
	read -r u1 s1 < <(proc_cpu "$daemon")
	read -r wall rss u s <"$one"
	awk -v w="$wall" -v r="$(vm_hwm_kib "$daemon")" -v u="$u" -v s="$s" -v u0="$u0" -v u1="$u1" -v s0="$s0" -v s1="$s1" \
		'BEGIN { printf "%s %s %.2f %.2f\n", w, r, u + u1 - u0, s + s1 - s0 }' >>"$log"
}

# row from lib.sh for a tool with no output file.
row_sink() {
	local best med cpu rss
	read -r best med cpu rss < <(summarize "$3")
	printf '| %-26s | %6.2f | %6.2f | %5s | %6.2f | %7s | %7s |\n' "$1" "$best" "$med" "$(mbps "$2" "$best")" \
		"$cpu" "$(mib $((rss * 1024)))" -
}

rm -f "$WORK"/mount-*.log "$WORK"/mount-time-*.rss "$WORK"/mount-fio-*

# 4. Mount time. The image is warm as for the other tools; the mount process is gone before the next run.
for ((i = 1; i <= RUNS; i++)); do
	for mode in verify noverify; do
		opts=()
		[ $mode = noverify ] && opts=(-o noverify)
		sync
		settle
		warm "$dmg"
		/usr/bin/time -a -o "$WORK/mount-time-$mode.log" -f '%e %M %U %S' "$ASR" mount "${opts[@]}" "$dmg" "$MNT" >&2
		daemon=$(mount_pid)
		vm_hwm_kib "$daemon" >>"$WORK/mount-time-$mode.rss"
		unmount
	done
done

# 1. Sequential reads. One mount (with the CRC-32 check, the default) serves every dd run.
"$ASR" mount "$dmg" "$MNT"
daemon=$(mount_pid)
hwm_mounted=$(vm_hwm_kib "$daemon")
for ((i = 1; i <= RUNS; i++)); do
	dd_run "$WORK/mount-dd.log"
	rm -f "$converted"
	drop_caches
	bench_run "$WORK/mount-convert.log" "$converted" "$dmg" "$ASR" convert --source "$dmg" --format RAW --output "$converted"
	cold_run "$WORK/mount-dmg2img.log" "$dmg" dmg2img -s -i "$dmg" -o /dev/null
done
# 3. Peak RSS of the mount process over the mount and all the dd runs.
hwm_read=$(vm_hwm_kib "$daemon")

# The bytes read through the mount (from FUSE, cache dropped first) and convert's are the corpus.
want=$(sha256sum <"$CORPUS" | cut -d' ' -f1)
drop_caches
got=$(sha256sum <"$MNT/disk.img" | cut -d' ' -f1)
conv=$(sha256sum <"$converted" | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "FAIL  $MNT/disk.img ($got) differs from the corpus ($want)" >&2; exit 1; }
[ "$conv" = "$want" ] || { echo "FAIL  $converted differs from the corpus" >&2; exit 1; }

# 2. Random 4 KiB reads, 4 threads, 10 s, alternating the mount and the raw corpus; nothing warmed.
# A fixed seed, so every run reads the same offsets; no random map (blocks may repeat).
fio_run() {
	local name=$1 file=$2 run=$3 line
	drop_caches
	settle
	line=$(cd "$WORK" && fio --name=rand --filename="$file" --rw=randread --bs=4k --numjobs=4 --time_based --runtime=10 \
		--ioengine=psync --group_reporting --readonly --norandommap --randseed=1700000000 --minimal \
		--write_iops_log="mount-fio-$name-$run" --log_avg_msec=1000)
	# Terse format: field 8 is the read IOPS over the whole run.
	cut -d';' -f8 <<<"$line" >>"$WORK/mount-fio-$name.iops"
	# The first second's IOPS, summed over the 4 jobs: the least cached part of the run.
	awk -F', *' 'FNR == 1 { s += $2 } END { print s }' "$WORK/mount-fio-$name-${run}_iops".*.log >>"$WORK/mount-fio-$name.first"
}
for ((i = 1; i <= RUNS; i++)); do
	fio_run mount "$MNT/disk.img" "$i"
	fio_run raw "$CORPUS" "$i"
done
unmount

bytes=$(size_of "$CORPUS")
read -r dd_best dd_med _ _ < <(summarize "$WORK/mount-dd.log")
read -r cv_best cv_med _ _ < <(summarize "$WORK/mount-convert.log")
read -r d2i_best d2i_med _ _ < <(summarize "$WORK/mount-dmg2img.log")
# Interference from other work only ever adds time, so the verdicts use the best runs.
vs_convert=$(ratio "$cv_best" "$dd_best") vs_convert_med=$(ratio "$cv_med" "$dd_med")
vs_d2i=$(ratio "$d2i_best" "$dd_best") vs_d2i_med=$(ratio "$d2i_med" "$dd_med")

echo "## mount: $(mib "$(size_of "$dmg")") MiB UDZO image shown as a $(mib "$bytes") MiB disk.img, best and median of $RUNS runs"
echo
echo "### sequential read of the whole disk (page cache dropped, image warmed, before every run)"
header
row_sink "dd of mounted disk.img" "$bytes" "$WORK/mount-dd.log"
row "asr convert --format RAW" "$bytes" "$WORK/mount-convert.log" "$converted"
row_sink "dmg2img -o /dev/null" "$bytes" "$WORK/mount-dmg2img.log"
echo
echo "dd row: CPU is dd plus the mount process; RSS is the mount process's VmHWM (since mounting)"
echo "MNT/disk.img read through FUSE and asr convert's output have the corpus's sha256 ($want)"
echo "speed ratio (asr convert wall / dd wall): ${vs_convert}x best, ${vs_convert_med}x median"
echo "speed ratio (dmg2img wall / dd wall): ${vs_d2i}x best, ${vs_d2i_med}x median"
verdict "dd of the mount at least 0.8x asr convert's speed (${vs_convert}x)" "$cv_best / $dd_best >= 0.8"
verdict "dd of the mount at least 2x dmg2img's speed (${vs_d2i}x)" "$d2i_best / $dd_best >= 2"
echo
echo "### peak RSS of the mount process"
echo "VmHWM after mounting (all chunks CRC-checked): $(mib $((hwm_mounted * 1024))) MiB; after $RUNS whole-disk dd runs: $(mib $((hwm_read * 1024))) MiB"
verdict "mount process peak RSS below 256 MiB ($(mib $((hwm_read * 1024))) MiB)" "$hwm_read < 262144"
echo
echo "### random 4 KiB reads: fio randread, 4 jobs, psync, 10 s, page cache dropped before every run"
echo "| file | best IOPS | median IOPS | first-second IOPS (median) |"
echo "|---|---:|---:|---:|"
for name in mount raw; do
	best=$(sort -g "$WORK/mount-fio-$name.iops" | tail -1)
	med=$(median <"$WORK/mount-fio-$name.iops")
	first=$(median <"$WORK/mount-fio-$name.first")
	label=$([ $name = mount ] && echo "mounted disk.img" || echo "corpus.raw (ext4 file)")
	printf '| %s | %s | %s | %s |\n' "$label" "$best" "$med" "$first"
	eval "${name}_best=$best ${name}_med=$med ${name}_first=$first"
done
echo
echo "IOPS ratio (raw file / mount): $(ratio "$raw_best" "$mount_best")x best, $(ratio "$raw_med" "$mount_med")x median," \
	"$(ratio "$raw_first" "$mount_first")x in the first second"
echo "(both files fill the page cache as a run goes on, so later seconds are partly cache hits)"
echo
echo "### mount time: \`asr mount\` until it returns (mounted and usable), image warm"
echo "| mode | best s | median s | mount process VmHWM MiB (max) |"
echo "|---|---:|---:|---:|"
for mode in verify noverify; do
	read -r best med _ _ < <(summarize "$WORK/mount-time-$mode.log")
	rss=$(sort -g "$WORK/mount-time-$mode.rss" | tail -1)
	printf '| %s | %.2f | %.2f | %s |\n' "$([ $mode = verify ] && echo "default (CRC-32 check)" || echo "-o noverify")" "$best" "$med" "$(mib $((rss * 1024)))"
done
