#!/usr/bin/env bash
# Durable raw-cache triggers: what committing each trigger with synchronous=FULL costs the proxy.
# Intercepted requests that record a trigger (PUT /v2/images/<id>/file, a new image id each time,
# a one-byte body, against the trivial upstream of bench/fast-upstream.js, which answers 204),
# measured with wrk through four proxies side by side in one run:
#   off          raw cache disabled: the same route with no trigger at all
#   normal       one SQLite upsert per trigger on the event loop, synchronous=NORMAL (the design
#                before the writer thread: not durable across a power loss)
#   full-inline  the same with synchronous=FULL: an fsync per trigger on the event loop
#   writer       `stx-glance-proxy serve` as shipped: FULL, committed by the writer thread, grouped
# The two inline variants run bench/trigger-proxy.js (same proxy, trigger and SQL statement).
# Each figure is the median of interleaved rounds in rotated order; ratios compare paths of the
# same run only. Besides wrk's figures, the proxy's own CPU time per request (all its threads, from
# /proc/PID/stat): on a shared VM it moves much less with the load than requests per second do. Writes the "Durable raw-cache triggers" section of bench/RESULTS.md (replacing the
# one a previous run wrote); raw outputs in bench/out/durable-trigger/.
#
#   usage: bash bench/durable-trigger.sh      (about 4 minutes on 2 vCPUs)
#   knobs: BENCH_ROUNDS (5), BENCH_WRK_SECONDS (4), BENCH_CONNECTIONS ("32 1")
#
# Pinning as in bench/run.sh: wrk and the trivial upstream on CPU0, the proxy under test on CPU1.
# The SQLite files are in bench/out/ (the repository's file system, not a tmpfs: fsync is real).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=bench/out/durable-trigger
ROUNDS=${BENCH_ROUNDS:-5}
WRK_SECONDS=${BENCH_WRK_SECONDS:-4}
CONNECTIONS=${BENCH_CONNECTIONS:-32 1}
LOAD_CPU=0
PROXY_CPU=1
VARIANTS=(off normal full-inline writer)

# shellcheck source=bench/lib.sh
source bench/lib.sh

rm -rf "$OUT"
mkdir -p "$OUT"
# Before the pinning below: nproc counts only the CPUs this process may run on.
CPUS=$(nproc)
[ "$CPUS" -ge 2 ] || die "needs 2 CPUs for the pinning (nproc=$CPUS)"
for tool in wrk taskset curl; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
taskset -pc "$LOAD_CPU" $$ >/dev/null

log "building"
npm run --silent build >"$OUT/build.log" 2>&1 || die "npm run build failed, see $OUT/build.log"

read -r FAST_PORT OFF_PORT NORMAL_PORT FULL_PORT WRITER_PORT < <(node bench/free-ports.js 5)
FAST=http://127.0.0.1:$FAST_PORT
start fast-upstream "$LOAD_CPU" node bench/fast-upstream.js "$FAST_PORT"
wait_http "$FAST/" "${pids[-1]}"

declare -A PORT=([off]=$OFF_PORT [normal]=$NORMAL_PORT [full-inline]=$FULL_PORT [writer]=$WRITER_PORT)
for variant in "${VARIANTS[@]}"; do mkdir -p "$OUT/$variant"; done
cat >"$OUT/writer/config.json" <<EOF
{"rawcache": {"enabled": true, "queue": {"backend": "sqlite", "sqlite_path": "$PWD/$OUT/writer/queue.sqlite"},
  "trigger": {"spool_dir": "$PWD/$OUT/writer/spool"}}}
