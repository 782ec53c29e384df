#!/usr/bin/env bash
# The one test command (npm test): installs what the tests need, builds, runs every test.
# Extra arguments go to jest, e.g. `npm test -- test/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system-deps.sh glance keystone rabbitmq ceph tempest
bash scripts/ensure-node-deps.sh
exec npx jest "$@"
