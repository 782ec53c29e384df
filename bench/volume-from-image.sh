#!/usr/bin/env bash
# Volume from image: how long `stx-glance-proxy volume-from-image` takes to make an RBD volume from a
# qcow2 image holding 1 GiB of data, (a) by cloning the image's cached RAW copy
# (`images/<id>_raw@snap`, what StarlingX's Cinder does when cache_raw_url names one) against
# (b) without a raw copy: download from Glance (sha512-verified), inspect, `qemu-img convert -O raw`
# into the work dir, `rbd import` (`--fallback`, what Cinder does for any other qcow2). Same image
# data, same Ceph, same command, in one run; medians of BENCH_VOLUME_ROUNDS rounds. Writes the
# "Volume from image" section of bench/RESULTS.md (replacing the one a previous run wrote); raw
# outputs in bench/out/volume-from-image/.
#
#   usage: bash bench/volume-from-image.sh     (about 3 minutes on 2 vCPUs; gives up after 15)
#   knobs: BENCH_VOLUME_ROUNDS (3)
#
# Everything runs on 127.0.0.1: a single-node Ceph (memstore: its data lives in RAM) and a real
# Glance (default backend `ceph`) held by bench/rawcache-services.js, the proxy (for the cache_raw
# trigger) and one worker (SQLite queue) that makes the raw copy once, before the measured rounds.
# The command runs as Ceph's client.cinder (write on pool `volumes`, read-only on `images`), as
# Cinder is deployed.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=bench/out/volume-from-image
ROUNDS=${BENCH_VOLUME_ROUNDS:-3}
VIRTUAL_MIB=4096
DATA_MIB=1024
STOP_AFTER_S=900
POLL_S=0.2

check_time() { [ "$SECONDS" -lt "$STOP_AFTER_S" ] || die "still running after ${STOP_AFTER_S} s: giving up"; }

# shellcheck source=bench/lib.sh
source bench/lib.sh

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a / b }'; }

# ---- preparation ------------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -x scripts/ensure-system-deps.sh ]; then bash scripts/ensure-system-deps.sh glance ceph >&2; fi
for tool in curl jq qemu-img qemu-io rbd ceph glance-api; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/ensure-system-deps.sh glance ceph)"
done
require_room 6 6

log "building"
npm run --silent build >"$OUT/build.log" 2>&1 || die "npm run build failed, see $OUT/build.log"

log "making a qcow2 of ${VIRTUAL_MIB} MiB virtual size with ${DATA_MIB} MiB of data (qemu-io writes, 8 patterns)"
SRC=$tmp/source.qcow2
qemu-img create -q -f qcow2 "$SRC" "${VIRTUAL_MIB}M"
chunk=$((DATA_MIB / 8))
writes=()
# Spread over the disk as an installed guest's data is: each pattern at the start of its eighth.
for i in $(seq 0 7); do writes+=(-c "write -q -P $((0x41 + i)) $((i * VIRTUAL_MIB / 8))M ${chunk}M"); done
qemu-io -f qcow2 "${writes[@]}" "$SRC"
SRC_BYTES=$(stat -c %s "$SRC")

log "starting Ceph and Glance"
start_holder "Ceph and Glance" "$OUT/services.json" 180 node bench/rawcache-services.js
GLANCE=$(jq -r .glance_url "$OUT/services.json")
CEPH_CONF=$(jq -r .ceph_conf "$OUT/services.json")
POOL=$(jq -r .pool "$OUT/services.json")
RBD_USER=$(jq -r .user "$OUT/services.json")
# client.admin's key is in the cluster's keyring, which its ceph.conf names.
cephadm() { ceph --conf "$CEPH_CONF" "$@"; }
cephadm osd pool create volumes 8 8 >/dev/null 2>&1
cephadm osd pool application enable volumes rbd >/dev/null 2>&1
keyring=$(sed -n 's/^keyring = //p' "$CEPH_CONF" | head -1)
cephadm auth get-or-create client.cinder mon 'profile rbd' osd "profile rbd pool=volumes, profile rbd-read-only pool=$POOL" mgr 'profile rbd pool=volumes' >>"$keyring"
cinder() { rbd --id cinder --conf "$CEPH_CONF" "$@"; }

