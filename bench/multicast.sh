#!/usr/bin/env bash
# Multicast the way labs deploy: asr's scanned UDZO and ULMO images against udpcast carrying a
# `gzip -6` stream and a `zstd -19` stream (FOG and Clonezilla send compressed images through
# udp-sender; each receiver decompresses with `udp-receiver --pipe`). One server host and client
# hosts on a bridge, each in a network namespace this script makes and deletes (10.78.0.0/16
# exists only inside them). Every restored disk is compared with the corpus.
#
# Scenarios, each at 12000000 and 60000000 B/s:
#   A  three clients start together, no loss
#   B  as A, with 5% random loss (nftables) on c2's link
#   C  as B, and c3 starts 3 s after c1 and c2 (udp-sender must wait for it)
# Then one client alone at 60000000 B/s (pass 1, bytes sent), a local restore of each image
# (client CPU), and 30 clients against udp-sender + gzip with 30 receivers on a 256 MiB slice.
# Times are seconds from when c1 and c2 start. The wire limit is the image's stored bytes / rate.
# udp-sender runs with --full-duplex, as FOG and Clonezilla start it, and a lenient
# --retries-until-drop: every receiver shares this machine's two cores, and a receiver starved
# of CPU should be waited for, not dropped.
# usage: bench/multicast.sh   (RATES, FORMATS, ULMO_CHUNK, SCALE_CLIENTS override the defaults;
# TOOLS and SCENARIOS pick rows, and EXTRAS=0 skips all but the table: such partial runs print
# no verdicts)
set -euo pipefail
shopt -s inherit_errexit
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time udp-sender:udpcast nft:nftables ip:iproute2 zstd:zstd gzip:gzip
need_asr
"$BENCH/corpus.sh" >&2
RATES=${RATES:-"12000000 60000000"}
FORMATS=${FORMATS:-"UDZO ULMO"}
ULMO_CHUNK=${ULMO_CHUNK:-64M}
SCALE_CLIENTS=${SCALE_CLIENTS:-30}
TOOLS=${TOOLS:-"$FORMATS gzip zstd"}
SCENARIOS=${SCENARIOS:-"A B C"}
EXTRAS=${EXTRAS:-1}
DELAY=3
want=$(sha256sum <"$CORPUS" | cut -d' ' -f1)

fresh() { [ -s "$1" ] && [ "$1" -nt "$2" ]; }
# An asr image of RAW in FORMAT, scanned, rebuilt when older than RAW or the binary.
asr_image() {
	local raw=$1 format=$2 out=$3 chunk=1M
	[ "$format" = ULMO ] && chunk=$ULMO_CHUNK
	if ! fresh "$out" "$raw" || ! [ "$out" -nt "$ASR" ]; then
		echo "making $out ($format, $chunk chunks)" >&2
		"$ASR" create --source "$raw" --output "$out" --format "$format" --chunk-size "$chunk" --overwrite >&2
		"$ASR" imagescan --source "$out" >/dev/null
	fi
}
stored_bytes() { "$ASR" info --source "$1" | awk '/^Stored data:/ { print $3 }'; }
for format in $FORMATS; do asr_image "$CORPUS" "$format" "$WORK/mc-$format.dmg"; done
fresh "$WORK/corpus.gz" "$CORPUS" || { echo "gzip -6 of the corpus" >&2; gzip -6 -c "$CORPUS" >"$WORK/corpus.gz"; }
fresh "$WORK/corpus.zst" "$CORPUS" || { echo "zstd -19 of the corpus" >&2; zstd -19 -T0 -q -c "$CORPUS" >"$WORK/corpus.zst"; }

nhosts=$((SCALE_CLIENTS > 3 ? SCALE_CLIENTS : 3))
lab_cleanup() { rm -f "$WORK"/mc-c*.raw "$WORK"/mc-local.raw; }
lab_up "asrbench$$" 10.78 server $(seq -f 'c%g' 1 "$nhosts")
loss() {  # loss HOST PERCENT (0 removes it)
	on "$1" nft delete table inet asrloss 2>/dev/null || true
	[ "$2" = 0 ] && return
	on "$1" nft add table inet asrloss
	on "$1" nft add chain inet asrloss input '{ type filter hook input priority 0; }'
	on "$1" nft add rule inet asrloss input meta l4proto udp numgen random mod 100 '<' "$2" drop
}
now() { date +%s.%N; }
stop_namespace() { ip netns pids "$LAB-$1" | xargs -r kill -TERM 2>/dev/null || true; }

