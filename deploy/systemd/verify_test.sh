#!/usr/bin/env bash
# Checks deploy/systemd offline: `systemd-analyze verify` of umpathd.service in a scratch
# root (any warning fails: verify itself exits 0 on unknown keys and bad values), the
# sysusers snippet through systemd-sysusers --root, the modules-load list, and that the
# unit agrees with the sample flags (deploy/config/umpathd.flags) it runs with. Then a
# broken copy of the unit must be refused. Needs systemd's tools (Debian: systemd).
#
#   bash deploy/systemd/verify_test.sh
#
# Closes with "verify_test: N passed, M failed"; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
repo="$PWD"
unit="$repo/deploy/systemd/umpathd.service"
flagsfile="$repo/deploy/config/umpathd.flags"

# shellcheck disable=SC2034  # read by check_lib.sh's summary
check_test=verify_test
# shellcheck source=../check_lib.sh
. "$repo/deploy/check_lib.sh"

for tool in systemd-analyze systemd-sysusers; do
  command -v "$tool" >/dev/null 2>&1
  check "$tool is installed" $? "apt-get install systemd"
done
[ "$failed" -eq 0 ] || summary

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# A scratch root with the distribution's units (targets), a stub umpathd and the sample
# flags, so verify checks ExecStart= and AssertPathExists= as on a node.
root="$tmp/root"
mkdir -p "$root/usr/lib/systemd" "$root/usr/sbin" "$root/etc/systemd/system" "$root/etc/umpath"
units=/usr/lib/systemd/system
[ -d "$units" ] || units=/lib/systemd/system
cp -a "$units" "$root/usr/lib/systemd/system"
mkdir -p "$root/usr/bin"
for prog in usr/sbin/umpathd usr/bin/umpathctl; do
  printf '#!/bin/sh\nexit 0\n' >"$root/$prog"
  chmod 0755 "$root/$prog"
done
cp "$flagsfile" "$root/etc/umpath/umpathd.flags"

verify() {  # UNIT-FILE: prints what verify said; fails if it said anything
  cp "$1" "$root/etc/systemd/system/umpathd.service"
  local out rc
  out="$(systemd-analyze verify --root="$root" /etc/systemd/system/umpathd.service 2>&1)"
  rc=$?
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    /'
  [ "$rc" -eq 0 ] && [ -z "$out" ]
}

verify "$unit"
check "systemd-analyze verify umpathd.service: no error, no warning" $?

# A unit with a misspelt key and a bad value must be refused.
sed -e 's/^ProtectHome=yes$/ProtectHom=yes/' -e 's/^RestartSec=1s$/RestartSec=1x/' "$unit" >"$tmp/broken.service"
if cmp -s "$unit" "$tmp/broken.service"; then
  check "broken copy of umpathd.service" 1 "the sed expressions changed nothing (the test is stale)"
else
  echo "--- broken copy (ProtectHom=, RestartSec=1x):"
  ! verify "$tmp/broken.service"
  check "systemd-analyze verify refuses the broken copy" $?
fi

# sysusers: the groups the sample flags name.
mkdir -p "$tmp/sysroot/etc"
out="$(systemd-sysusers --root="$tmp/sysroot" "$repo/deploy/systemd/umpath.sysusers.conf" 2>&1)"
check "systemd-sysusers umpath.sysusers.conf" $? "$out"
for flag in socket_group admin_groups viewer_groups; do
  for g in $(sed -n "s/^--$flag=//p" "$flagsfile" | tr ',' ' '); do
    [[ "$g" =~ ^[0-9]+$ ]] && continue
    grep -q "^$g:" "$tmp/sysroot/etc/group"
    check "group $g (--$flag) is made by umpath.sysusers.conf" $?
  done
done

# modules-load.d: one module name a line.
bad="$(grep -Ev '^[[:space:]]*(#.*)?$' "$repo/deploy/systemd/umpath-modules.conf" | grep -Ev '^[A-Za-z0-9_-]+$')"
[ -z "$bad" ]
check "umpath-modules.conf: one module name a line" $? "$bad"

# The unit against the flags it runs with.
flag() { sed -n "s/^--$1=//p" "$flagsfile" | tail -n 1; }
key() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
[ "$(key ExecStart)" = "/usr/sbin/umpathd --flagfile=/etc/umpath/umpathd.flags" ]
check "ExecStart=/usr/sbin/umpathd --flagfile=/etc/umpath/umpathd.flags" $? "$(key ExecStart)"
[ "$(dirname "$(flag socket)")" = "/run/$(key RuntimeDirectory)" ]
check "--socket $(flag socket) is in RuntimeDirectory=$(key RuntimeDirectory)" $?
[[ "$(flag ublk_state_dir)" == "/run/$(key RuntimeDirectory)"/* ]]
check "--ublk_state_dir $(flag ublk_state_dir) is in RuntimeDirectory= (kept: RuntimeDirectoryPreserve=$(key RuntimeDirectoryPreserve))" \
  "$([ "$(key RuntimeDirectoryPreserve)" = yes ]; echo $?)"
[ "$(dirname "$(flag state_file)")" = "/var/lib/$(key StateDirectory)" ]
check "--state_file $(flag state_file) is in StateDirectory=$(key StateDirectory)" $?
[ "$(flag socket_group)" = "$(key Group)" ]
check "--socket_group $(flag socket_group) is Group= (no CAP_CHOWN needed)" $? "Group=$(key Group)"
for k in "Type=notify" "NotifyAccess=main" "WatchdogSec=30s" "KillSignal=SIGTERM" "TimeoutStopSec=60" "Restart=always" "RestartPreventExitStatus=3" \
         "SuccessExitStatus=3" "NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" \
         "StandardError=journal"; do
  grep -qx "$k" "$unit"
  check "$k" $?
done
# Reload is a hand-over restart: umpathctl stop (not --remove) on the socket umpathd
# listens on; the exit status that ends the restarts is the one umpathd gives after a
# removing stop through the API (agent/app/ops.h kExitRemovedThroughApi).
[ "$(key ExecReload)" = "/usr/bin/umpathctl --socket=$(flag socket) stop" ]
check "ExecReload= is umpathctl --socket=$(flag socket) stop (a hand-over)" $? "$(key ExecReload)"
grep -q "^inline constexpr int kExitRemovedThroughApi = $(key RestartPreventExitStatus);" \
  "$repo/agent/app/ops.h"
check "RestartPreventExitStatus=$(key RestartPreventExitStatus) is umpathd's exit status after stop --remove" $?
# Issue 17 item 9: /metrics has no authentication; the sample serves it on loopback only.
metrics="$(flag metrics_address)"
[[ "$metrics" == 127.0.0.1:* || "$metrics" == "[::1]:"* ]]
check "--metrics_address $metrics is loopback (no authentication)" $?
caps="$(key CapabilityBoundingSet)"
for c in CAP_SYS_ADMIN CAP_IPC_LOCK; do
  [[ " $caps " == *" $c "* ]]
  check "CapabilityBoundingSet has $c" $?
done

summary
