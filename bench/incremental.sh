#!/usr/bin/env bash
# Re-imaging a disk one update behind: v1 is the bench corpus (1 GiB ext4 of real files), v2 the
# same disk after every 20th file was rewritten as a package update does it (a new file renamed
# over the old, one line longer) and 20 MiB of new files were added. A target holding v1 is
# brought to v2 from nginx (limit_rate 12m, per connection) by:
#   asr restore --incremental   (v2.dmg, scanned UDZO with --all-blocks, CHUNK-sized chunks)
#   asr restore                 (the same image, a full restore onto an empty file)
#   zsync -i v1                 (zsyncmake on v2.raw, blocks served uncompressed)
#   casync extract --seed v1    (casync make of v2.raw; its chunk store served by nginx)
# Every output must be v2.raw byte for byte. Reports wall time and bytes nginx sent, and, for
# asr's hashing pass, `asr compare` of v1 against `sha256sum` of it (both warm).
# LINK=96mbit: all tools share one shaped link instead (see below). CHUNK: asr's --chunk-size
# (default 1M, as hdiutil; smaller chunks hold less of a scattered update each).
# Goals: incremental at most 0.15x the full restore's time; at most 1.5x zsync's bytes and
# 0.5x its time; the hashing pass at least sha256sum's speed (aim: cores times that).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RUNS=${RUNS:-3}
CHUNK=${CHUNK:-1M}
need mke2fs:e2fsprogs /usr/bin/time:time nginx:nginx-light zsync:zsync zsyncmake:zsync casync:casync
need_asr
"$BENCH/corpus.sh" >&2

v1=$CORPUS v2=$WORK/incr-v2.raw www=$WORK/incr-www
if ! [ "$v2" -nt "$v1" ]; then
	rm -rf "$www"
	cp --sparse=always "$v1" "$v2.tmp"
	mnt=$(mktemp -d)
	unshare --mount --propagation private bash -euo pipefail -c '
		mount -o loop "$1" "$2"
		cd "$2"
		find . -type f -not -path "./lost+found/*" -print0 | sort -z | awk -v RS="\0" -v ORS="\0" "NR % 20 == 0" |
			while IFS= read -r -d "" f; do { cat "$f"; echo "updated"; } >"$f.new" && mv "$f.new" "$f"; done
		mkdir -p new
		python3 -c "import random, sys; r = random.Random(1); sys.stdout.buffer.write(r.randbytes(20 << 20))" >new/blob.bin
		cd /
		umount "$2"' _ "$v2.tmp" "$mnt"
	rmdir "$mnt"
	mv "$v2.tmp" "$v2"
fi
if ! [ -d "$www" ] || ! [ "$www/v2.raw.zsync" -nt "$v2" ]; then
	rm -rf "$www"
	mkdir -p "$www"
	cp --sparse=always "$v2" "$www/v2.raw"
	(cd "$www" && zsyncmake -o v2.raw.zsync -u v2.raw v2.raw >&2)
	casync make --store="$www/v2.castr" "$www/v2.caibx" "$v2" >&2
fi
dmg=v2-$CHUNK.dmg
if ! [ "$www/$dmg" -nt "$v2" ] || ! [ "$www/$dmg" -nt "$ASR" ]; then
	"$ASR" create --source "$v2" --output "$www/$dmg" --all-blocks --chunk-size "$CHUNK" --overwrite >&2
	"$ASR" imagescan --source "$www/$dmg" >/dev/null
fi

# nginx serving $www, stopped (and the namespace removed) on exit. By default every response
# is limited to 12 MiB/s (limit_rate). That is per request, and nginx sends a response's first
# second of data at once: a response under 12 MiB (every request asr, zsync and casync make
# here) is not slowed at all. LINK=96mbit instead serves from a network namespace behind a
# veth whose egress is shaped to that rate (tc tbf): one link that all of a tool's requests
# share, as on a real network.
ngx=$(mktemp -d) ns="" limit="limit_rate 12m;" host=127.0.0.1
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
	kill "${ngx_pid:-}" 2>/dev/null && wait "$ngx_pid" 2>/dev/null
	[ -n "$ns" ] && ip netns del "$ns"
	rm -rf "$ngx"
}
trap cleanup EXIT
run_ns=()
if [ -n "${LINK:-}" ]; then
	ns=asrbench$$ net=10.213.$(($$ % 200 + 20))
	ip netns add "$ns"
	ip link add "abv$$" type veth peer name "abw$$"
	ip link set "abw$$" netns "$ns"
	ip addr add "$net.1/30" dev "abv$$"
	ip link set "abv$$" up
	ip -n "$ns" addr add "$net.2/30" dev "abw$$"
	ip -n "$ns" link set "abw$$" up
	ip netns exec "$ns" tc qdisc add dev "abw$$" root tbf rate "$LINK" burst 128kb latency 200ms
	host=$net.2 limit="" run_ns=(ip netns exec "$ns")
fi
cat >"$ngx/nginx.conf" <<CONF
daemon off; worker_processes 2; pid $ngx/pid; error_log $ngx/error.log; user root;
events {}
http { log_format bytes '\$body_bytes_sent'; access_log $ngx/access.log bytes; sendfile on;
       client_body_temp_path $ngx/body;
       server { listen $host:$port; root $www; $limit } }