# Starts CLIENTS client commands (the function named by $1 gets the host and its target file),
# the last one DELAY seconds late when LATE is 1. Waits for all, checks every target against
# SHA, then prints each client's finish time in seconds from the start, in host order.
run_clients() {
	local client=$1 clients=$2 late=$3 sha=$4 start pids=() c i
	rm -f "$WORK"/mc-c*.end "$WORK"/mc-c*.cpu "$WORK"/mc-c*.raw
	start=$(now)
	for ((i = 1; i <= clients; i++)); do
		c=c$i
		(
			((late && i == clients)) && sleep "$DELAY"
			on "$c" /usr/bin/time -f '%U %S %M' -o "$WORK/mc-$c.cpu" bash -c "$client \"\$1\"" _ "$WORK/mc-$c.raw" \
				>"$WORK/mc-$c.log" 2>&1 || echo "client $c failed" >&2
			now >"$WORK/mc-$c.end"
		) &
		pids+=($!)
	done
	wait "${pids[@]}"
	for ((i = 1; i <= clients; i++)); do
		[ "$(sha256sum <"$WORK/mc-c$i.raw" | cut -d' ' -f1)" = "$sha" ] || { echo "FAIL  client c$i's disk differs ($client)" >&2; exit 1; }
	done
	for ((i = 1; i <= clients; i++)); do awk -v s="$start" '{ printf "%.2f ", $1 - s }' "$WORK/mc-c$i.end"; done
	echo
}
# Client commands, run by a bash inside each client's namespace with the target as $1.
asr_client() { "$ASR" restore --source asr://10.78.0.1 --target "$1" --erase --noprompt; }
gzip_client() { udp-receiver --nokbd --interface eth0 --portbase 9100 --mcast-rdv-address 224.0.0.1 --pipe "gzip -dc" --file "$1"; }
zstd_client() { udp-receiver --nokbd --interface eth0 --portbase 9100 --mcast-rdv-address 224.0.0.1 --pipe "zstd -dc" --file "$1"; }
export ASR
export -f asr_client gzip_client zstd_client

# asr_session IMAGE RATE CLIENTS LATE SHA: prints the clients' times, then the server's bytes
# sent when the last client finished.
asr_session() {
	local image=$1 rate=$2 clients=$3 late=$4 sha=$5 cfg=$WORK/mc.plist times
	cat >"$cfg" <<-PLIST
		<?xml version="1.0" encoding="UTF-8"?>
		<plist version="1.0"><dict>
		<key>Data Rate</key><integer>$rate</integer>
		<key>Multicast Address</key><string>239.78.0.1</string>
		<key>DNS Service Discovery</key><false/>
		</dict></plist>
	PLIST
	sync
	# Each server line with the time it came, to tell a client's last data from its exit.
	on server "$ASR" server --source "$image" --config "$cfg" 2> >(while IFS= read -r line; do
		printf '%s %s\n' "$(now)" "$line"; done >"$WORK/mc-server.log") &
	local server=$!
	sleep 0.5
	times=$(run_clients asr_client "$clients" "$late" "$sha")
	stop_namespace server
	wait "$server" || true
	echo "$times $(grep -o 'finished; [0-9]* bytes' "$WORK/mc-server.log" | awk '{ if ($2 > m) m = $2 } END { print m }')"
}
# udpcast_session FILE RATE CLIENTS LATE SHA CLIENT_FUNCTION: prints the clients' times.
udpcast_session() {
	local file=$1 rate=$2 clients=$3 late=$4 sha=$5 client=$6
	sync
	on server udp-sender --file "$file" --interface eth0 --max-bitrate "$((rate * 8 / 1000))k" \
		--min-receivers "$clients" --full-duplex --retries-until-drop 1000 --nokbd --portbase 9100 --mcast-rdv-address 224.0.0.1 2>"$WORK/uc-server.log" &
	local server=$!
	sleep 0.5
	run_clients "$client" "$clients" "$late" "$sha"
	wait "$server" || true
}
max() { tr ' ' '\n' | grep . | sort -g | tail -1; }
first_two() { awk '{ print ($1 > $2 ? $1 : $2) }'; }
cpu_of() { awk '{ printf "%.2f", $1 + $2 }' "$WORK/mc-$1.cpu"; }

declare -A T   # T[tool,rate,scenario] = the clients' times
echo "## multicast: 1 GiB corpus to 3 clients in namespaces; times in s from the start of c1 and c2"
for format in $FORMATS; do echo "- asr $format: $(stored_bytes "$WORK/mc-$format.dmg") stored bytes"; done
echo "- gzip -6 stream: $(size_of "$WORK/corpus.gz") bytes; zstd -19 stream: $(size_of "$WORK/corpus.zst") bytes"
echo
echo "| rate B/s | scenario | tool | c1 | c2 | c3 | slowest | wire limit | slowest/limit | server sent / image | c1 CPU s |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for rate in $RATES; do
	for scenario in $SCENARIOS; do
		loss c2 0
		[ "$scenario" = A ] || loss c2 5
		late=0
		[ "$scenario" = C ] && late=1
		for tool in $TOOLS; do
			case $tool in
			gzip) file=$WORK/corpus.gz; times=$(udpcast_session "$file" "$rate" 3 "$late" "$want" gzip_client); sent= ;;
			zstd) file=$WORK/corpus.zst; times=$(udpcast_session "$file" "$rate" 3 "$late" "$want" zstd_client); sent= ;;
			*) file=$WORK/mc-$tool.dmg; out=$(asr_session "$file" "$rate" 3 "$late" "$want"); read -r t1 t2 t3 sent <<<"$out"; times="$t1 $t2 $t3" ;;
			esac
			bytes=$(case $tool in gzip | zstd) size_of "$file" ;; *) stored_bytes "$file" ;; esac)
			limit=$(awk -v b="$bytes" -v r="$rate" 'BEGIN { printf "%.2f", b / r }')
			slowest=$(max <<<"$times")
			T[$tool,$rate,$scenario]=$times
			T[$tool,$rate,$scenario,cpu]=$(cpu_of c1)
			[ "$tool" = gzip ] || [ "$tool" = zstd ] || cp "$WORK/mc-server.log" "$WORK/mc-server-$tool-$rate-$scenario.log"
			for c in c1 c2 c3; do cp "$WORK/mc-$c.log" "$WORK/mc-$c-$tool-$rate-$scenario.log"; done
			sentratio=
			[ -n "$sent" ] && sentratio=$(ratio "$sent" "$bytes")
			read -r t1 t2 t3 <<<"$times"
			label=$tool
			case $tool in gzip) label="udpcast + gzip -6" ;; zstd) label="udpcast + zstd -19" ;; *) label="asr $tool" ;; esac
			echo "| $rate | $scenario | $label | $t1 | $t2 | $t3 | $slowest | $limit | $(ratio "$slowest" "$limit") | $sentratio | ${T[$tool,$rate,$scenario,cpu]} |"
		done
	done
	loss c2 0
