#!/usr/bin/env bash
# The built-in demo: make a sample folder, image it, scan and verify the image, restore it,
# multicast it to two clients, convert it back to a raw disk, and check that the files inside
# are the ones we started from, and mount the image to look inside.
set -euo pipefail
ASR=${ASR:-.build/debug/asr}
ASR=$(realpath "$ASR")
work=$(mktemp -d /tmp/asr-demo.XXXXXX)
mnt=""
view=""
netns=""
# kill is bash's builtin here: /bin/kill (procps) is not on a minimal system.
stop_netns() { for pid in $(ip netns pids "$1" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done; }
cleanup() {
	[ -n "$mnt" ] && umount "$mnt" 2>/dev/null || true
	[ -n "$view" ] && fusermount3 -u "$view" 2>/dev/null || true
	if [ -n "$netns" ]; then
		stop_netns "$netns"
		sleep 0.5
		ip netns del "$netns" 2>/dev/null || true
	fi
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

step "Multicast: asr server and two clients over loopback (in a network namespace of our own)"
if [ "$(id -u)" = 0 ]; then
	netns=asr-demo-$$
	ip netns add "$netns"
	ip -n "$netns" link set lo up
	ip -n "$netns" link set lo multicast on
	ip -n "$netns" route add 224.0.0.0/4 dev lo
	cat >"$work/multicast.plist" <<-PLIST
		<?xml version="1.0" encoding="UTF-8"?>
		<plist version="1.0"><dict>
		<key>Data Rate</key><integer>12000000</integer>
		<key>Multicast Address</key><string>239.255.70.1</string>
		</dict></plist>
	PLIST
	ip netns exec "$netns" "$ASR" server --source "$work/demo.dmg" --config "$work/multicast.plist" 2>"$work/server.log" &
	sleep 0.5
	ip netns exec "$netns" "$ASR" restore --source asr://127.0.0.1 --target "$work/client1.raw" --erase --noprompt >"$work/client1.log" &
	ip netns exec "$netns" "$ASR" restore --source asr://127.0.0.1 --target "$work/client2.raw" --erase --noprompt
	wait %2
	echo "-- client 1:"; cat "$work/client1.log"
	stop_netns "$netns"
	wait %1 || true
	echo "-- server log:"; cat "$work/server.log"
	ip netns del "$netns"; netns=""
	sha256sum "$work/restored.raw" "$work/client1.raw" "$work/client2.raw" | sed "s|$work/||"
else
	echo "(not root: skipping multicast, which needs a network namespace)"
fi

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

step "asr mount: the image as files (raw disk, partitions, block map, checksums, info, volumes)"
if [ "$(id -u)" = 0 ] && [ -e /dev/fuse ]; then
	view=$work/view
	mkdir -p "$view"
	"$ASR" mount "$work/demo.dmg" "$view"
	ls -l "$view" "$view/partitions" | sed "s|$work/||"
	echo "-- sha256sum -c checksums.sha256, inside the mount:"
	(cd "$view" && sha256sum -c checksums.sha256)
	echo "-- blockmap.bmap (bmaptool 2.0):"
	grep -E 'ImageSize|MappedBlocksCount|<Range' "$view/blockmap.bmap" | head -5
	echo "-- info.plist says:"
	grep -A1 -E '<key>(format|scanned|checksumsVerified)</key>' "$view/info.plist" | grep -v '^--'
	echo "-- volumes/: the files inside, read by asr itself (no kernel driver, no loop device):"
	ls "$view/volumes"
	diff -r --no-dereference "$src" "$view"/volumes/*/ --exclude=lost+found && echo "identical: every file matches"
	"$ASR" unmount "$view"; view=""
	echo "-- asr-mount-fs: the ext4 filesystem inside, loop-mounted read-only through the mount"
	mnt=$work/fs
	mkdir -p "$mnt"
	ASR=$ASR "$(dirname "$0")/../mount-helpers/asr-mount-fs" "$work/demo.dmg" "$mnt"
	diff -r --no-dereference "$src" "$mnt" --exclude=lost+found && echo "identical: every file matches"
	umount "$mnt"; mnt=""
else
	echo "(not root or no /dev/fuse: skipping asr mount)"
fi

step "Independent readers: 7-Zip and dmg2img decode the same disk"
7zz x -tdmg -o"$work/7z" "$work/demo.dmg" >/dev/null
cat "$work"/7z/* | sha256sum | sed 's/-$/7zz output/'
dmg2img -s -i "$work/demo.dmg" -o "$work/dmg2img.raw" >/dev/null
sha256sum "$work/dmg2img.raw" "$work/demo.raw" "$work/restored.raw" | sed "s|$work/||"
echo
echo "demo finished"
