#!/usr/bin/env bash
# Raw cache: how long `stx-glance-proxy worker` takes to make the RAW copy of a 1 GiB qcow2 full of
# data, from the end of its upload (the 204 through the proxy) until the image shows
# cache_raw_status Cached, next to a bare `qemu-img convert -O raw` of the same qcow2 into the same
# target (for rbd, plus `rbd snap create` and `rbd snap protect`), for the file and the rbd target,
# in one run. Each figure is the median of BENCH_RAWCACHE_ROUNDS rounds. Writes the "Raw cache"
# section of bench/RESULTS.md (replacing the one a previous run wrote); raw outputs in bench/out/rawcache/.
#
#   usage: bash bench/rawcache.sh     (about 3 to 10 minutes on 2 vCPUs; gives up after 20)
#   knobs: BENCH_RAWCACHE_ROUNDS (3)
#
# Everything runs on 127.0.0.1: a single-node Ceph (memstore: its data lives in RAM) and a real
# Glance (default backend `ceph`, plus a file backend `fs`) held by bench/rawcache-services.js, the
# proxy, and one worker at a time with the SQLite queue. The file target's images are uploaded to
# Glance's file backend, whose directory the worker shares (rawcache.target.file_source_dirs: it
# converts Glance's file in place); the rbd target's to its Ceph backend (the worker converts the
# snapshot in place, rbd: source), as each would be deployed. Both hash the data beside the convert.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=bench/out/rawcache
ROUNDS=${BENCH_RAWCACHE_ROUNDS:-3}
IMAGE_MIB=1024
IMAGE_BYTES=$((IMAGE_MIB << 20))
STOP_AFTER_S=1200
POLL_S=0.05

check_time() { [ "$SECONDS" -lt "$STOP_AFTER_S" ] || die "still running after ${STOP_AFTER_S} s: giving up"; }

# Logging, and every process started here remembered by PID and stopped on any exit.
# shellcheck source=bench/lib.sh
source bench/lib.sh

now() { date +%s.%N; }
# elapsed FROM TO: seconds between two `now` values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# timed COMMAND...: runs COMMAND, prints how many seconds it took.
timed() {
  local t0
  t0=$(now)
  "$@" >/dev/null
  elapsed "$t0" "$(now)"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# ---- preparation ------------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -x scripts/ensure-system-deps.sh ]; then bash scripts/ensure-system-deps.sh glance ceph >&2; fi
for tool in curl jq qemu-img qemu-io rbd ceph glance-api sha512sum; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/ensure-system-deps.sh glance ceph)"
done
require_room 6 6

log "building"
npm run --silent build >"$OUT/build.log" 2>&1 || die "npm run build failed, see $OUT/build.log"

log "making a ${IMAGE_MIB} MiB qcow2 full of data (qemu-io writes, 8 patterns)"
SRC=$tmp/source.qcow2
qemu-img create -q -f qcow2 "$SRC" "${IMAGE_MIB}M"
chunk=$((IMAGE_MIB / 8))
writes=()
for i in $(seq 0 7); do writes+=(-c "write -q -P $((0x31 + i)) $((i * chunk))M ${chunk}M"); done
qemu-io -f qcow2 "${writes[@]}" "$SRC"
SRC_BYTES=$(stat -c %s "$SRC")

log "starting Ceph and Glance"
start_holder "Ceph and Glance" "$OUT/services.json" 180 node bench/rawcache-services.js
GLANCE=$(jq -r .glance_url "$OUT/services.json")
STORE_DIR=$(jq -r .store_dir "$OUT/services.json")
CEPH_CONF=$(jq -r .ceph_conf "$OUT/services.json")
POOL=$(jq -r .pool "$OUT/services.json")
RBD_USER=$(jq -r .user "$OUT/services.json")
rbdc() { rbd --id "$RBD_USER" --conf "$CEPH_CONF" "$@"; }

