#!/usr/bin/env bash
# LZFSE (ULFO) chunk decoding against zlib (UDZO), in MB/s of decoded output:
#  1. in-process, a release build of DecodeBench decoding chunks over and over: the
#     fixtures' chunks (hdiutil images, mostly empty HFS+, so mostly runs of zeros) and
#     1 MiB chunks of the bench corpus compressed both ways (real files; needs the pip
#     `lzfse` module to make the LZFSE chunks);
#  2. end to end, `asr convert --format RAW` of each fixture N times (process start included).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

SECONDS_PER=${SECONDS_PER:-5}  # timed seconds per codec and chunk set
N=${N:-50}                     # asr convert runs per fixture
FIXTURES=$(dirname "$ROOT")/shared/fixtures/udif
need /usr/bin/time:time mke2fs:e2fsprogs
need_asr
"$BENCH/corpus.sh" >&2

# Corpus chunks: every 4th MiB of the corpus (256 chunks), all-zero ones skipped as UDIF would.
chunks=$WORK/lzfse-chunks
if ! [ "$chunks.zlib" -nt "$CORPUS" ]; then
	python3 -c 'import lzfse' 2>/dev/null || pip install -q lzfse >&2
	python3 - "$CORPUS" "$chunks" <<'PY'
import struct, sys, zlib, lzfse
corpus, out = sys.argv[1], sys.argv[2]
with open(corpus, "rb") as f, open(out + ".lzfse.partial", "wb") as a, open(out + ".zlib.partial", "wb") as b:
    index = 0
    while chunk := f.read(1 << 20):
        if index % 4 == 0 and chunk.count(0) != len(chunk):
            for dst, data in ((a, lzfse.compress(chunk)), (b, zlib.compress(chunk, 6))):
                dst.write(struct.pack("<II", len(chunk), len(data)) + data)
        index += 1
PY
	mv "$chunks.lzfse.partial" "$chunks.lzfse" && mv "$chunks.zlib.partial" "$chunks.zlib"
fi

(cd "$ROOT" && swift build -c release --product DecodeBench >&2)
settle
echo "## LZFSE decode: MB/s of decoded output, ${SECONDS_PER}s per codec and set, one thread"
"$ROOT/.build/release/DecodeBench" "$FIXTURES" "$SECONDS_PER" "$chunks" | sed 's/^/- /'

echo
echo "## asr convert --format RAW, each fixture $N times (process start included)"
out=$WORK/lzfse-convert.raw
declare -A rate
for codec in lzfse zlib; do
	dmg=$FIXTURES/hfsplus_$codec.dmg
	bytes=$(awk -v n="hfsplus_$codec.dmg" '$3 == n { print $2 }' "$FIXTURES/raw.sha256")
	warm "$dmg"
	settle
	start=$(date +%s.%N)
	for ((i = 0; i < N; i++)); do
		"$ASR" convert --source "$dmg" --format RAW --output "$out" --overwrite >/dev/null
	done
	wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
	rate[$codec]=$(mbps $((bytes * N)) "$wall")
	echo "- $codec: ${rate[$codec]} MB/s ($N runs in ${wall}s)"
done
rm -f "$out"
echo "- lzfse/zlib: $(ratio "${rate[lzfse]}" "${rate[zlib]}")"
