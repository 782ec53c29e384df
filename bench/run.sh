#!/usr/bin/env bash
# Measures stx-glance-proxy side by side with direct access and with a plain nginx reverse proxy,
# on 127.0.0.1 only: metadata GETs and image data against a real Glance, the same against a
# trivial upstream (so Glance's own cost does not hide the proxy's), and the proxy's memory
# during 2 GiB transfers. Writes bench/RESULTS.md; raw outputs go to bench/out/.
#
#   usage: npm run bench        (about 7 minutes on 2 vCPUs)
#   knobs: BENCH_ROUNDS (5), BENCH_WRK_SECONDS (4), for quick trial runs only.
#
# Pinning (the method that gave stable ratios on a 2-vCPU VM): this script and everything it
# runs (wrk, curl, Glance, the trivial upstream behind the proxies) stay on CPU0; the server under
# test (the proxy, nginx, or for "direct" against the trivial upstream a second copy of it) runs
# alone on CPU1. Only the ratios between paths measured in the same run mean much.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=bench/out
ROUNDS=${BENCH_ROUNDS:-5}
WRK_SECONDS=${BENCH_WRK_SECONDS:-4}
GLANCE_DATA_BYTES=$((512 << 20))
FAST_UPLOAD_BYTES=$((1 << 30))
FAST_DOWNLOAD_BYTES=$((2 << 30))
BIG_BYTES=$((2 << 30))
# The download in the memory test is held to this rate so the client, not Glance, is the slow
# side: a proxy that ignored backpressure would then have to buffer what Glance sends.
SLOW_CLIENT_MIBS=256
LOAD_CPU=0
PROXY_CPU=1


# Logging, and every process started here remembered by PID and stopped on any exit.
# shellcheck source=bench/lib.sh
source bench/lib.sh

start_proxy() {
  local name=$1 upstream=$2 port=$3
  # Several proxies run at once: none opens the ops listener, which would all want 127.0.0.1:9293.
  start "$name" "$PROXY_CPU" env STX_GLANCE_PROXY_OPS_LISTEN= node dist/cli.js serve --upstream "$upstream" --listen "127.0.0.1:$port"
  wait_http "http://127.0.0.1:$port/versions" "${pids[-1]}"
}

# ---- preparation ------------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
CPUS=$(nproc)
[ "$CPUS" -ge 2 ] || die "needs 2 CPUs for the pinning (nproc=$CPUS)"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# Other work on the machine shows up in the figures; the report states it.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
taskset -pc "$LOAD_CPU" $$ >/dev/null
if [ -x scripts/ensure-system-deps.sh ]; then bash scripts/ensure-system-deps.sh glance bench; fi
for tool in wrk nginx curl taskset glance-api qemu-img; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/ensure-system-deps.sh glance bench)"
done
# Glance keeps its store under the temp dir: a 2 GiB image plus two 512 MiB ones at most.
free_gib=$(df --output=avail -BG "${TMPDIR:-/tmp}" | tail -1 | tr -dc 0-9)
[ "$free_gib" -ge 4 ] || die "needs 4 GiB free in ${TMPDIR:-/tmp} (has ${free_gib} GiB)"

log "building"
npm run --silent build >"$OUT/build.log" 2>&1 || die "npm run build failed, see $OUT/build.log"

read -r PROXY_PORT PROXY_FAST_PORT NGINX_PORT NGINX_FAST_PORT FAST_PORT FAST_DIRECT_PORT RSS_PROXY_PORT BARE_PORT BARE_FAST_PORT \
  < <(node bench/free-ports.js 9)

log "starting Glance, the trivial upstreams, the proxies and nginx"
start_holder Glance "$OUT/glance.json" 90 node bench/glance.js
GLANCE=$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).url' "$OUT/glance.json")
FAST=http://127.0.0.1:$FAST_PORT

start fast-upstream "$LOAD_CPU" node bench/fast-upstream.js "$FAST_PORT"
wait_http "$FAST/" "${pids[-1]}"
start fast-upstream-direct "$PROXY_CPU" node bench/fast-upstream.js "$FAST_DIRECT_PORT"
wait_http "http://127.0.0.1:$FAST_DIRECT_PORT/" "${pids[-1]}"
start_proxy proxy "$GLANCE" "$PROXY_PORT"
start_proxy proxy-fast "$FAST" "$PROXY_FAST_PORT"