read -r PROXY_PORT OPS_PORT < <(node bench/free-ports.js 2)
PROXY=http://127.0.0.1:$PROXY_PORT
RAW_DIR=$tmp/raw
mkdir -p "$RAW_DIR"
# config TARGET-JSON: one worker/proxy configuration; both share Glance and the queue.
config() {
  jq -n --arg glance "$GLANCE" --arg queue "$tmp/queue.sqlite" --arg work "$tmp/work" --argjson target "$1" '{
    upstream: $glance,
    log: { level: "info" },
    rawcache: {
      enabled: true,
      queue: { backend: "sqlite", sqlite_path: $queue },
      target: $target,
      worker: { concurrency: 1, work_dir: $work, reconcile_interval_seconds: 0 }
    }
  }'
}
# The worker shares Glance's file store (same host): it reads the images there in place.
config "$(jq -n --arg dir "$RAW_DIR" --arg store "$STORE_DIR" '{ kind: "file", file_dir: $dir, file_source_dirs: [$store] }')" >"$tmp/config-file.json"
config "$(jq -n --arg pool "$POOL" --arg user "$RBD_USER" --arg conf "$CEPH_CONF" \
  '{ kind: "rbd", rbd_pool: $pool, rbd_user: $user, ceph_conf: $conf }')" >"$tmp/config-rbd.json"

# No ops listener: its default port may be taken by a running `npm run stack`.
STX_GLANCE_PROXY_OPS_LISTEN= node dist/cli.js serve --config "$tmp/config-file.json" --listen "127.0.0.1:$PROXY_PORT" >"$OUT/proxy.log" 2>&1 &
pids+=($!)
wait_http "$PROXY/versions" "${pids[-1]}" 20

worker_pid=
start_worker() {
  STX_GLANCE_PROXY_WORKER_LISTEN=127.0.0.1:$OPS_PORT node dist/cli.js worker --config "$tmp/config-$1.json" >"$OUT/worker-$1.log" 2>&1 &
  worker_pid=$!
  pids+=("$worker_pid")
  wait_http "http://127.0.0.1:$OPS_PORT/healthcheck" "$worker_pid" 20
}
stop_worker() {
  kill "$worker_pid"
  wait "$worker_pid" 2>/dev/null || true
}

# ---- one measured round -----------------------------------------------------------------------
RESULTS=$OUT/results.jsonl
record() { printf '%s\n' "$1" >>"$RESULTS"; }

create_image() {
  curl -sSf -X POST -H 'Content-Type: application/json' \
    -d "{\"name\": \"bench-rawcache-$1\", \"disk_format\": \"qcow2\", \"container_format\": \"bare\", \"cache_raw\": \"True\"}" \
    "$PROXY/v2/images" | jq -r .id
}

# log_time TARGET ID MESSAGE: the worker's timestamp of its log line MESSAGE for image ID, in epoch seconds.
log_time() {
  local ts
  ts=$(jq -rR --arg id "$2" --arg m "$3" 'fromjson? | select((.image_id == $id or .imageId == $id) and .message == $m) | .timestamp' "$OUT/worker-$1.log" | tail -1)
  [ -n "$ts" ] || die "no '$3' line for $2 in $OUT/worker-$1.log"
  date -d "$ts" +%s.%N
}

copy_gone() {
  if [ "$1" = file ]; then
    [ ! -e "$RAW_DIR/$2.raw" ]
  else
    rbdc ls "$POOL" >"$tmp/pool-images"
    ! grep -q "^$2_raw" "$tmp/pool-images"
  fi
}

