#!/usr/bin/env bash
# Cost that follows the data: a sparse raw disk of SIZE (16 GiB, then 32 GiB) holding an ext4
# with 150 MB of random files. Each verb against `bmaptool create` plus reading the 150 MB once
# (what a tool that only looks at the data costs); plain imagescan (with Apple's linear
# digests) against `openssl dgst -sha256` of the disk. Goals: create, imagescan
# --no-apple-digests and restore+verify each at most 3x the bmaptool baseline; plain imagescan
# at most the openssl time; doubling the disk changes no verb's time by more than 10%.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need /usr/bin/time:time bmaptool:bmap-tools mke2fs:e2fsprogs openssl:openssl
need_asr
RUNS=${RUNS:-3}
SIZES=${SIZES:-"16 32"}

data=$WORK/sparse-data
if [ ! -d "$data" ]; then
	mkdir -p "$data"
	for i in 1 2 3; do head -c 50000000 /dev/urandom >"$data/file$i"; done
fi

# Median wall time of a log.
med() { summarize "$1" | awk '{ print $2 }'; }

declare -A took
for g in $SIZES; do
	disk=$WORK/sparse-$g.raw img=$WORK/sparse-$g.dmg scan=$WORK/sparse-$g-scan.dmg target=$WORK/sparse-$g-restored.raw
	if [ ! -s "$disk" ]; then
		truncate -s "${g}G" "$disk"
		mkfs.ext4 -q -F -d "$data" "$disk"
	fi
	rm -f "$WORK"/sparse-"$g"-*.log
	for ((i = 1; i <= RUNS; i++)); do
		bench_run "$WORK/sparse-$g-create.log" "$img" /dev/null "$ASR" create --source "$disk" --output "$img"
		cp "$img" "$scan"
		bench_run "$WORK/sparse-$g-scan.log" /dev/null "$scan" "$ASR" imagescan --source "$scan" --no-apple-digests
		bench_run "$WORK/sparse-$g-restore.log" "$target" "$scan" "$ASR" restore --source "$scan" --file "$target" --erase --noprompt
		bench_run "$WORK/sparse-$g-verify.log" /dev/null "$scan" "$ASR" verify --source "$scan"
		bench_run "$WORK/sparse-$g-bmap.log" "$WORK/sparse.bmap" /dev/null bmaptool create "$disk" -o "$WORK/sparse.bmap"
		bench_run "$WORK/sparse-$g-read.log" /dev/null /dev/null sh -c 'cat "$1"/* >/dev/null' sh "$data"
	done
	# The linear digests read or hash every byte: one run each.
	cp "$img" "$scan"
	bench_run "$WORK/sparse-$g-applescan.log" /dev/null "$scan" "$ASR" imagescan --source "$scan"
	bench_run "$WORK/sparse-$g-openssl.log" /dev/null /dev/null openssl dgst -sha256 "$disk"
	e2fsck -fn "$target" >/dev/null

	base=$(awk -v a="$(med "$WORK/sparse-$g-bmap.log")" -v b="$(med "$WORK/sparse-$g-read.log")" 'BEGIN { printf "%.3f", a + b }')
	echo "## ${g} GiB sparse disk, ext4 with 150 MB of data ($(mib "$(du -B1 "$disk" | cut -f1)") MiB allocated in the file), median of $RUNS runs"
	echo
	echo "| verb | median s | x baseline ($base s) |"
	echo "|---|---|---|"
	for v in create scan restore verify bmap read applescan openssl; do
		t=$(med "$WORK/sparse-$g-$v.log")
		took[$g-$v]=$t
		case $v in
		create) name="asr create (UDZO)" ;; scan) name="asr imagescan --no-apple-digests" ;;
		restore) name="asr restore (verifies)" ;; verify) name="asr verify" ;;
		bmap) name="bmaptool create" ;; read) name="cat of the 150 MB of data" ;;
		applescan) name="asr imagescan (Apple digests), 1 run" ;; openssl) name="openssl dgst -sha256 of the disk, 1 run" ;;
		esac
		echo "| $name | $t | $(ratio "$t" "$base") |"
	done
	echo
	for v in create scan restore; do
		verdict "${g} GiB: asr $v at most 3x bmaptool create + reading the data ($(ratio "${took[$g-$v]}" "$base")x)" \
			"${took[$g-$v]} <= 3 * $base"
	done
	verdict "${g} GiB: plain imagescan at most openssl dgst -sha256 ($(ratio "${took[$g-applescan]}" "${took[$g-openssl]}")x)" \
		"${took[$g-applescan]} <= ${took[$g-openssl]}"
	echo
done

set -- $SIZES
if [ $# -ge 2 ]; then
	echo "## Growth: $1 GiB to $2 GiB, same data (median time ratio)"
	echo
	for v in create scan restore verify; do
		r=$(ratio "${took[$2-$v]}" "${took[$1-$v]}")
		verdict "$v: ${took[$1-$v]} s -> ${took[$2-$v]} s (${r}x; goal at most 1.10x)" "$r <= 1.10"
	done
	echo "imagescan with Apple's linear digests (not a goal: they hash every byte): ${took[$1-applescan]} s -> ${took[$2-applescan]} s"
fi
