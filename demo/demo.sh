#!/usr/bin/env bash
# The built-in demo: make a sample folder, image it, scan and verify the image, restore it,
# convert it back to a raw disk, and check that the files inside are the ones we started from.
set -euo pipefail
ASR=${ASR:-.build/debug/asr}
ASR=$(realpath "$ASR")
work=$(mktemp -d /tmp/asr-demo.XXXXXX)
mnt=""
cleanup() {
	[ -n "$mnt" ] && umount "$mnt" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "A sample folder to deploy"
src=$work/sample
mkdir -p "$src/etc/app" "$src/var/log" "$src/home/admin/Documents"
printf 'welcome to the lab image\n' > "$src/etc/motd"
printf 'server=10.0.0.1\n' > "$src/etc/app/config.ini"
head -c 8M /dev/urandom > "$src/home/admin/Documents/data.bin"
seq 1 200000 > "$src/var/log/numbers.log"
ln -s ../etc/motd "$src/home/admin/motd-link"
find "$src" | sed "s|$work/||" | sort

step "asr create --srcfolder (ext4 inside a UDZO image)"
"$ASR" create --srcfolder "$src" --volname DEMO --output "$work/demo.dmg"
ls -l "$work/demo.dmg"

step "asr imagescan: checksums per chunk and for the disk"
"$ASR" imagescan --source "$work/demo.dmg"

step "asr info"
"$ASR" info --source "$work/demo.dmg"

step "asr verify"
"$ASR" verify --source "$work/demo.dmg"

step "asr restore onto a disk file (Apple's single-dash spelling works too)"
"$ASR" -source "$work/demo.dmg" -target "$work/restored.raw" -erase -noprompt

step "asr convert back to a raw disk"
"$ASR" convert --source "$work/demo.dmg" --format RAW --output "$work/demo.raw"

step "Compare: loop-mount the raw disk read-only and diff it with the folder"
if [ "$(id -u)" = 0 ]; then
	mnt=$work/mnt
	mkdir -p "$mnt"
	mount -o ro,loop "$work/demo.raw" "$mnt"
	diff -r --no-dereference "$src" "$mnt" --exclude=lost+found && echo "identical: every file matches"
	umount "$mnt"; mnt=""
else
	echo "(not root: skipping the loop mount; comparing the image with 7-Zip instead)"
fi

step "Independent readers: 7-Zip and dmg2img decode the same disk"
7zz x -tdmg -o"$work/7z" "$work/demo.dmg" >/dev/null
cat "$work"/7z/* | sha256sum | sed 's/-$/7zz output/'
dmg2img -s -i "$work/demo.dmg" -o "$work/dmg2img.raw" >/dev/null
sha256sum "$work/dmg2img.raw" "$work/demo.raw" "$work/restored.raw" | sed "s|$work/||"
echo
echo "demo finished"