EOF
# No ops listener: several proxies run at once.
export STX_GLANCE_PROXY_OPS_LISTEN=
declare -A PID
start off "$PROXY_CPU" node dist/cli.js serve --upstream "$FAST" --listen "127.0.0.1:$OFF_PORT"
PID[off]=${pids[-1]}
start normal "$PROXY_CPU" node bench/trigger-proxy.js normal "$FAST" "127.0.0.1:$NORMAL_PORT" "$OUT/normal"
PID[normal]=${pids[-1]}
start full-inline "$PROXY_CPU" node bench/trigger-proxy.js full "$FAST" "127.0.0.1:$FULL_PORT" "$OUT/full-inline"
PID[full-inline]=${pids[-1]}
start writer "$PROXY_CPU" node dist/cli.js serve --upstream "$FAST" --listen "127.0.0.1:$WRITER_PORT" --config "$OUT/writer/config.json"
PID[writer]=${pids[-1]}
for variant in "${VARIANTS[@]}"; do wait_http "http://127.0.0.1:${PORT[$variant]}/versions" "${PID[$variant]}"; done

RESULTS=$OUT/results.jsonl
CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID: user + system CPU time of the process, every thread included (the writer's too).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
run=0
# wrk_once VARIANT CONNECTIONS SECONDS FILE: one wrk run, with image ids no other run uses.
wrk_once() {
  run=$((run + 1))
  wrk -t1 -c"$2" -d"${3}s" --latency -s bench/wrk-upload-trigger.lua \
    "http://127.0.0.1:${PORT[$1]}" -- "$(printf '%08x' "$run")" >"$4"
}
for conns in $CONNECTIONS; do
  log "$conns connection(s): ${ROUNDS} rounds x ${WRK_SECONDS} s per variant"
  # One warm-up per variant (round 0: counted in the jobs check below, not in the figures).
  for variant in "${VARIANTS[@]}"; do
    file=$OUT/$variant-c$conns-warmup.txt
    wrk_once "$variant" "$conns" 1 "$file"
    printf '{"variant":"%s","connections":%d,"round":0,"wrk":%s}\n' "$variant" "$conns" "$(sed -n 's/^WRK_JSON //p' "$file")" >>"$RESULTS"
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < ${#VARIANTS[@]}; i++)); do
      variant=${VARIANTS[$(((i + round - 1) % ${#VARIANTS[@]}))]}
      file=$OUT/$variant-c$conns-r$round.txt
      before=$(cpu_ticks "${PID[$variant]}")
      wrk_once "$variant" "$conns" "$WRK_SECONDS" "$file"
      after=$(cpu_ticks "${PID[$variant]}")
      summary=$(sed -n 's/^WRK_JSON //p' "$file")
      [ -n "$summary" ] || die "wrk gave no summary for $variant, see $file"
      record="{\"variant\":\"$variant\",\"connections\":$conns,\"round\":$round,\"cpu_s\":$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { print t / hz }'),\"wrk\":$summary}"
      printf '%s\n' "$record" >>"$RESULTS"
    done
  done
done

# Every answered request must have left its job in the queue (or the spool): count them.
for variant in normal full-inline writer; do
  jobs=$(node -e 'const D = require("better-sqlite3"); const db = new D(process.argv[1], { readonly: true }); console.log(db.prepare("SELECT count(*) AS n FROM jobs").get().n)' "$OUT/$variant/queue.sqlite")
  printf '{"variant":"%s","jobs":%d}\n' "$variant" "$jobs" >>"$OUT/jobs.jsonl"
done

cat >"$OUT/machine.json" <<EOF
{"started": "$STARTED", "finished": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "load_before": "$LOAD_BEFORE",
 "load_after": "$(cut -d' ' -f1-3 /proc/loadavg)", "nproc": $CPUS,
 "cpu": "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)", "kernel": "$(uname -r)", "node": "$(node --version)",
 "fs": "$(findmnt -n -o FSTYPE -T "$OUT")", "rounds": $ROUNDS, "wrk_seconds": $WRK_SECONDS,
 "commit": "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench 2>/dev/null || echo ' with uncommitted changes')"}
EOF
node bench/durable-trigger-report.js "$OUT" bench/RESULTS.md
log "done: the Durable raw-cache triggers section of bench/RESULTS.md"