# worker_round TARGET ROUND: upload through the proxy, then poll until Cached; records the times.
worker_round() {
  local target=$1 round=$2 id store_header=() t0 t1 status image converting written cached
  [ "$target" = file ] && store_header=(-H 'X-Image-Meta-Store: fs')
  id=$(create_image "$target-$round")
  status=$(curl -sS -o "$tmp/upload-answer" -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
    "${store_header[@]}" -T "$SRC" "$PROXY/v2/images/$id/file")
  t0=$(now)
  [ "$status" = 204 ] || die "upload ($target) answered $status: $(head -c 300 "$tmp/upload-answer")"
  for (( ; ; )); do
    image=$(curl -sSf "$PROXY/v2/images/$id")
    status=$(jq -r '.cache_raw_status // "none"' <<<"$image")
    [ "$status" = Cached ] && break
    [ "$status" = Error ] && die "$target round $round ended in Error: $(jq -r .cache_raw_error <<<"$image")"
    check_time
    sleep "$POLL_S"
  done
  t1=$(now)
  [ "$(jq -r .cache_raw_size <<<"$image")" = "$IMAGE_BYTES" ] || die "$target: cache_raw_size is not $IMAGE_BYTES: $image"
  [ "$(jq -r .store <<<"$image")" = "$([ "$target" = file ] && echo file || echo rbd)" ] || die "$target: the image is not in the expected store: $image"
  converting=$(log_time "$target" "$id" 'converting to RAW')
  written=$(log_time "$target" "$id" 'raw copy written')
  cached=$(log_time "$target" "$id" 'raw copy cached')

  # The stages of the same job, run again one by one with the worker's own code while the image exists.
  node bench/rawcache-stages.js "$tmp/config-$target.json" "$id" >"$tmp/stages.json" || die "bench/rawcache-stages.js failed"

  curl -sSf -o /dev/null -X DELETE "$PROXY/v2/images/$id"
  until copy_gone "$target" "$id"; do check_time; sleep 0.2; done
  record "$(jq -cn --arg target "$target" --argjson round "$round" --arg id "$id" \
    --argjson total "$(elapsed "$t0" "$t1")" --argjson pickup "$(elapsed "$t0" "$converting")" \
    --argjson work "$(elapsed "$converting" "$written")" --argjson record "$(elapsed "$written" "$cached")" \
    --argjson seen "$(elapsed "$cached" "$t1")" --slurpfile stages "$tmp/stages.json" \
    '{kind: "worker", target: $target, round: $round, image_id: $id, total_s: $total, pickup_s: $pickup,
      work_s: $work, record_s: $record, seen_s: $seen} + $stages[0]')"
  log "  $target round $round: 204 -> Cached in $(elapsed "$t0" "$t1") s"
}

BASE_RBD=bench-baseline-raw
remove_rbd_baseline() {
  rbdc snap unprotect "$POOL/$BASE_RBD@snap" 2>/dev/null || true
  rbdc snap purge --no-progress "$POOL/$BASE_RBD" 2>/dev/null || true
  rbdc rm --no-progress "$POOL/$BASE_RBD" 2>/dev/null || true
}
rbd_baseline() {
  qemu-img convert -O raw "$@" "$SRC" "rbd:$POOL/$BASE_RBD:id=$RBD_USER:conf=$CEPH_CONF"
  rbdc snap create --no-progress "$POOL/$BASE_RBD@snap"
  rbdc snap protect "$POOL/$BASE_RBD@snap"
}
file_baseline() { qemu-img convert -O raw "$SRC" "$RAW_DIR/baseline.raw"; }
file_baseline_fsync() { qemu-img convert -O raw "$SRC" "$RAW_DIR/baseline.raw" && sync "$RAW_DIR/baseline.raw"; }

# baseline_round TARGET ROUND VARIANT COMMAND...
baseline_round() {
  local target=$1 round=$2 variant=$3 seconds
  shift 3
  if [ "$target" = file ]; then rm -f "$RAW_DIR/baseline.raw"; else remove_rbd_baseline; fi
  seconds=$(timed "$@")
  if [ "$target" = file ]; then
    [ "$(stat -c %s "$RAW_DIR/baseline.raw")" = "$IMAGE_BYTES" ] || die "the baseline copy is not $IMAGE_BYTES bytes"
    rm -f "$RAW_DIR/baseline.raw"
  else
    remove_rbd_baseline
  fi
  record "{\"kind\":\"baseline\",\"target\":\"$target\",\"variant\":\"$variant\",\"round\":$round,\"seconds\":$seconds}"
  log "  $target round $round: $variant in $seconds s"
}

# ---- measurements -----------------------------------------------------------------------------
for target in file rbd; do
  log "$target target: $ROUNDS rounds"
  start_worker "$target"
  for ((round = 1; round <= ROUNDS; round++)); do
    check_time
    worker_round "$target" "$round"
    if [ "$target" = file ]; then
      baseline_round file "$round" convert file_baseline
      baseline_round file "$round" convert-fsync file_baseline_fsync
    else
      baseline_round rbd "$round" convert-snap rbd_baseline
      baseline_round rbd "$round" convert-W-snap rbd_baseline -W
    fi
  done
  stop_worker