# The bare relays (bench/bare-relay.js): the streams' baseline for what any Node relay costs.
start bare-relay "$PROXY_CPU" node bench/bare-relay.js "$BARE_PORT" "$GLANCE"
wait_http "http://127.0.0.1:$BARE_PORT/versions" "${pids[-1]}"
start bare-relay-fast "$PROXY_CPU" node bench/bare-relay.js "$BARE_FAST_PORT" "$FAST"
wait_http "http://127.0.0.1:$BARE_FAST_PORT/" "${pids[-1]}"

mkdir -p "$tmp/nginx/logs"
sed -e "s|@GLANCE@|${GLANCE#http://}|; s|@FAST@|127.0.0.1:$FAST_PORT|" \
  -e "s|@NGINX_PORT@|$NGINX_PORT|; s|@NGINX_FAST_PORT@|$NGINX_FAST_PORT|" \
  -e "s|@OUT@|$PWD/$OUT|g; s|@TMP@|$tmp/nginx|g" bench/nginx.conf.in >"$OUT/nginx.conf"
start nginx "$PROXY_CPU" nginx -p "$tmp/nginx" -c "$PWD/$OUT/nginx.conf"
wait_http "http://127.0.0.1:$NGINX_PORT/versions" "${pids[-1]}"

declare -A GLANCE_VIA=([direct]=$GLANCE [nginx]=http://127.0.0.1:$NGINX_PORT [bare]=http://127.0.0.1:$BARE_PORT [proxy]=http://127.0.0.1:$PROXY_PORT)
declare -A FAST_VIA=([direct]=http://127.0.0.1:$FAST_DIRECT_PORT [nginx]=http://127.0.0.1:$NGINX_FAST_PORT [bare]=http://127.0.0.1:$BARE_FAST_PORT [proxy]=http://127.0.0.1:$PROXY_FAST_PORT)
TARGETS=(direct nginx proxy)
# Streams also go through the bare relay.
STREAM_TARGETS=(direct nginx bare proxy)

# ---- Glance helpers (setup traffic goes straight to Glance, it is not measured) ---------------
json_field() { node -p "JSON.parse(require('fs').readFileSync(0, 'utf8'))[process.argv[1]]" "$1"; }

create_image() {
  curl -sSf -X POST -H 'Content-Type: application/json' -d "$1" "$GLANCE/v2/images" | json_field id
}

delete_image() { curl -sSf -o /dev/null -X DELETE "$GLANCE/v2/images/$1"; }

image_size() { curl -sSf "$GLANCE/v2/images/$1" | json_field size; }

RESULTS=$OUT/results.jsonl
record() { printf '%s\n' "$1" >>"$RESULTS"; }

# ---- measurements -----------------------------------------------------------------------------
# wrk_rounds SECTION CONNECTIONS PATH and the base URLs in the associative array named by VIA:
# one discarded warm-up per target, then ROUNDS rounds, each visiting every target once in a
# rotated order so a slow phase of the shared VM does not always hit the same one.
wrk_rounds() {
  local section=$1 conns=$2 path=$3
  local -n via=$4
  local target round i file summary
  for target in "${TARGETS[@]}"; do
    wrk -t1 -c"$conns" -d1s "${via[$target]}$path" >/dev/null
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
      target=${TARGETS[$(((i + round - 1) % ${#TARGETS[@]}))]}
      file=$OUT/$section-$target-r$round.txt
      wrk -t1 -c"$conns" -d"${WRK_SECONDS}s" --latency -s bench/wrk-summary.lua \
        "${via[$target]}$path" >"$file"
      summary=$(sed -n 's/^WRK_JSON //p' "$file")
      [ -n "$summary" ] || die "wrk gave no summary for $section via $target, see $file"
      record "{\"kind\":\"wrk\",\"section\":\"$section\",\"target\":\"$target\",\"round\":$round,\"connections\":$conns,\"wrk\":$summary}"
    done
  done
}

# transfer SECTION TARGET OP ROUND BYTES CURL-ARGS... : one curl transfer, its speed recorded.
# A download goes to /dev/null; an upload's answer is kept for the error message.
transfer() {
  local section=$1 target=$2 op=$3 round=$4 bytes=$5
  shift 5
  local status speed body=$tmp/body
  [ "$op" = download ] && body=/dev/null
  : >"$tmp/body"
  read -r status speed < <(curl -sS -o "$body" \
    -w '%{http_code} %{speed_upload} %{speed_download}\n' "$@" | awk '{ print $1, ($2 > $3 ? $2 : $3) }')
  case "$status" in 2??) ;; *) die "$section $target $op: HTTP $status: $(head -c 300 "$tmp/body")" ;; esac
  record "{\"kind\":\"transfer\",\"section\":\"$section\",\"target\":\"$target\",\"op\":\"$op\",\"round\":$round,\"bytes\":$bytes,\"bytes_per_s\":$speed}"
}

# upload_to_glance TARGET OP ROUND FILE [CURL-ARGS...] : a fresh image per upload, checked, deleted.
upload_to_glance() {
  local target=$1 op=$2 round=$3 file=$4
  shift 4
  local id bytes size
  id=$(create_image '{"name": "bench-upload", "disk_format": "raw", "container_format": "bare"}')
  bytes=$(stat -c %s "$file")
  transfer data-glance "$target" "$op" "$round" "$bytes" -X PUT -H 'Content-Type: application/octet-stream' \
    "$@" -T "$file" "${GLANCE_VIA[$target]}/v2/images/$id/file"
  size=$(image_size "$id")
  [ "$size" = "$bytes" ] || die "upload $op via $target: Glance stored $size bytes of $bytes"
  delete_image "$id"
}

truncate -s "$GLANCE_DATA_BYTES" "$tmp/glance-data.img"
truncate -s "$FAST_UPLOAD_BYTES" "$tmp/fast-data.img"
truncate -s "$BIG_BYTES" "$tmp/big.img"

log "seeding Glance"
SHOW_ID=$(create_image '{"name": "cirros-bench", "disk_format": "qcow2", "container_format": "bare", "visibility": "public", "os_distro": "cirros", "os_version": "0.6.2", "hw_disk_bus": "virtio", "hw_vif_model": "virtio", "cache_raw": "True", "hw_wrs_live_migration_timeout": "400", "description": "benchmark image", "tags": ["bench", "cirros"]}')
qemu-img create -q -f qcow2 "$tmp/tiny.qcow2" 16M
curl -sSf -X PUT -H 'Content-Type: application/octet-stream' -T "$tmp/tiny.qcow2" "$GLANCE/v2/images/$SHOW_ID/file"
DOWNLOAD_ID=$(create_image '{"name": "bench-download", "disk_format": "raw", "container_format": "bare"}')
curl -sSf -X PUT -H 'Content-Type: application/octet-stream' -T "$tmp/glance-data.img" "$GLANCE/v2/images/$DOWNLOAD_ID/file"
for target in "${TARGETS[@]}"; do
  curl -sSf -o "$OUT/show-$target.json" "${GLANCE_VIA[$target]}/v2/images/$SHOW_ID"
  curl -sSf -o "$OUT/show-fast-$target.json" "${FAST_VIA[$target]}/v2/images/$SHOW_ID"
done

log "1/4 GET /v2/images/{id} on Glance: ${ROUNDS} rounds x ${WRK_SECONDS} s per path"
wrk_rounds get-glance 8 "/v2/images/$SHOW_ID" GLANCE_VIA

log "2/4 image data on Glance: $((GLANCE_DATA_BYTES >> 20)) MiB up (chunked, Content-Length) and down"
for ((round = 1; round <= ROUNDS; round++)); do
  for target in "${STREAM_TARGETS[@]}"; do
    upload_to_glance "$target" upload-chunked "$round" "$tmp/glance-data.img" -H 'Transfer-Encoding: chunked'
    upload_to_glance "$target" upload-length "$round" "$tmp/glance-data.img"
    transfer data-glance "$target" download "$round" "$GLANCE_DATA_BYTES" \
      "${GLANCE_VIA[$target]}/v2/images/$DOWNLOAD_ID/file"
  done
done
delete_image "$DOWNLOAD_ID"

log "3/4 trivial upstream: GET ${ROUNDS} rounds x ${WRK_SECONDS} s per path, then streams"
wrk_rounds get-fast 32 "/v2/images/$SHOW_ID" FAST_VIA
for ((round = 1; round <= ROUNDS; round++)); do
  for target in "${STREAM_TARGETS[@]}"; do
    base=${FAST_VIA[$target]}/v2/images/$SHOW_ID/file
    transfer data-fast "$target" upload-chunked "$round" "$FAST_UPLOAD_BYTES" -X PUT \
      -H 'Content-Type: application/octet-stream' -H 'Transfer-Encoding: chunked' -T "$tmp/fast-data.img" "$base"
    transfer data-fast "$target" upload-length "$round" "$FAST_UPLOAD_BYTES" -X PUT \
      -H 'Content-Type: application/octet-stream' -T "$tmp/fast-data.img" "$base"
    transfer data-fast "$target" download "$round" "$FAST_DOWNLOAD_BYTES" "$base?bytes=$FAST_DOWNLOAD_BYTES"
  done
done

log "4/4 proxy memory: 2 GiB up and down through a freshly started proxy"
start_proxy proxy-rss "$GLANCE" "$RSS_PROXY_PORT"
rss_pid=${pids[-1]}
rss_field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$rss_pid/status"; }
# sample_rss FILE : the proxy's VmRSS in KiB every 50 ms, until killed.
sample_rss() {
  while kill -0 "$rss_pid" 2>/dev/null; do
    rss_field VmRSS
    sleep 0.05
  done >"$1"
}
# rss_phase PHASE COMMAND... : the peak VmRSS seen while COMMAND runs.
rss_phase() {
  local phase=$1 sampler
  shift
  sample_rss "$OUT/rss-$phase.txt" &
  sampler=$!
  pids+=("$sampler")
  "$@"
  kill "$sampler"
  wait "$sampler" 2>/dev/null || true
  record "{\"kind\":\"rss\",\"phase\":\"$phase\",\"peak_kib\":$(sort -n "$OUT/rss-$phase.txt" | tail -1),\"samples\":$(wc -l <"$OUT/rss-$phase.txt")}"
}
record "{\"kind\":\"rss\",\"phase\":\"idle\",\"peak_kib\":$(rss_field VmRSS),\"samples\":1}"
BIG_ID=$(create_image '{"name": "bench-big", "disk_format": "raw", "container_format": "bare"}')
BIG_URL=http://127.0.0.1:$RSS_PROXY_PORT/v2/images/$BIG_ID/file
rss_phase upload transfer rss proxy upload-chunked 1 "$BIG_BYTES" -X PUT \
  -H 'Content-Type: application/octet-stream' -H 'Transfer-Encoding: chunked' -T "$tmp/big.img" "$BIG_URL"
[ "$(image_size "$BIG_ID")" = "$BIG_BYTES" ] || die "the 2 GiB upload did not store 2 GiB"
rss_phase download transfer rss proxy download 1 "$BIG_BYTES" --limit-rate "${SLOW_CLIENT_MIBS}M" "$BIG_URL"
record "{\"kind\":\"rss\",\"phase\":\"hwm\",\"peak_kib\":$(rss_field VmHWM),\"samples\":1}"
delete_image "$BIG_ID"

# ---- report -----------------------------------------------------------------------------------
cat >"$OUT/machine.json" <<EOF
{
  "started": "$STARTED",
  "finished": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "load_before": "$LOAD_BEFORE",
  "load_after": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "nproc": $CPUS,
  "cpu": "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)",
  "memory_gib": $(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo),
  "kernel": "$(uname -r)",
  "node": "$(node --version)",
  "nginx": "$(nginx -v 2>&1 | sed 's|.*/||')",
  "wrk": "$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')",
  "curl": "$(curl --version | awk 'NR == 1 { print $2 }')",
  "glance": "$(dpkg-query -W -f='${Version}' glance-api 2>/dev/null)",
  "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo none)",
  "rounds": $ROUNDS,
  "wrk_seconds": $WRK_SECONDS,
  "slow_client_mibs": $SLOW_CLIENT_MIBS
}
EOF
node bench/report.js "$OUT" bench/RESULTS.md
# The proxies log one line per request; keep only the end of those logs.
for f in "$OUT"/proxy*.log "$OUT"/nginx-access.log; do
  [ -f "$f" ] && tail -n 200 "$f" >"$tmp/tail" && mv "$tmp/tail" "$f"
done
log "done: bench/RESULTS.md"
