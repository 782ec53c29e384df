#!/usr/bin/env bash
# Installs the locked node modules when they are missing, older than the lock file, or were built
# for another Node.js release (better-sqlite3 is a native addon), then builds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/use-node.sh
stamp=node_modules/.installed-for-node
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
  || [ "$(cat "$stamp" 2>/dev/null)" != "$(node --version)" ]; then
  npm ci --no-audit --no-fund
  node --version >"$stamp"
fi
npm run --silent build
