#!/usr/bin/env bash
# Event loop under raw-cache triggers: the p99 latency of intercepted requests
# (GET /v2/images/{id}, which the proxy reads and enriches) measured with wrk through the proxy
# while a second load generator uploads 200 images a minute through the same proxy
# (bench/eventloop-uploads.js, 64 KiB each), with the raw cache off and on (SQLite queue: every
# upload commits a trigger with synchronous=FULL, by the writer thread), side by side in one run,
# against the trivial upstream of bench/fast-upstream.js (so the proxy's own cost shows). Each
# figure is the median of interleaved rounds. Writes the "Event loop under raw-cache triggers"
# section of bench/RESULTS.md (replacing the one a previous run wrote); raw outputs in bench/out/eventloop/.
#
#   usage: bash bench/eventloop.sh    (about 2 minutes)
#   knobs: BENCH_ROUNDS (5), BENCH_WRK_SECONDS (10), BENCH_CONNECTIONS (8), BENCH_UPLOADS_PER_MIN (200)
#
# Pinning: wrk, the upload generator and the trivial upstream on CPU0, the proxies on CPU1.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/eventloop
ROUNDS=${BENCH_ROUNDS:-5}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-8}
RATE=${BENCH_UPLOADS_PER_MIN:-200}
LOAD_CPU=0
PROXY_CPU=1
VARIANTS=(off on)
# shellcheck source=bench/lib.sh
source bench/lib.sh
rm -rf "$OUT"
mkdir -p "$OUT/on"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs for the pinning"
for tool in wrk taskset curl jq; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
taskset -pc "$LOAD_CPU" $$ >/dev/null
log "building"
npm run --silent build >"$OUT/build.log" 2>&1 || die "npm run build failed, see $OUT/build.log"

read -r FAST_PORT OFF_PORT ON_PORT < <(node bench/free-ports.js 3)
FAST=http://127.0.0.1:$FAST_PORT
start fast-upstream "$LOAD_CPU" node bench/fast-upstream.js "$FAST_PORT"
wait_http "$FAST/" "${pids[-1]}"
cat >"$OUT/on/config.json" <<JSON
{"rawcache": {"enabled": true, "queue": {"backend": "sqlite", "sqlite_path": "$PWD/$OUT/on/queue.sqlite"},
  "trigger": {"spool_dir": "$PWD/$OUT/on/spool"}}}
JSON
export STX_GLANCE_PROXY_OPS_LISTEN=
declare -A PORT=([off]=$OFF_PORT [on]=$ON_PORT) PID
start off "$PROXY_CPU" node dist/cli.js serve --upstream "$FAST" --listen "127.0.0.1:$OFF_PORT"
PID[off]=${pids[-1]}
start on "$PROXY_CPU" node dist/cli.js serve --upstream "$FAST" --listen "127.0.0.1:$ON_PORT" --config "$OUT/on/config.json"
PID[on]=${pids[-1]}
for v in "${VARIANTS[@]}"; do wait_http "http://127.0.0.1:${PORT[$v]}/versions" "${PID[$v]}"; done

RESULTS=$OUT/results.jsonl
cat >"$tmp/get.lua" <<'LUA'
request = function() return wrk.format("GET", "/v2/images/b0d57dd6-d5e0-4e55-bbf5-5c32deddfecd") end
dofile("bench/wrk-summary.lua")
LUA
for v in "${VARIANTS[@]}"; do wrk -t1 -c"$CONNS" -d2s -s "$tmp/get.lua" "http://127.0.0.1:${PORT[$v]}" >/dev/null; done
for ((round = 1; round <= ROUNDS; round++)); do
  for ((i = 0; i < 2; i++)); do
    v=${VARIANTS[$(((i + round) % 2))]}
    log "round $round: raw cache $v"
    node bench/eventloop-uploads.js "http://127.0.0.1:${PORT[$v]}" "$RATE" "$WRK_SECONDS" >"$OUT/$v-r$round-uploads.json" &
    uploader=$!
    wrk -t1 -c"$CONNS" -d"${WRK_SECONDS}s" --latency -s "$tmp/get.lua" "http://127.0.0.1:${PORT[$v]}" >"$OUT/$v-r$round.txt"
    wait "$uploader"
    summary=$(sed -n 's/^WRK_JSON //p' "$OUT/$v-r$round.txt")
    [ -n "$summary" ] || die "wrk gave no summary, see $OUT/$v-r$round.txt"
    printf '{"variant":"%s","round":%d,"wrk":%s,"uploads":%s}\n' "$v" "$round" "$summary" "$(cat "$OUT/$v-r$round-uploads.json")" >>"$RESULTS"
  done
