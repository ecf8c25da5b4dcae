#!/usr/bin/env bash
# asr restore of the scanned corpus image to a file, verify included, against dmg2img followed
# by sha256sum of its output; and the same restore from nginx on 127.0.0.1 against the local
# file. Targets: >= 2x dmg2img + sha256sum, HTTP >= 0.8x local, peak RSS < 256 MiB.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

need mke2fs:e2fsprogs /usr/bin/time:time dmg2img:dmg2img nginx:nginx-light
need_asr
"$BENCH/corpus.sh" >&2

dmg=$WORK/corpus.dmg scanned=$WORK/restore.dmg
if ! [ "$scanned" -nt "$CORPUS" ] || ! [ "$scanned" -nt "$ASR" ]; then
	"$ASR" create --source "$CORPUS" --output "$scanned" --overwrite >&2
	"$ASR" imagescan --source "$scanned" >/dev/null
fi

# nginx serving bench/work on a free loopback port, stopped on exit.
ngx=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$ngx/nginx.conf" <<CONF
daemon off; worker_processes 2; pid $ngx/pid; error_log $ngx/error.log; user root;
events {}
http { access_log off; sendfile on; client_body_temp_path $ngx/body;
       server { listen 127.0.0.1:$port; root $WORK; } }
CONF
nginx -c "$ngx/nginx.conf" &
ngx_pid=$!
trap 'kill $ngx_pid 2>/dev/null; wait $ngx_pid 2>/dev/null; rm -rf "$ngx"' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port/restore.dmg

ours=$WORK/restore-asr.raw theirs=$WORK/restore-dmg2img.raw http=$WORK/restore-http.raw
rm -f "$WORK"/restore-*.log
for ((i = 1; i <= RUNS; i++)); do
	bench_run "$WORK/restore-asr.log" "$ours" "$scanned" "$ASR" restore --source "$scanned" --target "$ours" --erase --noprompt
	bench_run "$WORK/restore-pipe.log" "$theirs" "$scanned" sh -c 'dmg2img -s -i "$1" -o "$2" && sha256sum "$2" >/dev/null' sh "$scanned" "$theirs"
	bench_run "$WORK/restore-http.log" "$http" "$scanned" "$ASR" restore --source "$url" --target "$http" --erase --noprompt
done

want=$(sha256sum <"$CORPUS" | cut -d' ' -f1)
for f in "$ours" "$theirs" "$http"; do
	[ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$want" ] || { echo "FAIL  $f differs from the corpus" >&2; exit 1; }
done

bytes=$(size_of "$CORPUS")
read -r asr_best asr_med _ asr_rss < <(summarize "$WORK/restore-asr.log")
read -r pipe_best pipe_med _ _ < <(summarize "$WORK/restore-pipe.log")
read -r http_best http_med _ http_rss < <(summarize "$WORK/restore-http.log")

echo "## restore: $(mib "$(size_of "$scanned")") MiB scanned UDZO image to a $(mib "$bytes") MiB file, best and median of $RUNS runs"
header
row "asr restore (with verify)" "$bytes" "$WORK/restore-asr.log" "$ours"
row "dmg2img && sha256sum" "$bytes" "$WORK/restore-pipe.log" "$theirs"
row "asr restore from nginx" "$bytes" "$WORK/restore-http.log" "$http"
echo
echo "all three outputs have the corpus's sha256"
echo "speed ratio (dmg2img+sha256sum / asr): $(ratio "$pipe_best" "$asr_best")x best, $(ratio "$pipe_med" "$asr_med")x median"
echo "HTTP / local speed: $(ratio "$asr_best" "$http_best")x best, $(ratio "$asr_med" "$http_med")x median"
verdict "asr restore at least 2x dmg2img + sha256sum ($(ratio "$pipe_best" "$asr_best")x)" "$pipe_best / $asr_best >= 2"
verdict "restore from nginx at least 0.8x local ($(ratio "$asr_best" "$http_best")x)" "$asr_best / $http_best >= 0.8"
verdict "asr restore peak RSS below 256 MiB ($(mib $((asr_rss * 1024))) MiB local, $(mib $((http_rss * 1024))) MiB HTTP)" "$asr_rss < 262144 && $http_rss < 262144"
