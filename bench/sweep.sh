#!/usr/bin/env bash
# Reconciler sweep cost: bench/sweep.js creates images on a real Glance (straight through its API,
# active, cache_raw=True and Cached with a file copy: a deployment's steady state) and times the
# worker's sweep over 1k and 10k of them, counting the Glance API calls through a relay. Writes
# the "Reconciler sweep" section of bench/RESULTS.md (replacing the one a previous run wrote),
# with the 100k figure projected from the two measured sizes; raw output in bench/out/sweep/.
#
#   usage: bash bench/sweep.sh    (creating 10k images takes most of it; about 15 minutes on 2 vCPUs)
#   knobs: BENCH_SWEEP_SIZES ("1000 10000")
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/sweep
SIZES=${BENCH_SWEEP_SIZES:-1000 10000}
# shellcheck source=bench/lib.sh
source bench/lib.sh
rm -rf "$OUT"
mkdir -p "$OUT"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bash scripts/ensure-system-deps.sh glance >&2
log "building"
npm run --silent build >"$OUT/build.log" 2>&1 || die "npm run build failed, see $OUT/build.log"
log "running bench/sweep.js $SIZES"
# shellcheck disable=SC2086
node bench/sweep.js $SIZES >"$OUT/result.jsonl" 2>"$OUT/progress.log" || die "bench/sweep.js failed, see $OUT/progress.log"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
FINISHED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
R=$OUT/result.jsonl
rows=$(jq -r '"| \(.images) | \(.glance_calls) (\(.list_calls) list pages, \(.other_calls) other) | \(.sweep_seconds) s | \(.sweep_seconds / .images * 1000 | . * 100 | round / 100) ms | \(.examined) | \(.requeued) |"' "$R")
# Projection to 100k from the largest measured size: calls by pages of 200, seconds per image as measured there.
read -r N S C < <(jq -s -r 'max_by(.images) | "\(.images) \(.sweep_seconds) \(.glance_calls)"' "$R")
P_CALLS=$(awk -v c="$C" -v n="$N" 'BEGIN { printf "%d", c * 100000 / n }')
P_SECONDS=$(awk -v s="$S" -v n="$N" 'BEGIN { printf "%.0f", s * 100000 / n }')
section=$(mktemp)
cat >"$section" <<SECTION
<!-- sweep:begin (written by bench/sweep.sh; a new run replaces this section) -->
## Reconciler sweep

\`bash bench/sweep.sh\` (BENCH_SWEEP_SIZES="$SIZES"), run $STARTED to $FINISHED, commit $(git rev-parse --short HEAD).
Load average before/after: $LOAD_BEFORE / $LOAD_AFTER (a shared 2-vCPU VM).

Images created straight through a real Glance's API (one Glance process, SQLite database, file
store), active (one byte of data), \`cache_raw=True\`, \`cache_raw_status=Cached\` with their file
copy present: the steady state, where a sweep finds nothing to do. The sweep is the worker's own
(\`dist/rawcache/reconciler.js\`, file target), its Glance calls counted by a relay in front of Glance.

| images | Glance API calls | sweep | per image | examined | requeued |
|---|---:|---:|---:|---:|---:|
$rows
| 100,000 (projected from $N, linearly) | ~$P_CALLS | ~$P_SECONDS s | | | |

The calls are list pages (200 images a page): one listing of \`cache_raw=True\` and one per
\`cache_raw_status\` value (the Cached one lists every image a second time), so about 2 x images / 200
calls. With the file target each Cached image also costs one \`stat\`; with the rbd target it costs
an \`rbd\` command against Ceph instead (\`target.exists\`), one per Cached image per sweep.
Raw outputs: bench/out/sweep/.
<!-- sweep:end -->
SECTION
write_section sweep "$section"
rm -f "$section"
log "done: the Reconciler sweep section of bench/RESULTS.md"