read -r PROXY_PORT OPS_PORT < <(node bench/free-ports.js 2)
PROXY=http://127.0.0.1:$PROXY_PORT
CONFIG=$tmp/config.json
jq -n --arg glance "$GLANCE" --arg queue "$tmp/queue.sqlite" --arg work "$tmp/work" --arg pool "$POOL" --arg user "$RBD_USER" --arg conf "$CEPH_CONF" '{
  upstream: $glance,
  log: { level: "info" },
  rawcache: {
    enabled: true,
    queue: { backend: "sqlite", sqlite_path: $queue },
    target: { kind: "rbd", rbd_pool: $pool, rbd_user: $user, ceph_conf: $conf },
    worker: { concurrency: 1, work_dir: $work, reconcile_interval_seconds: 0 }
  }
}' >"$CONFIG"
STX_GLANCE_PROXY_OPS_LISTEN= node dist/cli.js serve --config "$CONFIG" --listen "127.0.0.1:$PROXY_PORT" >"$OUT/proxy.log" 2>&1 &
pids+=($!)
wait_http "$PROXY/versions" "${pids[-1]}" 20
STX_GLANCE_PROXY_WORKER_LISTEN=127.0.0.1:$OPS_PORT node dist/cli.js worker --config "$CONFIG" >"$OUT/worker.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$OPS_PORT/healthcheck" "${pids[-1]}" 20