done

if [ "$EXTRAS" = 0 ]; then echo; echo "partial run: no verdicts"; exit 0; fi
echo
echo "| one client, 60000000 B/s | time s | wire limit s | server sent / image | pass 1 |"
echo "|---|---:|---:|---:|---|"
for format in $FORMATS; do
	image=$WORK/mc-$format.dmg
	out=$(asr_session "$image" 60000000 1 0 "$want")
	read -r t1 sent <<<"$out"
	bytes=$(stored_bytes "$image")
	pass1=$(tr '\r' '\n' <"$WORK/mc-c1.log" | grep -m1 -o 'Pass 1 .*' | head -c 80 || true)
	echo "| asr $format | $t1 | $(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 60000000 }') | $(ratio "$sent" "$bytes") | ${pass1:-see log} |"
	T[lone,$format]=$t1
done

echo
echo "| local restore (same images) | wall s | CPU s (user+sys) | multicast c1 CPU s (A, 12000000) | ratio |"
echo "|---|---:|---:|---:|---:|"
for format in $FORMATS; do
	rm -f "$WORK/mc-local.raw"
	sync
	/usr/bin/time -f '%e %U %S' -o "$WORK/mc-local.time" "$ASR" restore --source "$WORK/mc-$format.dmg" --target "$WORK/mc-local.raw" --erase --noprompt >/dev/null
	read -r lwall lu ls <"$WORK/mc-local.time"
	lcpu=$(awk -v u="$lu" -v s="$ls" 'BEGIN { printf "%.2f", u + s }')
	mcpu=${T[$format,12000000,A,cpu]:-}
	T[local,$format]=$lcpu
	echo "| asr $format | $lwall | $lcpu | $mcpu | $([ -n "$mcpu" ] && ratio "$mcpu" "$lcpu") |"
done
rm -f "$WORK/mc-local.raw"