done

# ---- report -----------------------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
FINISHED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
w() { jq -r --arg t "$1" "select(.kind == \"worker\" and .target == \$t) | .$2" "$RESULTS" | median; }
b() { jq -r --arg t "$1" --arg v "$2" 'select(.kind == "baseline" and .target == $t and .variant == $v) | .seconds' "$RESULTS" | median; }
all() { jq -r --arg t "$1" "select(.kind == \"worker\" and .target == \$t) | .$2" "$RESULTS" | paste -sd' ' | sed 's/ /, /g'; }
allb() { jq -r --arg t "$1" --arg v "$2" 'select(.kind == "baseline" and .target == $t and .variant == $v) | .seconds' "$RESULTS" | paste -sd' ' | sed 's/ /, /g'; }

F_TOTAL=$(w file total_s); R_TOTAL=$(w rbd total_s)
F_BASE=$(b file convert); F_BASE_SYNC=$(b file convert-fsync)
R_BASE=$(b rbd convert-snap); R_BASE_W=$(b rbd convert-W-snap)
F_FETCH=$(w file fetch_s); R_FETCH=$(w rbd fetch_s)
F_WRITE=$(w file write_s); R_WRITE=$(w rbd write_s)
F_STATE=$(awk -v a="$(w file pickup_s)" -v b="$(w file record_s)" 'BEGIN { printf "%.2f", a + b }')
R_STATE=$(awk -v a="$(w rbd pickup_s)" -v b="$(w rbd record_s)" 'BEGIN { printf "%.2f", a + b }')
F_STAGES=$(jq -r 'select(.kind == "worker" and .target == "file") | .fetch_s + .inspect_s + .write_s' "$RESULTS" | median)
R_STAGES=$(jq -r 'select(.kind == "worker" and .target == "rbd") | .fetch_s + .inspect_s + .write_s' "$RESULTS" | median)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", 100 * a / b }'; }
section=$tmp/section.md
cat >"$section" <<EOF
<!-- rawcache:begin (written by bench/rawcache.sh; a new run replaces this section) -->
## Raw cache

