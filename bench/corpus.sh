#!/usr/bin/env bash
# Builds bench/work/corpus.raw: a 1 GiB ext4 filesystem holding ~900 MiB of real system files
# (binaries, shared libraries, docs, locales, man pages), so compression sees the mix a real
# disk image has rather than synthetic data. Kept if it already exists.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ -e "$CORPUS" ]; then
	echo "corpus: $CORPUS exists ($(mib "$(size_of "$CORPUS")") MiB), kept"
	exit 0
fi
need mke2fs:e2fsprogs

# tree:budget_MiB. Files are taken in sorted (C locale) order until each tree's budget is met,
# so the same machine always picks the same files.
TREES=(/usr/bin:200 /usr/lib/x86_64-linux-gnu:350 /usr/share:350)
# Fixed identifiers and clock: with these, two builds on one machine are byte-identical.
UUID=6a1e0f3c-7b2d-4c59-9e48-0d2b1a7f5c31
HASH_SEED=2f0c5b8e-9d41-4a67-b3e2-5c8a9f1d6e07
STAMP=1700000000

staging=$WORK/staging
rm -rf "$staging" "$CORPUS.partial"
mkdir -p "$staging"
list=$WORK/corpus.files
: >"$list"
for entry in "${TREES[@]}"; do
	tree=${entry%%:*} budget=$((${entry#*:} * 1048576))
	# Regular non-empty files only: symlinks and devices add no data.
	find "$tree" -type f -size +0 -printf '%s %p\n' | LC_ALL=C sort -k2 |
		awk -v max="$budget" '{ sum += $1; if (sum <= max) print substr($0, index($0, " ") + 2) }' >>"$list"
done
# Paths in the list are relative to / (leading slash dropped above), so extraction stays inside staging.
tar -C / -cf - --no-recursion -T "$list" | tar -xf - -C "$staging"
# Same timestamps everywhere, so the inode tables do not depend on when packages were installed.
find "$staging" -exec touch -h -d "@$STAMP" {} +

truncate -s 1G "$CORPUS.partial"
# -N: many small files (docs, locales) would exhaust the default one inode per 16 KiB.
E2FSPROGS_FAKE_TIME=$STAMP mke2fs -q -F -t ext4 -N 131072 -U "$UUID" \
	-E root_owner=0:0,hash_seed="$HASH_SEED" -d "$staging" "$CORPUS.partial"
# mke2fs copies each file's ctime, which touch cannot set; rewrite it on every inode in use.
inodes=$(dumpe2fs -h "$CORPUS.partial" 2>/dev/null | awk -F: '/^Inode count/ { print $2 + 0 }')
seq 1 "$inodes" | sed 's/.*/testi <&>/' | debugfs -f - "$CORPUS.partial" 2>/dev/null |
	awk -v t="$STAMP" '/marked in use/ { print "sif <" $2 "> ctime @" t }' |
	E2FSPROGS_FAKE_TIME=$STAMP debugfs -w -f - "$CORPUS.partial" >/dev/null 2>&1
e2fsck -fn "$CORPUS.partial" >/dev/null 2>&1 || { echo "corpus: e2fsck failed" >&2; exit 1; }
mv "$CORPUS.partial" "$CORPUS"
used=$(find "$staging" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
rm -rf "$staging"
echo "corpus: $CORPUS, $(wc -l <"$list") files, $(mib "$used") MiB of data in a $(mib "$(size_of "$CORPUS")") MiB ext4 image"