# upload NAME EXTRA-JSON: creates a qcow2 image through the proxy, uploads the source, prints its id.
upload() {
  local id status
  id=$(curl -sSf -X POST -H 'Content-Type: application/json' \
    -d "$(jq -cn --arg name "$1" --argjson extra "$2" '{name: $name, disk_format: "qcow2", container_format: "bare"} + $extra')" \
    "$PROXY/v2/images" | jq -r .id)
  status=$(curl -sS -o "$tmp/upload-answer" -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' -T "$SRC" "$PROXY/v2/images/$id/file")
  [ "$status" = 204 ] || die "upload of $1 answered $status: $(head -c 300 "$tmp/upload-answer")"
  echo "$id"
}

log "uploading the image twice: with cache_raw=True, and without"
CACHED=$(upload bench-volume-cached '{"cache_raw": "True"}')
PLAIN=$(upload bench-volume-plain '{}')
log "waiting for the raw copy of $CACHED"
for (( ; ; )); do
  image=$(curl -sSf "$PROXY/v2/images/$CACHED")
  status=$(jq -r '.cache_raw_status // "none"' <<<"$image")
  [ "$status" = Cached ] && break
  [ "$status" = Error ] && die "the raw copy ended in Error: $(jq -r .cache_raw_error <<<"$image")"
  check_time
  sleep "$POLL_S"
done
VIRTUAL_BYTES=$((VIRTUAL_MIB << 20))
[ "$(jq -r .cache_raw_size <<<"$image")" = "$VIRTUAL_BYTES" ] || die "cache_raw_size is not $VIRTUAL_BYTES: $image"

# ---- measured rounds --------------------------------------------------------------------------
RESULTS=$OUT/results.jsonl
# volume IMAGE NAME [FLAGS...]: the command as an operator runs it; its JSON answer in $OUT/NAME.json.
COMMAND=(node dist/cli.js volume-from-image)
volume() {
  local image=$1 name=$2 t0 t1
  shift 2
  t0=$(now)
  "${COMMAND[@]}" "$image" --pool volumes --name "$name" --config "$CONFIG" --ceph-user cinder --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" ||
    die "volume-from-image $name failed: $(cat "$OUT/$name.err")"
  t1=$(now)
  elapsed "$t0" "$t1"
}

for ((round = 1; round <= ROUNDS; round++)); do
  check_time
  clone_s=$(volume "$CACHED" "bench-clone-$round")
  [ "$(jq -r .method "$OUT/bench-clone-$round.json")" = clone ] || die "round $round: not a clone: $(cat "$OUT/bench-clone-$round.json")"
  parent=$(cinder info --format json "volumes/bench-clone-$round" | jq -r '.parent | "\(.pool)/\(.image)@\(.snapshot)"')
  [ "$parent" = "$POOL/${CACHED}_raw@snap" ] || die "round $round: the clone's parent is $parent"
  import_s=$(volume "$PLAIN" "bench-import-$round" --fallback)
  [ "$(jq -r .method "$OUT/bench-import-$round.json")" = import ] || die "round $round: not an import: $(cat "$OUT/bench-import-$round.json")"
  [ "$(cinder info --format json "volumes/bench-import-$round" | jq -r .size)" = "$VIRTUAL_BYTES" ] || die "round $round: the imported volume is not $VIRTUAL_BYTES bytes"
  # The command's fixed cost: Node's start and the CLI's load, nothing else.
  t0=$(now)
  node dist/cli.js --help >/dev/null
  start_s=$(elapsed "$t0" "$(now)")
  cinder rm --no-progress "volumes/bench-clone-$round" >/dev/null
  cinder rm --no-progress "volumes/bench-import-$round" >/dev/null
  jq -cn --argjson round "$round" --argjson clone "$clone_s" --argjson imported "$import_s" --argjson start "$start_s" \
    '{round: $round, clone_s: $clone, import_s: $imported, start_s: $start}' >>"$RESULTS"
  log "  round $round: clone $clone_s s, download + convert + import $import_s s, node start $start_s s"
done

# ---- report -----------------------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
FINISHED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
m() { jq -r ".$1" "$RESULTS" | median; }
all() { jq -r ".$1" "$RESULTS" | paste -sd' ' | sed 's/ /, /g'; }
CLONE=$(m clone_s)
IMPORT=$(m import_s)
section=$tmp/section.md
cat >"$section" <<EOF
<!-- volume-from-image:begin (written by bench/volume-from-image.sh; a new run replaces this section) -->
## Volume from image

\`bash bench/volume-from-image.sh\` (BENCH_VOLUME_ROUNDS=$ROUNDS), run $STARTED to $FINISHED, commit
$(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' with uncommitted changes in src/').
Machine: $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo) GiB RAM,
Linux $(uname -r), Node $(node --version), $(qemu-img --version | head -1 | cut -d' ' -f1-3),
Ceph $(ceph --version | cut -d' ' -f3) (one mon, one OSD on memstore: its data is in RAM), Glance $(dpkg-query -W -f='${Version}' glance-api 2>/dev/null).
Load average before/after: $LOAD_BEFORE / $LOAD_AFTER (other work on the VM shows up in these figures).

Why the raw cache exists: Cinder makes a volume from an image. The image: a qcow2 of $VIRTUAL_MIB MiB
virtual size with $DATA_MIB MiB of data written by \`qemu-io\` (8 patterns, one at the start of
each eighth of the disk), $((SRC_BYTES >> 20)) MiB on disk, in Glance's \`ceph\` store. Each figure is
the wall time of one \`stx-glance-proxy volume-from-image IMAGE --pool volumes --name NAME --json\`
run as Ceph's client.cinder (process start and Glance lookup included), median of $ROUNDS rounds
(each round's value in brackets). The volumes are removed after each round.

| volume from image | time | |
|---|---:|---:|
| (a) with the raw cache: \`rbd clone images/<id>_raw@snap volumes/NAME\` (after checking cache_raw_status, the URL's fsid and pool, the snapshot's protection, the destination) | $CLONE s [$(all clone_s)] | 1 |
| (b) without it (\`--fallback\` on an image with no raw copy): download from Glance with sha512 check, \`qemu-img info\`/\`check\`, \`qemu-img convert -O raw\` into the work dir, \`rbd import\` | $IMPORT s [$(all import_s)] | $(ratio "$IMPORT" "$CLONE")x |
| for scale: \`node dist/cli.js --help\` (Node's start and the CLI's load, part of both figures above) | $(m start_s) s [$(all start_s)] | |

Reading. (a) is a process start, one Glance request and five short \`rbd\`/\`ceph\` commands (info,
fsid, snap ls, clone, and a resize when asked), each its own process and cluster connection: none
of them reads or writes image data, so (a) does not grow with the image (this run measures one size
only). The volume is copy-on-write: its reads fall through to the raw copy until written, and
\`rbd flatten\` makes it independent. (b) moves every byte three times (Glance to
the work dir, the conversion, the import), so it grows with the image's data, and needs
the work dir to hold the image and its RAW form. The conversion the raw cache does once per image
(bench section "Raw cache") is paid again for every volume without it.
Raw outputs: bench/out/volume-from-image/.
<!-- volume-from-image:end -->
EOF

write_section volume-from-image "$section"
log "done: the Volume from image section of bench/RESULTS.md"
