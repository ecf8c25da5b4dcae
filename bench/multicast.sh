#!/usr/bin/env bash
# Multicast: one server host and three client hosts on a bridge, each in a network namespace
# this script makes and deletes (10.78.0.0/24 exists only inside them). asr serves the scanned
# corpus image; udpcast (udp-sender/udp-receiver) sends the raw disk at the same rate to the
# same three hosts. Rows: no loss, and 5% random loss (nftables) on one client's link.
# Targets: asr wall time <= 1.10x (bytes on the wire / Data Rate) without loss; <= 0.6x
# udpcast's wall time; with loss on one client the other two slowed <= 20%; server CPU at
# 60000000 B/s under half a core; client peak RSS < 256 MiB.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time udp-sender:udpcast nft:nftables ip:iproute2
need_asr
"$BENCH/corpus.sh" >&2
image=$WORK/restore.dmg
if ! [ "$image" -nt "$CORPUS" ] || ! [ "$image" -nt "$ASR" ]; then
	"$ASR" create --source "$CORPUS" --output "$image" --overwrite >&2
	"$ASR" imagescan --source "$image" >/dev/null
fi

P=asrbench$$
hosts=(server c1 c2 c3)
teardown() {
	for h in "${hosts[@]}" net; do
		ip netns pids "$P-$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
		ip netns del "$P-$h" 2>/dev/null || true
	done
}
trap teardown EXIT
ip netns add "$P-net"
ip -n "$P-net" link add br0 type bridge mcast_snooping 0
ip -n "$P-net" link set br0 up
for i in "${!hosts[@]}"; do
	ns=$P-${hosts[$i]}
	ip netns add "$ns"
	ip link add "$P$i" type veth peer name eth0 netns "$ns"
	ip link set "$P$i" netns "$P-net"
	ip -n "$P-net" link set "$P$i" master br0 up
	ip -n "$ns" addr add "10.78.0.$((i + 1))/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
	ip -n "$ns" route add 224.0.0.0/4 dev eth0
done
on() { local h=$1; shift; ip netns exec "$P-$h" "$@"; }
loss() {  # loss HOST PERCENT (0 removes it)
	on "$1" nft delete table inet asrloss 2>/dev/null || true
	[ "$2" = 0 ] && return
	on "$1" nft add table inet asrloss
	on "$1" nft add chain inet asrloss input '{ type filter hook input priority 0; }'
	on "$1" nft add rule inet asrloss input meta l4proto udp numgen random mod 100 '<' "$2" drop
}
now() { date +%s.%N; }

# One asr session: prints "wall_s wire_bytes server_cpu_s c1_s c2_s c3_s max_client_rss_kib".
asr_run() {
	local rate=$1 cfg=$WORK/mc.plist
	cat >"$cfg" <<-PLIST
		<?xml version="1.0" encoding="UTF-8"?>
		<plist version="1.0"><dict>
		<key>Data Rate</key><integer>$rate</integer>
		<key>Multicast Address</key><string>239.78.0.1</string>
		</dict></plist>
	PLIST
	rm -f "$WORK"/mc-*.raw "$WORK"/mc-*.time
	on server /usr/bin/time -f '%U %S' -o "$WORK/mc-server.time" "$ASR" server --source "$image" --config "$cfg" 2>"$WORK/mc-server.log" &
	local server=$!
	sleep 0.5
	local start pids=() c
	start=$(now)
	for c in c1 c2 c3; do
		( on "$c" /usr/bin/time -f '%M' -o "$WORK/mc-$c.time" "$ASR" restore --source asr://10.78.0.1 \
			--target "$WORK/mc-$c.raw" --erase --noprompt >/dev/null; echo "$(now)" >"$WORK/mc-$c.end" ) &
		pids+=($!)
	done
	wait "${pids[@]}"
	local wall wire
	wall=$(awk -v s="$start" 'BEGIN { m = 0 } { if ($1 > m) m = $1 } END { printf "%.2f", m - s }' "$WORK"/mc-c?.end)
	wire=$(grep -o '[0-9]* bytes sent so far' "$WORK/mc-server.log" | tail -1 | cut -d' ' -f1)
	for pid in $(ip netns pids "$P-server"); do  # the asr server only: time(1) must report it
		[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = asr ] && kill -TERM "$pid"
	done
	wait "$server" || true
	local want
	want=$(sha256sum <"$CORPUS" | cut -d' ' -f1)
	for c in c1 c2 c3; do
		[ "$(sha256sum <"$WORK/mc-$c.raw" | cut -d' ' -f1)" = "$want" ] || { echo "FAIL  asr client $c differs" >&2; exit 1; }
	done
	echo "$wall $wire $(tail -1 "$WORK/mc-server.time" | awk '{ print $1 + $2 }')" \
		"$(for c in c1 c2 c3; do awk -v s="$start" '{ printf "%.2f ", $1 - s }' "$WORK/mc-$c.end"; done)" \
		"$(tail -qn1 "$WORK"/mc-c?.time | sort -n | tail -1)"
}

