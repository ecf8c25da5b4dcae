#!/usr/bin/env bash
# Runs every benchmark and keeps the report in bench/work/results.md (stdout gets it too).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need /usr/bin/time:time gzip:gzip dmg2img:dmg2img mke2fs:e2fsprogs nginx:nginx-light udp-sender:udpcast nft:nftables
# Rebuild (incremental) so the report is for the current sources; if they do not build right
# now, say so and measure the binary already there.
stale=""
(cd "$ROOT" && swift build -c release --scratch-path .build-release --product asr >&2) || stale=" (STALE: rebuild failed)"
need_asr
"$BENCH/corpus.sh" >&2
{
	echo "# asr benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
		"$(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r)"
	dirty=$(cd "$ROOT" && git diff --quiet HEAD -- Sources Package.swift || echo " + uncommitted changes")
	echo "- asr: $ASR, release build of git $(cd "$ROOT" && git rev-parse --short HEAD)$dirty$stale"
	echo "- tools: $(gzip --version | head -1), dmg2img $(dmg2img 2>&1 | grep -o 'v[0-9.]*' | head -1)," \
		"libdeflate $(dpkg-query -W -f '${Version}' libdeflate0 2>/dev/null || echo '?')"
	echo
	"$BENCH/create.sh"
	echo
	"$BENCH/convert.sh"
	echo
	"$BENCH/scan.sh"
	echo
	"$BENCH/restore.sh"
	echo
	"$BENCH/multicast.sh"
} | tee "$WORK/results.md"
