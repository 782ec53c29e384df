#!/usr/bin/env bash
# The one test command (npm test): installs what the tests need, builds, type-checks the tests,
# runs every test, then checks that the run left nothing on the machine.
# Extra arguments go to jest, e.g. `npm test -- test/unit`.
#
# The tests run with TMPDIR set to a directory of this run, and every process they start carries
# STX_TEST_RUN=<this run's id> in its environment (the harness passes it on where it builds an
# environment of its own). After jest, these must be gone: the run's temp files, its processes,
# and anything new in the places a service could write to (/etc, /usr/sbin, /run, /dev/shm, /tmp,
# $HOME, the Debian services' /var/lib and /var/log dirs), and no new mount or loop device.
# The run's own leftovers (its temp dir, its processes, policy-rc.d) fail the run. What is new
# elsewhere on the machine is listed; it fails the run only with STX_TEST_LEFTOVERS=fail, since the
# host itself (other runs, the platform's own lock files) may write there meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/use-node.sh

policy_before=$(sha256sum /usr/sbin/policy-rc.d 2>/dev/null || echo absent)
bash scripts/ensure-system-deps.sh glance keystone rabbitmq ceph tempest
bash scripts/ensure-node-deps.sh
node_modules/.bin/tsc -p tsconfig.test.json

state=$(mktemp -d "${TMPDIR:-/tmp}/stx-test-state-XXXXXX")
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/stx-test-run-XXXXXX")
run_id=${run_tmp##*-}
trap 'rm -rf "$state"; [ "${KEEP_TEST_DIRS:-}" = 1 ] || rm -rf "$run_tmp"' EXIT

# The machine's state where a test could leave something: one line per entry; files of /etc and
# /usr/sbin with their time and size, so that a changed file shows too.
machine_state() {
  {
    find /etc /usr/sbin -xdev ! -type d -printf 'file %p %T@ %s\n' 2>/dev/null || true
    find /etc -xdev -type d -printf 'dir %p\n' 2>/dev/null || true
    for dir in /var/lib/glance /var/lib/keystone /var/lib/ceph /var/lib/rabbitmq /var/log/glance /var/log/keystone /var/log/ceph /var/log/rabbitmq; do
      if [ -d "$dir" ]; then find "$dir" -xdev -printf 'entry %p\n' 2>/dev/null || true; fi
    done
    find /run /dev/shm -xdev -maxdepth 2 -printf 'entry %p\n' 2>/dev/null || true
    find "${TMPDIR:-/tmp}" -xdev -mindepth 1 -maxdepth 1 -printf 'entry %p\n' 2>/dev/null | grep -v -F -e "$state" -e "$run_tmp" || true
    find "$HOME" -xdev -mindepth 1 -maxdepth 2 -printf 'entry %p\n' 2>/dev/null || true
    awk '{ print "mount " $5 }' /proc/self/mountinfo
    for file in /sys/block/loop*/loop/backing_file; do
      if [ -e "$file" ]; then echo "loop ${file#/sys/block/} $(cat "$file")"; fi
    done
  } | sort -u
}

# Processes of this run still alive (jest itself has exited by now).
run_processes() {
  { grep -l -z -x -F "STX_TEST_RUN=$run_id" /proc/[0-9]*/environ 2>/dev/null || true; } | while read -r file; do
    pid=${file#/proc/}
    pid=${pid%/environ}
    echo "$pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
  done
}

machine_state >"$state/before"
status=0
# Node 22 and later keep a module compile cache in the temp dir when a program asks for one (npm and
# tsc do); the tests' processes must leave the run's temp dir empty, so none of them keeps one.
STX_TEST_RUN=$run_id TMPDIR=$run_tmp NODE_DISABLE_COMPILE_CACHE=1 node_modules/.bin/jest "$@" || status=$?

# A stopped service's watchdog may still be on its way out: give the processes a few seconds.
for _ in $(seq 1 50); do
  [ -z "$(run_processes)" ] && break
  sleep 0.2
done
run_processes >"$state/processes"
find "$run_tmp" -mindepth 1 -maxdepth 2 >"$state/files"
machine_state >"$state/after"
comm -13 "$state/before" "$state/after" >"$state/new"
policy_after=$(sha256sum /usr/sbin/policy-rc.d 2>/dev/null || echo absent)

left=0
report() {
  echo "leftover: $1" >&2
  sed 's/^/  /' "$2" | head -n 50 >&2
}
if [ -s "$state/processes" ]; then
  report "processes the tests started are still running (now killed):" "$state/processes"
  while read -r pid _; do kill -KILL "$pid" 2>/dev/null || true; done <"$state/processes"
  left=1
fi
if [ "${KEEP_TEST_DIRS:-}" = 1 ]; then
  echo "the tests' temp dirs are kept (KEEP_TEST_DIRS=1) in $run_tmp" >&2
elif [ -s "$state/files" ]; then
  report "files the tests left in their temp dir $run_tmp (now removed):" "$state/files"
  left=1
fi
if [ "$policy_before" != "$policy_after" ]; then
  echo "leftover: /usr/sbin/policy-rc.d is not as it was before the run (before: $policy_before; after: $policy_after)" >&2
  left=1
fi
if [ -s "$state/new" ]; then
  report "new on this machine since the tests started (new or changed files, dirs, mounts, loop devices):" "$state/new"
  [ "${STX_TEST_LEFTOVERS:-report}" != fail ] || left=1
fi
if [ "$left" -ne 0 ]; then
  echo "the tests left the leftovers above on this machine" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
