#!/usr/bin/env bash
# Raw-cache capacity and wake-up: 8 qcow2 images converted by 1 worker and by 2 workers
# (concurrency 1 each), SQLite queue and RabbitMQ queue, real Glance (file store), file target,
# in one run (bench/capacity.js); and the trigger-to-job-start latency with an idle worker on both
# backends (bench/capacity-wakeup.js). Writes the "Raw-cache capacity" section of bench/RESULTS.md
# (replacing the one a previous run wrote); raw output in bench/out/capacity/.
#
#   usage: bash bench/capacity.sh     (about 5 minutes on 2 vCPUs)
#   knobs: BENCH_CAPACITY_ROUNDS (1), BENCH_CAPACITY_IMAGE_MIB (256), BENCH_CAPACITY_DATA_MIB (96)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/capacity
# shellcheck source=bench/lib.sh
source bench/lib.sh
rm -rf "$OUT"
mkdir -p "$OUT"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bash scripts/ensure-system-deps.sh glance rabbitmq >&2
log "building"
npm run --silent build >"$OUT/build.log" 2>&1 || die "npm run build failed, see $OUT/build.log"
log "running bench/capacity.js"
node bench/capacity.js >"$OUT/result.json" 2>"$OUT/progress.log" || die "bench/capacity.js failed, see $OUT/progress.log"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
FINISHED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
R=$OUT/result.json
secs() { jq -r --arg b "$1" --argjson w "$2" '[.runs[] | select(.backend == $b and .workers == $w) | .seconds] | map(tostring) | join(", ")' "$R"; }
med() { jq -r --arg b "$1" --argjson w "$2" '[.runs[] | select(.backend == $b and .workers == $w) | .seconds] | sort | .[(length - 1) / 2 | floor]' "$R"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
fence() { jq -r --arg b "$1" --argjson w "$2" '[.runs[] | select(.backend == $b and .workers == $w) | .fence_ok] | all' "$R"; }
split() { jq -r --arg b "$1" --argjson w "$2" '[.runs[] | select(.backend == $b and .workers == $w) | .conversions_per_worker | map(tostring) | join("/")] | join(", ")' "$R"; }
wk() { jq -r --arg b "$1" ".wakeup[] | select(.backend == \$b) | .$2" "$R"; }

section=$(mktemp)
cat >"$section" <<SECTION
<!-- capacity:begin (written by bench/capacity.sh; a new run replaces this section) -->
## Raw-cache capacity and wake-up

\`bash bench/capacity.sh\` (BENCH_CAPACITY_ROUNDS=${BENCH_CAPACITY_ROUNDS:-1}), run $STARTED to $FINISHED, commit $(git rev-parse --short HEAD).
Load average before/after: $LOAD_BEFORE / $LOAD_AFTER (a shared 2-vCPU VM: other work runs beside it).

$(jq -r .images "$R") qcow2 images of $(jq -r .image_mib "$R") MiB virtual size with $(jq -r .data_mib "$R") MiB of data each, uploaded straight to a real
Glance (file store); then \`cache_raw=True\` is patched onto all of them through the proxy, and the
time runs from the first PATCH until Glance shows all of them \`Cached\`. Workers: \`stx-glance-proxy
worker\`, concurrency 1 each, file target. RabbitMQ: 8 partitions.

| queue | 1 worker | 2 workers | 2 workers / 1 worker | conversions per worker (2 workers) | each image converted once |
|---|---:|---:|---:|---|---|
| SQLite | $(med sqlite 1) s [$(secs sqlite 1)] | $(med sqlite 2) s [$(secs sqlite 2)] | $(ratio "$(med sqlite 2)" "$(med sqlite 1)") | $(split sqlite 2) | $(fence sqlite 1) / $(fence sqlite 2) |
| RabbitMQ | $(med amqp 1) s [$(secs amqp 1)] | $(med amqp 2) s [$(secs amqp 2)] | $(ratio "$(med amqp 2)" "$(med amqp 1)") | $(split amqp 2) | $(fence amqp 1) / $(fence amqp 2) |

Trigger to job start with an idle worker (\`bench/capacity-wakeup.js\`: the consumer in a process
of its own, one trigger every 200 ms, from the enqueue call to the handler's start):

| queue | triggers | p50 | p95 | max |
|---|---:|---:|---:|---:|
| SQLite (wake file + inotify; commit with synchronous=FULL included) | $(wk sqlite n) | $(wk sqlite p50_ms) ms | $(wk sqlite p95_ms) ms | $(wk sqlite max_ms) ms |
| RabbitMQ (publisher confirm included) | $(wk amqp n) | $(wk amqp p50_ms) ms | $(wk amqp p95_ms) ms | $(wk amqp max_ms) ms |

Raw outputs: bench/out/capacity/.
<!-- capacity:end -->
SECTION

write_section capacity "$section"
rm -f "$section"
log "done: the Raw-cache capacity section of bench/RESULTS.md"
