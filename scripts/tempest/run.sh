#!/usr/bin/env bash
# Tempest's image API v2 tests (tempest.api.image.v2, Debian's tempest 33) twice on this machine:
# against a real keystone-mode Glance directly, then through stx-glance-proxy in front of it.
# Fails when a test that passes directly does not pass through the proxy.
#
#   usage: scripts/tempest/run.sh [--build] [--out DIR] [--concurrency N] [--regex RE]
#                                 [--glance extended|plain] [--only direct|proxy]
#                                 [--retries N] [--run-timeout S]
#
#   --build          npm ci when needed and npm run build first (default: use dist/ as it is)
#   --out DIR        where the report, tempest workspaces and service logs go
#                    (default: a new /tmp/stx-tempest-DATE-XXXX directory, kept)
#   --concurrency N  tempest workers (default 2)
#   --regex RE       tests to run (default ^tempest\.api\.image\.v2\.)
#   --glance plain   the project's keystone-mode Glance exactly as the integration tests run it; the
#                    default 'extended' adds a second file store, the image cache API and the
#                    packaged metadata definitions, so that the multi-store, copy-image, image cache
#                    and metadefs tests run (and pass) instead of skipping or failing both ways
#   --only MODE      one run only (direct or proxy), no comparison
#   --retries N      a test that passed directly but failed through the proxy is run again through
#                    the proxy, alone, up to N times (default 2); passing every retry makes it
#                    "flaky" (reported, exit 0), failing any keeps it a regression (exit 1)
#   --run-timeout S  stop a tempest run after S seconds (default 600)
#   --self-test-fail TEXT, --self-test-flaky TEXT
#                    check this script: pretend the proxy failed the tests whose id contains TEXT,
#                    in every proxy run (a regression) or only in the first (flaky)
#
# Everything runs on free 127.0.0.1 ports: a real Keystone (sqlite, fernet) and a real Glance
# started by the project's test harness (test/harness/keystone.ts, glance.ts, proxy.ts), compiled
# here to a temp dir, and the proxy (dist/cli.js serve --upstream GLANCE). They are stopped by PID
# when the run ends, fails or is interrupted. About 5 minutes on 2 cores.
# Exit status: 0 no test lost through the proxy, 1 at least one, 2 the run could not be done.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

build=0
out=""
driver_args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --build) build=1; shift ;;
    --out) out=$2; shift 2 ;;
    --concurrency|--regex|--glance|--only|--run-timeout|--retries|--self-test-fail|--self-test-flaky) driver_args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

started=$(date +%s)

# Debian packages: Glance and Keystone as the integration tests use them, and tempest. The
# glance-tempest-plugin package is not needed: tempest.api.image is in tempest itself, and the
# plugin (0.5.0) only adds secure-RBAC persona tests that tempest.api.image.v2 does not select.
bash scripts/ensure-system-deps.sh glance keystone tempest

if [ "$build" = 1 ]; then
  bash scripts/ensure-node-deps.sh
fi
if [ ! -f dist/cli.js ]; then
  echo "dist/cli.js is missing: run npm run build, or pass --build" >&2
  exit 2
fi
if [ ! -x node_modules/.bin/tsc ]; then
  echo "node_modules is missing: run npm ci, or pass --build" >&2
  exit 2
fi

if [ -z "$out" ]; then
  out=$(mktemp -d "${TMPDIR:-/tmp}/stx-tempest-$(date +%Y%m%d-%H%M%S)-XXXX")
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

harness=$(mktemp -d "${TMPDIR:-/tmp}/stx-tempest-harness-XXXX")
driver_pid=""
cleanup() {
  if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
    # The driver stops Keystone, Glance, the proxy and tempest by PID on SIGTERM; if it cannot,
    # the harness's watchdogs end the services once the driver is gone.
    kill -TERM "$driver_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$driver_pid" 2>/dev/null || true
  fi
  rm -rf "$harness"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The harness is TypeScript (test/harness); compile the modules the driver uses without type
# checking (other files of the tree may be mid-change), and lay out the directories it finds by
# relative path: config/ (the dev Glance's settings) and dist/ (the proxy's CLI).
node_modules/.bin/tsc --outDir "$harness" --rootDir "$repo" --noCheck --module node16 --moduleResolution node16 \
  --target ES2022 --esModuleInterop --skipLibCheck --types node --sourceMap false --declaration false \
  test/harness/keystone.ts test/harness/glance.ts test/harness/proxy.ts || true
for module in keystone glance proxy; do
  if [ ! -f "$harness/test/harness/$module.js" ]; then
    echo "could not compile test/harness/$module.ts" >&2
    exit 2
  fi
done
ln -s "$repo/config" "$harness/config"
ln -s "$repo/dist" "$harness/dist"
ln -s "$repo/node_modules" "$harness/node_modules"

echo "[tempest] results in $out"
set +e
STX_TEMPEST_HARNESS="$harness" node scripts/tempest/driver.js --out "$out" "${driver_args[@]}" &
driver_pid=$!
wait "$driver_pid"
status=$?
set -e
driver_pid=""
echo "[tempest] $(( $(date +%s) - started )) s in all; report: $out/report.md"
exit "$status"
