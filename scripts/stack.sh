#!/usr/bin/env bash
# The one run command (npm run stack): installs what is missing, builds, and runs the proxy on
# 127.0.0.1:9292, with a local real Glance behind it when no upstream is configured.
# Extra arguments go to `stx-glance-proxy stack` (see --help), e.g. --upstream URL.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/use-node.sh
bash scripts/ensure-system-deps.sh glance
bash scripts/ensure-node-deps.sh
exec node dist/cli.js stack "$@"
