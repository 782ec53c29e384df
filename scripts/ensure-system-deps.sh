#!/usr/bin/env bash
# Installs the Debian packages that the integration tests and benchmarks run against.
#
#   usage: scripts/ensure-system-deps.sh GROUP...
#     glance    real Glance API (Zed, 25.x) with its CLIs, qemu-img, curl
#     bench     nginx (baseline proxy) and wrk
#     ceph      single-node Ceph for the rbd store and raw-cache tests
#     rabbitmq  AMQP broker for the queue tests
#     keystone  real Keystone for the auth tests
#     tempest   OpenStack's tempest, whose image API tests run through the proxy
#
# Does nothing (and quickly) when every package of the groups is installed already.
set -euo pipefail

packages_of() {
  case "$1" in
    glance) echo glance-api python3-glanceclient python3-openstackclient qemu-utils curl ;;
    bench) echo nginx-light wrk ;;
    ceph) echo ceph-mon ceph-mgr ceph-osd ceph-common qemu-block-extra ;;
    rabbitmq) echo rabbitmq-server ;;
    keystone) echo keystone ;;
    tempest) echo tempest ;;
    *) return 1 ;;
  esac
}

if [ "$#" -eq 0 ]; then
  echo "usage: $0 GROUP... (groups: glance bench ceph rabbitmq keystone tempest)" >&2
  exit 2
fi

wanted=()
for group in "$@"; do
  if ! pkgs=$(packages_of "$group"); then
    echo "unknown group '$group' (groups: glance bench ceph rabbitmq keystone tempest)" >&2
    exit 2
  fi
  read -r -a group_pkgs <<<"$pkgs"
  wanted+=("${group_pkgs[@]}")
done

is_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

find_missing() {
  missing=()
  for pkg in "${wanted[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
  done
}

find_missing
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages; as root run: apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

# One installer at a time: the policy file below is shared by every run on this host, and a run
# must not remove it while another one is still installing. The lock is on the directory that
# holds it, so it leaves no file behind.
exec 9</usr/sbin
flock 9
# Another run may have installed them while this one waited.
find_missing
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

# Without systemd, a package's postinst would start its daemon through the init script
# (uwsgi for glance-api, nginx on port 80, rabbitmq, ceph); 101 tells invoke-rc.d "not allowed".
# The file is ours only when there was none: then it goes again on every way out of this script
# (success, failure, Ctrl-C), and a policy the host had already is left exactly as it was.
POLICY_RC=/usr/sbin/policy-rc.d
OUR_POLICY=$'#!/bin/sh\n# Packages must not start their daemons here; tests start their own.\nexit 101'
remove_our_policy() {
  if [ "$(cat "$POLICY_RC" 2>/dev/null)" = "$OUR_POLICY" ]; then rm -f "$POLICY_RC"; fi
}
if [ ! -e "$POLICY_RC" ] && [ ! -L "$POLICY_RC" ]; then
  trap remove_our_policy EXIT
  trap 'exit 130' INT TERM HUP
  printf '%s\n' "$OUR_POLICY" >"$POLICY_RC"
  chmod 755 "$POLICY_RC"
fi

apt_options=(-o DPkg::Lock::Timeout=900)
export DEBIAN_FRONTEND=noninteractive
apt-get "${apt_options[@]}" update -qq
apt-get "${apt_options[@]}" install -y --no-install-recommends "${missing[@]}"

still_missing=()
for pkg in "${missing[@]}"; do
  is_installed "$pkg" || still_missing+=("$pkg")
done
if [ "${#still_missing[@]}" -ne 0 ]; then
  echo "apt-get finished but these are not installed: ${still_missing[*]}" >&2
  exit 1
fi