CONF
"${run_ns[@]}" nginx -c "$ngx/nginx.conf" &
ngx_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break; sleep 0.1; done
url=http://$host:$port
rate=${LINK:+one $LINK link}
rate=${rate:-limit_rate 12m per connection}

# Body bytes nginx sent since line $1 of its log (it writes each request's line as it ends).
lines() { wc -l <"$ngx/access.log"; }
sent_since() { sleep 0.5; tail -n +$(($1 + 1)) "$ngx/access.log" | awk '{ s += $1 } END { print s + 0 }'; }

# usage: timed NAME OUTPUT INPUT command...; appends the bytes nginx sent to NAME.bytes
timed() {
	local name=$1 before
	shift
	before=$(lines)
	bench_run "$WORK/incr-$name.log" "$@"
	sent_since "$before" >>"$WORK/incr-$name.bytes"
}

want=$(sha256sum <"$v2" | cut -d' ' -f1)
check() { [ "$(sha256sum <"$1" | cut -d' ' -f1)" = "$want" ] || { echo "FAIL  $1 is not v2" >&2; exit 1; }; }
rm -f "$WORK"/incr-*.log "$WORK"/incr-*.bytes
target=$WORK/incr-target.raw
for ((i = 1; i <= RUNS; i++)); do
	cp --sparse=always "$v1" "$target"  # not timed: the machine holds v1
	timed asr-incremental "$WORK/incr-none" "$target" \
		"$ASR" restore --source "$url/$dmg" --target "$target" --erase --noprompt --incremental
	check "$target"
	timed asr-full "$WORK/incr-full.raw" "$www/$dmg" \
		"$ASR" restore --source "$url/$dmg" --target "$WORK/incr-full.raw" --erase --noprompt
	check "$WORK/incr-full.raw"
	timed zsync "$WORK/incr-zsync.raw" "$v1" \
		sh -c 'cd "$1" && exec zsync -q -i "$2" -o "$3" "$4"' sh "$WORK" "$v1" "$WORK/incr-zsync.raw" "$url/v2.raw.zsync"
	check "$WORK/incr-zsync.raw"
	timed casync "$WORK/incr-casync.raw" "$v1" \
		casync extract --store="$url/v2.castr" --seed="$v1" "$url/v2.caibx" "$WORK/incr-casync.raw"
	check "$WORK/incr-casync.raw"
	bench_run "$WORK/incr-compare.log" "$WORK/incr-none" "$v1" "$ASR" compare --source "$www/$dmg" --target "$v1"
	bench_run "$WORK/incr-sha256sum.log" "$WORK/incr-none" "$v1" sha256sum "$v1"
done
rm -f "$WORK"/incr-zsync.raw.zs-old

# What differs, as asr counts it (the restore's own last line says the same).
"$ASR" compare --source "$www/$dmg" --target "$v1" --json >"$WORK/incr-compare.json"
field() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$WORK/incr-compare.json" "$1"; }
best_bytes() { sort -g "$WORK/incr-$1.bytes" | head -1; }
best() { summarize "$WORK/incr-$1.log" | cut -d' ' -f1; }
med() { summarize "$WORK/incr-$1.log" | cut -d' ' -f2; }

echo "## incremental: v1 -> v2 of a $(mib "$(size_of "$v2")") MiB ext4 disk from nginx ($rate), best and median of $RUNS runs"
echo "v2 differs from v1 in $(field differentChunks) of $(field chunks) $CHUNK chunks; their stored size is $(mib "$(field fetchStoredBytes)") MiB"
printf '| %-28s | %6s | %6s | %9s |\n' tool "best s" median "MiB sent"
printf '|%s|%s|%s|%s|\n' ------------------------------ -------- -------- -----------
for t in asr-incremental asr-full zsync casync; do
	printf '| %-28s | %6.2f | %6.2f | %9s |\n' "$t" "$(best $t)" "$(med $t)" "$(mib "$(best_bytes $t)")"
done
echo
[ -z "${LINK:-}" ] && echo "note: limit_rate 12m does not slow responses under 12 MiB; LINK=96mbit shapes one link instead"
echo "hashing pass: asr compare of v1 $(best compare) s, sha256sum $(best sha256sum) s ($(ratio "$(best sha256sum)" "$(best compare)")x)"
echo "all outputs are v2 byte for byte ($want)"
echo "incremental / full: time $(ratio "$(best asr-incremental)" "$(best asr-full)")x, bytes $(ratio "$(best_bytes asr-incremental)" "$(best_bytes asr-full)")x"
echo "incremental against zsync: time $(ratio "$(best asr-incremental)" "$(best zsync)")x, bytes $(ratio "$(best_bytes asr-incremental)" "$(best_bytes zsync)")x"
echo "incremental against casync: time $(ratio "$(best asr-incremental)" "$(best casync)")x, bytes $(ratio "$(best_bytes asr-incremental)" "$(best_bytes casync)")x"
verdict "incremental at most 0.15x the full restore's time" "$(best asr-incremental) / $(best asr-full) <= 0.15"
verdict "incremental at most 1.5x zsync's bytes" "$(best_bytes asr-incremental) / $(best_bytes zsync) <= 1.5"
verdict "incremental at most 0.5x zsync's time" "$(best asr-incremental) / $(best zsync) <= 0.5"
verdict "hashing pass at least sha256sum's speed" "$(best compare) <= $(best sha256sum)"
