#!/usr/bin/env bash
# What watching costs the stream. One asr multicast session (the 1 GiB corpus as UDZO, two
# clients starting together) timed with `asr server --status` and nobody polling, and with 200
# pollers each fetching /status.json once a second, as 200 open session pages do (a quarter
# of them fetch /metrics instead). A third row floods: 200 pollers fetching as fast as they
# can. Runs alternate none / pollers / flood so drift hits all alike.
# The pollers run inside the server's namespace (the status server listens on 127.0.0.1):
# they share this machine's two cores with the server and both clients, so their own CPU
# (Python threads) is counted against us; the server's CPU is reported apart.
# Goal: the session's median wall time with 200 pollers at most 1.05x without.
# usage: bench/status.sh   (RATES, RUNS, POLLERS override; ASR picks the binary)
set -euo pipefail
shopt -s inherit_errexit
RUNS=${RUNS:-3}
. "$(dirname "$0")/lib.sh"

need ip:iproute2 /usr/bin/time:time python3:python3
need_asr
"$BENCH/corpus.sh" >&2
RATES=${RATES:-"12000000 60000000"}
POLLERS=${POLLERS:-200}
MODES="none poll flood"
image=$WORK/st-UDZO.dmg
if ! [ -s "$image" ] || ! [ "$image" -nt "$CORPUS" ] || ! [ "$image" -nt "$ASR" ]; then
	echo "making $image" >&2
	"$ASR" create --source "$CORPUS" --output "$image" --overwrite >&2
	"$ASR" imagescan --source "$image" >/dev/null
fi
want=$(sha256sum <"$CORPUS" | cut -d' ' -f1)
stored=$("$ASR" info --source "$image" --quick | awk '/^Stored data:/ { print $3 }')

# The pollers: THREADS keep-alive connections, each fetching every INTERVAL s (0: flat out)
# until STOP exists; prints "ok failed" when done.
cat >"$WORK/st-pollers.py" <<'PY'
import http.client, os, sys, threading, time
host, port, threads, interval, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
counts, lock = [0, 0], threading.Lock()
def poll(k):
    c, path = None, "/metrics" if k % 4 == 0 else "/status.json"
    while not os.path.exists(stop):
        try:
            if c is None:
                # 8 to a source address, under the status server's per-address cap.
                c = http.client.HTTPConnection(host, port, timeout=10, source_address=("127.0.2.%d" % (1 + k // 8), 0))
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            with lock: counts[0 if r.status == 200 else 1] += 1
        except Exception:
            with lock: counts[1] += 1
            c = None
        if interval: time.sleep(interval)
ts = [threading.Thread(target=poll, args=(k,)) for k in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(counts[0], counts[1])
PY

lab_cleanup() { rm -f "$WORK"/st-c*.raw; }
lab_up "asrstat$$" 10.79 server c1 c2
now() { date +%s.%N; }

# session RATE MODE: prints "wall_s server_cpu_s requests_ok requests_failed".
session() {
	local rate=$1 mode=$2 cfg=$WORK/st.plist server pollers= start end c i cpu ok failed pids=()
	cat >"$cfg" <<-PLIST
		<?xml version="1.0" encoding="UTF-8"?>
		<plist version="1.0"><dict>
		<key>Data Rate</key><integer>$rate</integer>
		<key>Multicast Address</key><string>239.79.0.1</string>
		<key>DNS Service Discovery</key><false/>
		</dict></plist>
	PLIST
	rm -f "$WORK"/st-c*.raw "$WORK/st-stop" "$WORK/st-pollers.out"
	sync
	settle
	# `ip netns exec` execs the server: $! is its pid, for its CPU time and its SIGTERM.
	ip netns exec "$LAB-server" "$ASR" server --source "$image" --config "$cfg" --status 8080 2>"$WORK/st-server.log" &
	server=$!
	for ((i = 0; i < 600; i++)); do grep -q 'waiting for clients' "$WORK/st-server.log" && break; sleep 0.1; done
	grep -q 'waiting for clients' "$WORK/st-server.log" || { cat "$WORK/st-server.log" >&2; exit 1; }
	case $mode in
	poll) on server python3 "$WORK/st-pollers.py" 127.0.0.1 8080 "$POLLERS" 1 "$WORK/st-stop" >"$WORK/st-pollers.out" & pollers=$! ;;
	flood) on server python3 "$WORK/st-pollers.py" 127.0.0.1 8080 "$POLLERS" 0 "$WORK/st-stop" >"$WORK/st-pollers.out" & pollers=$! ;;
	esac
	[ -n "$pollers" ] && sleep 2  # every poller connected and polling
	warm "$image"
	start=$(now)
	for c in c1 c2; do
		on "$c" "$ASR" restore --source asr://10.79.0.1 --target "$WORK/st-$c.raw" --erase --noprompt >"$WORK/st-$c.log" 2>&1 &
		pids+=($!)
	done
	wait "${pids[@]}"
	end=$(now)
	touch "$WORK/st-stop"
	[ -n "$pollers" ] && wait "$pollers"
	cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$server/stat")
	kill -TERM "$server"
	wait "$server" || true
	for c in c1 c2; do
		[ "$(sha256sum <"$WORK/st-$c.raw" | cut -d' ' -f1)" = "$want" ] || { echo "FAIL  $c's disk differs ($mode, $rate)" >&2; exit 1; }
	done
	ok=0 failed=0
	[ -s "$WORK/st-pollers.out" ] && read -r ok failed <"$WORK/st-pollers.out"
	echo "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }') $cpu $ok $failed"
}

echo "## status server: the 1 GiB corpus as UDZO ($stored stored bytes) to 2 clients, $RUNS runs each"
echo
echo "| rate B/s | pollers | median wall s | runs (wall s) | server CPU s (median) | requests ok / failed (median) | wall / none |"
echo "|---|---|---:|---|---:|---:|---:|"
declare -A W
for rate in $RATES; do
	declare -A walls=() cpus=() oks=() fails=()
	for ((r = 1; r <= RUNS; r++)); do
		for mode in $MODES; do
			read -r wall cpu ok failed < <(session "$rate" "$mode")
			walls[$mode]+="$wall "
			cpus[$mode]+="$cpu "
			oks[$mode]+="$ok "
			fails[$mode]+="$failed "
		done
	done
	for mode in $MODES; do
		W[$rate,$mode]=$(tr ' ' '\n' <<<"${walls[$mode]}" | grep . | median)
	done
	for mode in $MODES; do
		label=$(case $mode in none) echo "none" ;; poll) echo "$POLLERS, 1/s each" ;; flood) echo "$POLLERS, flat out" ;; esac)
		echo "| $rate | $label | ${W[$rate,$mode]} | ${walls[$mode]% } | $(tr ' ' '\n' <<<"${cpus[$mode]}" | grep . | median) |" \
			"$(tr ' ' '\n' <<<"${oks[$mode]}" | grep . | median) / $(tr ' ' '\n' <<<"${fails[$mode]}" | grep . | median) |" \
			"$(ratio "${W[$rate,$mode]}" "${W[$rate,none]}") |"
	done
	unset walls cpus oks fails
done
echo
for rate in $RATES; do
	verdict "$rate: $POLLERS pollers at 1/s cost at most 1.05x wall ($(ratio "${W[$rate,poll]}" "${W[$rate,none]}")x)" \
		"${W[$rate,poll]} <= 1.05 * ${W[$rate,none]}"
done
