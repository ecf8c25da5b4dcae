#!/bin/bash
# Image density: asr's UDZO, UDBZ and ULMO (1, 16 and 64 MiB chunks) against gzip -6 and
# zstd -19 -T0 of the same raw disk. Prints bytes, seconds and each size over zstd -19's.
# usage: bench/density.sh [RAW]   (default: the bench corpus; ASR=path picks the binary)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need zstd:zstd gzip:gzip
need_asr
RAW=${1:-$CORPUS}
OUT=$WORK/density
mkdir -p "$OUT"
warm "$RAW"

# name, then the command; it writes the compressed result to $OUT/$name.
declare -A size seconds
run() {
	local name=$1; shift
	local start end
	start=$(date +%s.%N)
	"$@"
	end=$(date +%s.%N)
	size[$name]=$(stat -c %s "$OUT/$name")
	seconds[$name]=$(echo "$end - $start" | bc)
	printf '%-12s %12d bytes %8.1f s\n' "$name" "${size[$name]}" "${seconds[$name]}"
}
image() { "$ASR" create --source "$RAW" --output "$OUT/$1" --format "$2" --chunk-size "$3" --overwrite >/dev/null; }

run zstd-19 sh -c "zstd -19 -T0 -q -c '$RAW' > '$OUT/zstd-19'"
run gzip-6 sh -c "gzip -6 -c '$RAW' > '$OUT/gzip-6'"
run UDZO-1M image UDZO-1M UDZO 1M
run UDBZ-1M image UDBZ-1M UDBZ 1M
run ULMO-1M image ULMO-1M ULMO 1M
run ULMO-16M image ULMO-16M ULMO 16M
run ULMO-64M image ULMO-64M ULMO 64M
echo
for name in gzip-6 UDZO-1M UDBZ-1M ULMO-1M ULMO-16M ULMO-64M; do
	printf '%-12s %.3fx zstd -19\n' "$name" "$(echo "${size[$name]} / ${size[zstd-19]}" | bc -l)"
done
rm -rf "$OUT"