# Scale: SCALE_CLIENTS clients on a 256 MiB slice of the corpus, asr UDZO against udpcast + gzip.
slice=$WORK/corpus-256m.raw
fresh "$slice" "$CORPUS" || head -c 268435456 "$CORPUS" >"$slice"
asr_image "$slice" UDZO "$WORK/mc-slice.dmg"
fresh "$WORK/slice.gz" "$slice" || gzip -6 -c "$slice" >"$WORK/slice.gz"
slice_sha=$(sha256sum <"$slice" | cut -d' ' -f1)
echo
echo "| 256 MiB slice, 12000000 B/s | clients | slowest s | server sent / image |"
echo "|---|---:|---:|---:|"
out=$(asr_session "$WORK/mc-slice.dmg" 12000000 1 0 "$slice_sha")
read -r one onesent <<<"$out"
echo "| asr UDZO ($(stored_bytes "$WORK/mc-slice.dmg") stored) | 1 | $one | $(ratio "$onesent" "$(stored_bytes "$WORK/mc-slice.dmg")") |"
out=$(asr_session "$WORK/mc-slice.dmg" 12000000 "$SCALE_CLIENTS" 0 "$slice_sha")
many=$(awk '{ NF--; print }' <<<"$out" | max)
echo "| asr UDZO | $SCALE_CLIENTS | $many | $(ratio "${out##* }" "$(stored_bytes "$WORK/mc-slice.dmg")") |"
gmany=$(udpcast_session "$WORK/slice.gz" 12000000 "$SCALE_CLIENTS" 0 "$slice_sha" gzip_client | max)
echo "| udpcast + gzip -6 ($(size_of "$WORK/slice.gz") bytes) | $SCALE_CLIENTS | $gmany | |"

echo
slowest() { max <<<"${T[$1]}"; }
for rate in $RATES; do
	for format in $FORMATS; do
		k=$format,$rate
		for s in A B; do
			verdict "$rate $format $s: slowest at most 1.0x udpcast+zstd ($(ratio "$(slowest "$k,$s")" "$(slowest "zstd,$rate,$s")")x)" \
				"$(slowest "$k,$s") <= $(slowest "zstd,$rate,$s")"
			verdict "$rate $format $s: slowest at most 0.8x udpcast+gzip ($(ratio "$(slowest "$k,$s")" "$(slowest "gzip,$rate,$s")")x)" \
				"$(slowest "$k,$s") <= 0.8 * $(slowest "gzip,$rate,$s")"
		done
		fc=$(first_two <<<"${T[$k,C]}")
		fb=$(first_two <<<"${T[$k,B]}")
		fz=$(first_two <<<"${T[zstd,$rate,C]}")
		late=$(awk '{ print $3 }' <<<"${T[$k,C]}")
		undisturbed=$(slowest "$k,A")
		verdict "$rate $format C: first clients at most 1.10x their time without the late joiner ($(ratio "$fc" "$fb")x)" "$fc <= 1.10 * $fb"
		verdict "$rate $format C: first clients at most 0.8x udpcast+zstd's ($(ratio "$fc" "$fz")x)" "$fc <= 0.8 * $fz"
		verdict "$rate $format C: late joiner within $DELAY s + 1.10x undisturbed ($late s against $(awk -v u="$undisturbed" -v d=$DELAY 'BEGIN { printf "%.2f", d + 1.1 * u }'))" \
			"$late <= $DELAY + 1.10 * $undisturbed"
		verdict "$rate $format C: slowest at most 1.0x udpcast+zstd ($(ratio "$(slowest "$k,C")" "$(slowest "zstd,$rate,C")")x)" \
			"$(slowest "$k,C") <= $(slowest "zstd,$rate,C")"
	done
done
if [[ " $RATES " == *" 60000000 "* && " $FORMATS " == *" UDZO "* ]]; then
	l=$(awk -v b="$(stored_bytes "$WORK/mc-UDZO.dmg")" 'BEGIN { print b / 60000000 }')
	verdict "60000000 UDZO A: clients at most 1.10x the wire limit ($(ratio "$(slowest UDZO,60000000,A)" "$l")x)" "$(slowest UDZO,60000000,A) <= 1.10 * $l"
fi
for format in $FORMATS; do
	[ -n "${T[$format,12000000,A,cpu]:-}" ] || continue
	verdict "$format: one client's CPU at most 1.2x a local restore ($(ratio "${T[$format,12000000,A,cpu]}" "${T[local,$format]}")x)" \
		"${T[$format,12000000,A,cpu]} <= 1.2 * ${T[local,$format]}"
done
verdict "$SCALE_CLIENTS clients: slowest at most 1.5x one client ($(ratio "$many" "$one")x)" "$many <= 1.5 * $one"
verdict "$SCALE_CLIENTS clients: slowest at most 0.7x udpcast+gzip's ($(ratio "$many" "$gmany")x)" "$many <= 0.7 * $gmany"
