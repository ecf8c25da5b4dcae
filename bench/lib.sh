# Shared helpers for the bench scripts; sourced, not run.
# Paths are absolute so a script can be started from any directory.
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
WORK=$BENCH/work
CORPUS=$WORK/corpus.raw
ASR=${ASR:-$ROOT/.build-release/release/asr}
RUNS=${RUNS:-3}
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

# Runs a command under /usr/bin/time and prints "wall_seconds peak_rss_kib".
# Output of the command itself goes to stderr so it does not mix with the figures.
timed() {
	local t
	t=$(mktemp)
	/usr/bin/time -f '%e %M' -o "$t" "$@" >&2
	cat "$t"
	rm -f "$t"
}

# Median of the numbers on stdin (RUNS is odd by default; an even count takes the upper one).
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1] }'; }

size_of() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# Throughput in MB/s (10^6 bytes) of the input size over a wall time.
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
