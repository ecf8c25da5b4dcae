#!/usr/bin/env bash
# Cost that follows the data: a sparse raw disk holding an ext4 with random files, as
# SIZE:DATA pairs (GiB:MB): 16 GiB with 150 MB, the disk doubled, then the data doubled. Each verb against `bmaptool create` plus reading the 150 MB once
# (what a tool that only looks at the data costs); plain imagescan (with Apple's linear
# digests) against `openssl dgst -sha256` of the disk. Goals: create, imagescan
# --no-apple-digests and restore+verify each at most 3x the bmaptool baseline; plain imagescan
# at most the openssl time; doubling the disk changes no verb's time by more than 10%.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need /usr/bin/time:time bmaptool:bmap-tools mke2fs:e2fsprogs openssl:openssl
need_asr
RUNS=${RUNS:-3}
CASES=${CASES:-"16:150 32:150 16:300"}

# WORK/sparse-data-MB: MB of random files, in 50 MB files.
make_data() {
	local dir=$WORK/sparse-data-$1 i
	[ -d "$dir" ] && return
	mkdir -p "$dir"
	for ((i = 1; i <= $1 / 50; i++)); do head -c 50000000 /dev/urandom >"$dir/file$i"; done
}

# Median wall time of a log.
med() { summarize "$1" | awk '{ print $2 }'; }

declare -A took
for c in $CASES; do
	size=${c%%:*} mb=${c#*:} g=${c/:/-}
	data=$WORK/sparse-data-$mb
	make_data "$mb"
	disk=$WORK/sparse-$g.raw img=$WORK/sparse-$g.dmg scan=$WORK/sparse-$g-scan.dmg target=$WORK/sparse-$g-restored.raw
	if [ ! -s "$disk" ]; then
		truncate -s "${size}G" "$disk"
		mkfs.ext4 -q -F -d "$data" "$disk"
	fi
	rm -f "$WORK"/sparse-"$g"-*.log
	for ((i = 1; i <= RUNS; i++)); do
		bench_run "$WORK/sparse-$g-create.log" "$img" /dev/null "$ASR" create --source "$disk" --output "$img"
		cp "$img" "$scan"
		bench_run "$WORK/sparse-$g-scan.log" "$WORK/none" "$scan" "$ASR" imagescan --source "$scan" --no-apple-digests
		bench_run "$WORK/sparse-$g-restore.log" "$target" "$scan" "$ASR" restore --source "$scan" --file "$target" --erase --noprompt
		bench_run "$WORK/sparse-$g-verify.log" "$WORK/none" "$scan" "$ASR" verify --source "$scan"
		bench_run "$WORK/sparse-$g-bmap.log" "$WORK/sparse.bmap" /dev/null bmaptool create "$disk" -o "$WORK/sparse.bmap"
		bench_run "$WORK/sparse-$g-read.log" "$WORK/none" /dev/null sh -c 'cat "$1"/* >/dev/null' sh "$data"
	done
	# The linear digests read or hash every byte: one run each.
	cp "$img" "$scan"
	bench_run "$WORK/sparse-$g-applescan.log" "$WORK/none" "$scan" "$ASR" imagescan --source "$scan"
	bench_run "$WORK/sparse-$g-openssl.log" "$WORK/none" /dev/null openssl dgst -sha256 "$disk"
	e2fsck -fn "$target" >/dev/null

	base=$(awk -v a="$(med "$WORK/sparse-$g-bmap.log")" -v b="$(med "$WORK/sparse-$g-read.log")" 'BEGIN { printf "%.3f", a + b }')
	echo "## ${size} GiB sparse disk, ext4 with $mb MB of data ($(mib "$(du -B1 "$disk" | cut -f1)") MiB allocated in the file), median of $RUNS runs"
	echo
	echo "| verb | median s | x baseline ($base s) |"
	echo "|---|---|---|"
	for v in create scan restore verify bmap read applescan openssl; do
		t=$(med "$WORK/sparse-$g-$v.log")
		took[$g-$v]=$t
		case $v in
		create) name="asr create (UDZO)" ;; scan) name="asr imagescan --no-apple-digests" ;;
		restore) name="asr restore (verifies)" ;; verify) name="asr verify" ;;
		bmap) name="bmaptool create" ;; read) name="cat of the $mb MB of data" ;;
		applescan) name="asr imagescan (Apple digests), 1 run" ;; openssl) name="openssl dgst -sha256 of the disk, 1 run" ;;
		esac
		echo "| $name | $t | $(ratio "$t" "$base") |"
	done
	echo
	for v in create scan restore; do
		verdict "$c: asr $v at most 3x bmaptool create + reading the data ($(ratio "${took[$g-$v]}" "$base")x)" \
			"${took[$g-$v]} <= 3 * $base"
	done
	verdict "$c: plain imagescan at most openssl dgst -sha256 ($(ratio "${took[$g-applescan]}" "${took[$g-openssl]}")x)" \
		"${took[$g-applescan]} <= ${took[$g-openssl]}"
	echo
done

# Growth from the first case to the second (disk doubled) and the third (data doubled).
set -- $CASES
growth() {
	local from=${1/:/-} to=${2/:/-} what=$3 v r
	echo "## Growth, $what: $1 to $2 (GiB:MB), median time ratio"
	echo
	for v in create scan restore verify; do
		r=$(ratio "${took[$to-$v]}" "${took[$from-$v]}")
		if [ "$what" = "disk doubled" ]; then
			verdict "$v: ${took[$from-$v]} s -> ${took[$to-$v]} s (${r}x; goal at most 1.10x)" "$r <= 1.10"
		else
			echo "$v: ${took[$from-$v]} s -> ${took[$to-$v]} s (${r}x)"
		fi
	done
	echo "imagescan with Apple's linear digests (they hash every byte, so no goal): ${took[$from-applescan]} s -> ${took[$to-applescan]} s"
	echo
}
[ $# -ge 2 ] && growth "$1" "$2" "disk doubled"
[ $# -ge 3 ] && growth "$1" "$3" "data doubled"