\`bash bench/rawcache.sh\` (BENCH_RAWCACHE_ROUNDS=$ROUNDS), run $STARTED to $FINISHED, commit
$(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' with uncommitted changes in src/').
Machine: $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo) GiB RAM,
Linux $(uname -r), Node $(node --version), $(qemu-img --version | head -1 | cut -d' ' -f1-3),
Ceph $(ceph --version | cut -d' ' -f3) (one mon, one OSD on memstore: its data is in RAM), Glance $(dpkg-query -W -f='${Version}' glance-api 2>/dev/null).
Load average before/after: $LOAD_BEFORE / $LOAD_AFTER (other work on the VM shows up in these figures).

The image: a qcow2 of $IMAGE_MIB MiB virtual size, every byte written by \`qemu-io\` (8 patterns of
$((IMAGE_MIB / 8)) MiB), $((SRC_BYTES >> 20)) MiB on disk, uploaded through the proxy with \`curl -T\`.
Worker: one \`stx-glance-proxy worker\`, concurrency 1, SQLite queue. Figures are medians of
$ROUNDS rounds (each round's value in brackets). The bare convert reads the same qcow2 from the
local disk; the worker converts the image where Glance stored it (file target: Glance's file, its
store directory shared with the worker; rbd target: \`rbd:images/<id>@snap\`), in place: $(jq -rs '[.[] | select(.kind == "worker") | "\(.target) \(.in_place)"] | unique | join(", ")' "$RESULTS"),
and reads it a second time beside the convert to check it against Glance's sha512 \`os_hash_value\`.

The goal: 204 -> \`Cached\` within 1.3x a bare convert + fsync (file) and a bare convert + snap create + protect (rbd).

| target | worker: upload 204 -> \`Cached\` | bare \`qemu-img convert -O raw\` into the target | worker / bare |
|---|---:|---:|---:|
| file (image in Glance's \`fs\` store, copy in a directory) | $F_TOTAL s [$(all file total_s)] | $F_BASE s [$(allb file convert)] | $(ratio "$F_TOTAL" "$F_BASE") |
| rbd (image in Glance's \`ceph\` store, copy \`images/<id>_raw@snap\`) | $R_TOTAL s [$(all rbd total_s)] | $R_BASE s [$(allb rbd convert-snap)] with \`rbd snap create\` + \`protect\` | $(ratio "$R_TOTAL" "$R_BASE") |

Closer baselines, doing what the worker's target does after the convert: file, convert then
\`sync <copy>\` (the worker fsyncs the copy before renaming it): $F_BASE_SYNC s [$(allb file convert-fsync)],
ratio $(ratio "$F_TOTAL" "$F_BASE_SYNC"); rbd, \`qemu-img convert -W\` (the worker's flags) + snap create + protect:
$R_BASE_W s [$(allb rbd convert-W-snap)], ratio $(ratio "$R_TOTAL" "$R_BASE_W").

Where the worker's time goes (medians). The first rows come from the worker's own log lines (same
clock as the script); the stages were run again one by one right after, with the worker's code
(\`bench/rawcache-stages.js\`), so they need not add up exactly to the second row.

| step | file | rbd |
|---|---:|---:|
| 204 -> "converting to RAW": queue poll, read the image, write \`Caching\` | $(w file pickup_s) s | $(w rbd pickup_s) s |
| -> "raw copy written": get, verify, inspect and convert the source (stages below) | $(w file work_s) s | $(w rbd work_s) s |
| -> "raw copy cached": remove the source from the work dir, read the image again, write \`Cached\`, url and size | $(w file record_s) s | $(w rbd record_s) s |
| -> the client's poll (every ${POLL_S} s) sees \`Cached\` | $(w file seen_s) s | $(w rbd seen_s) s |
| stage: the verifying read alone (the store's file / \`rbd export\`, sha512 against os_hash_value, size check); in the worker it runs beside the next two | $F_FETCH s | $R_FETCH s |
| stage: inspection in place (header checks, \`qemu-img info\` and \`check\` under prlimit) | $(w file inspect_s) s | $(w rbd inspect_s) s |
| stage: \`target.write\`: look for a copy, \`qemu-img map\` and free space (at once), convert, then fsync + rename (file) or snap create + protect, rename (rbd) | $F_WRITE s | $R_WRITE s |

Reading. The worker takes $(ratio "$F_TOTAL" "$F_BASE")x (file) and $(ratio "$R_TOTAL" "$R_BASE")x (rbd) the time of a bare convert.
What it adds:
- the verifying read: $F_FETCH s (file) and $R_FETCH s (rbd) measured alone. In the worker it runs
  beside the inspection and the convert (which read the image in place), so it adds to the total
  only where it is longer than they are, or where both compete for the 2 cores and Ceph.
- the write into the target: $F_WRITE s (file) against $F_BASE_SYNC s for a bare convert + fsync, $R_WRITE s (rbd)
  against $R_BASE_W s for a bare convert -W + snapshot + protect. The convert is the same command; around it
  the target looks for an existing copy and for free space, then fsyncs the copy and its directory
  and renames it (file), or runs one \`rbd\`/\`ceph\` command per step, each a process start and a
  cluster connection (rbd). Its source is Glance's own copy (file) or the RBD snapshot (rbd).
- the inspection: $(w file inspect_s) s / $(w rbd inspect_s) s, nothing next to the rest for a qcow2 like this one.
- the queue and the state writes in Glance: $F_STATE s (file) and $R_STATE s
  (rbd), from the 204 to the start of the work plus from the copy to \`Cached\`.

Measured alone, the three stages add up to $F_STAGES s (file) and $R_STAGES s (rbd) of the $(w file work_s) s and
$(w rbd work_s) s the worker spent on them. The worker's run starts the moment the 1 GiB upload ends,
the stage run some seconds later; this script does not tell where that difference goes.
Raw outputs: bench/out/rawcache/.
<!-- rawcache:end -->
EOF

write_section rawcache "$section"
log "done: the Raw cache section of bench/RESULTS.md"