done
JOBS=$(node -e 'const D = require("better-sqlite3"); const db = new D(process.argv[1], { readonly: true }); console.log(db.prepare("SELECT count(*) AS n FROM jobs").get().n)' "$OUT/on/queue.sqlite")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
FINISHED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

med() { jq -r --arg v "$1" "select(.variant == \$v) | $2" "$RESULTS" | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
all() { jq -r --arg v "$1" "select(.variant == \$v) | $2" "$RESULTS" | awk '{ printf "%s%.2f", (NR > 1 ? ", " : ""), $1 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
P99_OFF=$(med off '.wrk.p99_us / 1000'); P99_ON=$(med on '.wrk.p99_us / 1000')
P50_OFF=$(med off '.wrk.p50_us / 1000'); P50_ON=$(med on '.wrk.p50_us / 1000')
RPS_OFF=$(med off '.wrk.requests / (.wrk.duration_us / 1e6)'); RPS_ON=$(med on '.wrk.requests / (.wrk.duration_us / 1e6)')
UP_OFF=$(jq -s '[.[] | select(.variant == "off") | .uploads.uploads] | add' "$RESULTS"); UP_ON=$(jq -s '[.[] | select(.variant == "on") | .uploads.uploads] | add' "$RESULTS")
FAIL=$(jq -s '[.[] | .uploads.failed] | add' "$RESULTS")
section=$(mktemp)
cat >"$section" <<SECTION
<!-- eventloop:begin (written by bench/eventloop.sh; a new run replaces this section) -->
## Event loop under raw-cache triggers

\`bash bench/eventloop.sh\` (BENCH_ROUNDS=$ROUNDS, BENCH_WRK_SECONDS=$WRK_SECONDS, BENCH_CONNECTIONS=$CONNS, BENCH_UPLOADS_PER_MIN=$RATE), run $STARTED to $FINISHED, commit $(git rev-parse --short HEAD).
Load average before/after: $LOAD_BEFORE / $LOAD_AFTER (a shared 2-vCPU VM).

wrk, $CONNS connections, \`GET /v2/images/{id}\` (read and enriched by the proxy) through the proxy
pinned to CPU1, against the trivial upstream, while \`bench/eventloop-uploads.js\` uploads $RATE images
a minute (64 KiB each, a new image id each) through the same proxy. Raw cache off: no trigger;
on: SQLite queue, each upload's trigger committed with synchronous=FULL by the writer thread
($JOBS jobs in the queue at the end, $UP_ON uploads answered; off: $UP_OFF; failed uploads: $FAIL).
Medians of $ROUNDS interleaved rounds (each round's value in brackets).

| raw cache | GET p99 | GET p50 | GETs/s |
|---|---:|---:|---:|
| off | $P99_OFF ms [$(all off '.wrk.p99_us / 1000')] | $P50_OFF ms | $RPS_OFF |
| on | $P99_ON ms [$(all on '.wrk.p99_us / 1000')] | $P50_ON ms | $RPS_ON |
| on / off | $(ratio "$P99_ON" "$P99_OFF") | $(ratio "$P50_ON" "$P50_OFF") | $(ratio "$RPS_ON" "$RPS_OFF") |

Raw outputs: bench/out/eventloop/.
<!-- eventloop:end -->
SECTION
write_section eventloop "$section"
rm -f "$section"
log "done: the Event loop section of bench/RESULTS.md"