# One udpcast session of the raw disk at the same rate (bits/s for --max-bitrate).
udpcast_run() {
	local rate=$1
	rm -f "$WORK"/uc-*.raw
	on server udp-sender --file "$CORPUS" --interface eth0 --max-bitrate "$((rate * 8 / 1000))k" \
		--min-receivers 3 --nokbd --portbase 9100 --mcast-rdv-address 224.0.0.1 2>"$WORK/uc-server.log" &
	local server=$! start pids=() c
	sleep 0.5
	start=$(now)
	for c in c1 c2 c3; do
		( on "$c" udp-receiver --file "$WORK/uc-$c.raw" --interface eth0 --nokbd --portbase 9100 --mcast-rdv-address 224.0.0.1 2>/dev/null; echo "$(now)" >"$WORK/uc-$c.end" ) &
		pids+=($!)
	done
	wait "${pids[@]}"
	wait "$server" || true
	local want
	want=$(sha256sum <"$CORPUS" | cut -d' ' -f1)
	for c in c1 c2 c3; do
		[ "$(sha256sum <"$WORK/uc-$c.raw" | cut -d' ' -f1)" = "$want" ] || echo "NOTE  udpcast client $c differs from the corpus" >&2
	done
	awk -v s="$start" 'BEGIN { m = 0 } { if ($1 > m) m = $1 } END { printf "%.2f", m - s }' "$WORK"/uc-c?.end
	echo " $(for c in c1 c2 c3; do awk -v s="$start" '{ printf "%.2f ", $1 - s }' "$WORK/uc-$c.end"; done)"
}

echo "## multicast: $(mib "$(size_of "$image")") MiB scanned UDZO image of a $(mib "$(size_of "$CORPUS")") MiB disk to 3 clients (asr) / the raw disk (udpcast)"
echo "| rate B/s | loss | tool | wall s | limit s | wall/limit | clients done at s | server CPU s | client RSS MiB |"
echo "|---|---|---|---:|---:|---:|---|---:|---:|"
for rate in 12000000 60000000; do
	for pct in 0 5; do
		loss c3 "$pct"
		read -r wall wire cpu t1 t2 t3 rss < <(asr_run "$rate")
		limit=$(awk -v b="$wire" -v r="$rate" 'BEGIN { printf "%.2f", b / r }')
		echo "| $rate | $pct% on c3 | asr | $wall | $limit | $(ratio "$wall" "$limit") | $t1 $t2 $t3 | $cpu | $(mib $((rss * 1024))) |"
		eval "asr_${rate}_${pct}=$wall asr_first_${rate}_${pct}=$(printf '%s\n%s\n' "$t1" "$t2" | sort -g | tail -1) cpu_${rate}_${pct}=$cpu lim_${rate}_${pct}=$limit"
		read -r uwall u1 u2 u3 < <(udpcast_run "$rate")
		echo "| $rate | $pct% on c3 | udpcast | $uwall | | | $u1 $u2 $u3 | | |"
		eval "uc_${rate}_${pct}=$uwall"
	done
	loss c3 0
done
echo
for rate in 12000000 60000000; do
	eval "a0=\$asr_${rate}_0 a5=\$asr_${rate}_5 u0=\$uc_${rate}_0 u5=\$uc_${rate}_5 l0=\$lim_${rate}_0 f0=\$asr_first_${rate}_0 f5=\$asr_first_${rate}_5 cpu=\$cpu_${rate}_0"
	verdict "$rate B/s: asr wall at most 1.10x the limit ($(ratio "$a0" "$l0")x)" "$a0 / $l0 <= 1.10"
	verdict "$rate B/s: asr at most 0.6x udpcast, no loss ($(ratio "$a0" "$u0")x)" "$a0 / $u0 <= 0.6"
	verdict "$rate B/s: asr at most 0.6x udpcast, 5% loss on c3 ($(ratio "$a5" "$u5")x)" "$a5 / $u5 <= 0.6"
	verdict "$rate B/s: with 5% loss on c3, c1 and c2 slowed at most 20% ($(ratio "$f5" "$f0")x)" "$f5 / $f0 <= 1.2"
done
verdict "server CPU at 60000000 B/s under half a core ($(awk -v c="$cpu_60000000_0" -v w="$asr_60000000_0" 'BEGIN { printf "%.2f", c / w }') cores)" \
	"$cpu_60000000_0 / $asr_60000000_0 < 0.5"
