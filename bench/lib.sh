# Shared helpers for the bench scripts; sourced, not run.
# Paths are absolute so a script can be started from any directory.
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
WORK=$BENCH/work
CORPUS=$WORK/corpus.raw
ASR=${ASR:-$ROOT/.build-release/release/asr}
RUNS=${RUNS:-5}
mkdir -p "$WORK"

# Installs the Debian packages that provide the given commands, only if one is missing.
# usage: need CMD:PACKAGE ...
need() {
	local missing=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
	done
	[ ${#missing[@]} -eq 0 ] && return
	apt-get install -y "${missing[@]}" >/dev/null
}

# A release build in its own scratch path, so a debug build in .build is left alone.
need_asr() {
	[ -x "$ASR" ] && return
	(cd "$ROOT" && swift build -c release --scratch-path .build-release --product asr >&2)
}

# Reads a file once so every timed tool starts with it in the page cache: dropping the
# cache is not reliable here, so both tools get the same warm start instead.
warm() { cat "$@" >/dev/null; }

# Waits (up to a minute) for one second with the CPUs at least 90% idle. The machine may be
# shared (builds, test runs); this keeps them from landing at the start of a timed run.
settle() {
	local i a b busy total
	for ((i = 0; i < 60; i++)); do
		read -ra a </proc/stat
		sleep 1
		read -ra b </proc/stat
		# cpu user nice system idle iowait irq softirq steal: busy = all but idle and iowait
		busy=$((b[1] + b[2] + b[3] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[6] - a[7] - a[8]))
		total=$((busy + b[4] + b[5] - a[4] - a[5]))
		((busy * 10 <= total)) && return
	done
	echo "warning: the machine stayed busy; timing anyway" >&2
}

# One timed run of a command. Before it: the previous output is removed (replacing a 1 GiB file
# costs time too), dirty pages are flushed (so no run pays for an earlier run's writeback), the
# machine is let settle and the input is warmed. Appends "wall_s peak_rss_kib user_s sys_s" to LOG.
# usage: bench_run LOG OUTPUT INPUT command...
bench_run() {
	local log=$1 out=$2 in=$3
	shift 3
	rm -f "$out"
	sync
	settle
	warm "$in"
	/usr/bin/time -a -o "$log" -f '%e %M %U %S' "$@" >&2
}

# Prints "best_wall median_wall median_cpu max_rss_kib" over the runs in LOG (cpu = user + sys).
summarize() {
	local walls
	walls=$(awk '{ print $1 }' "$1" | sort -g)
	echo "$(head -1 <<<"$walls") $(median <<<"$walls") $(awk '{ print $3 + $4 }' "$1" | median)" \
		"$(awk '$2 > m { m = $2 } END { print m }' "$1")"
}

# Median of the numbers on stdin (RUNS is odd by default; an even count takes the upper one).
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1] }'; }

size_of() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# Throughput in MB/s (10^6 bytes) of the input size over a wall time.
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# Prints one table row: tool, best and median wall, MB/s (of INPUT_BYTES, at the best wall),
# median CPU, peak RSS, output size.  usage: row TOOL INPUT_BYTES LOG OUTPUT
row() {
	local best med cpu rss
	read -r best med cpu rss < <(summarize "$3")
	printf '| %-26s | %6.2f | %6.2f | %5s | %6.2f | %7s | %7s |\n' "$1" "$best" "$med" "$(mbps "$2" "$best")" \
		"$cpu" "$(mib $((rss * 1024)))" "$(mib "$(size_of "$4")")"
}
header() {
	printf '| %-26s | %6s | %6s | %5s | %6s | %7s | %7s |\n' tool "best s" "median" "MB/s" "CPU s" "RSS MiB" "out MiB"
	printf '|%s|%s|%s|%s|%s|%s|%s|\n' ---------------------------- -------- -------- ------- -------- --------- ---------
}
# usage: verdict DESCRIPTION CONDITION_AS_AWK_EXPRESSION
verdict() { awk "BEGIN { exit !($2) }" && echo "PASS  $1" || echo "FAIL  $1"; }

# A multicast lab: LAB_HOSTS (server, c1, ...) each in a network namespace of its own on one
# bridge without IGMP snooping, host i at NET.(i/200).(i%200+1)/16 with the multicast route on
# eth0. `on HOST CMD...` runs a command in one. On exit everything running there is killed and
# the namespaces deleted, after the script's own `lab_cleanup`, if it has one.
# usage: lab_up PREFIX NET HOST...   (NET as "10.78")
lab_up() {
	LAB=$1
	local net=$2 i=0 host ns
	shift 2
	trap lab_down EXIT
	ip netns add "$LAB-net"
	ip -n "$LAB-net" link add br0 type bridge mcast_snooping 0
	ip -n "$LAB-net" link set br0 up
	for host in "$@"; do
		ns=$LAB-$host
		ip netns add "$ns"
		ip link add "$LAB$i" type veth peer name eth0 netns "$ns"
		ip link set "$LAB$i" netns "$LAB-net"
		ip -n "$LAB-net" link set "$LAB$i" master br0 up
		ip -n "$ns" addr add "$net.$((i / 200)).$((i % 200 + 1))/16" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" link set lo up
		ip -n "$ns" route add 224.0.0.0/4 dev eth0
		i=$((i + 1))
	done
}
lab_down() {
	local ns
	for ns in $(ip netns list | awk -v p="$LAB-" 'index($1, p) == 1 { print $1 }'); do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
		ip netns del "$ns" 2>/dev/null || true
	done
	if declare -F lab_cleanup >/dev/null; then lab_cleanup; fi
}
on() { local h=$1; shift; ip netns exec "$LAB-$h" "$@"; }
