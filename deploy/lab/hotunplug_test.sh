#!/usr/bin/env bash
# CTest (label lab): hot-unplug safety. Under a verified round-robin workload on two
# vfio paths, QMP device_del takes one controller away: vfio-pci relays the release
# request, umpathd fails the path over and lets the device go (the function leaves the
# guest's PCI bus), the event stream says why, and the workload sees zero errors and
# zero mismatches.
# Usage: hotunplug_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init hotunplug "$1" "$2"
H=nguid-ab000000000000000000000000000001

lab_after
cat >> "$work/after" <<AFTER
agent hp \$P --vfio_devices=\$A,\$B --default_io_policy=round-robin \
  --workload=verify --workload_secs=600 --workload_qd=16
wait_head
sleep 2
jshow before head \$H
unplug 0
echo "umpath-lab: \$A present after unplug: \$([ -e /sys/bus/pci/devices/\$A ] && echo yes || echo no)"
jshow after head \$H
sleep 2
stop hp
AFTER
lab_initramfs "$perf" "$ctl"
lab_show="umpath|event"
lab_boot 600 2
chk s.log "umpath-lab: 0000:01:00.0 present after unplug: no" "the device was released and left the bus"
jchk s.log "ev('controller-removed', controller='0000:01:00.0', reason='^hot-unplug: the kernel asked for the device back$')" \
  "the release request was honoured, with an event"
jchk s.log "ev('path-removed', head='$H', path='0000:01:00.0')" "the path was removed"
jchk s.log "sorted(paths(head(J['before']))) == ['0000:01:00.0', '0000:02:00.0']" "both paths before the unplug"
jchk s.log "paths(head(J['after'])) == ['0000:02:00.0']" "the removed path is no longer listed"
jchk s.log "path(head(J['after']), '0000:02:00.0')['controller_state'] == 'CONTROLLER_STATE_LIVE' and path(head(J['after']), '0000:02:00.0')['selectable']" \
  "the head serves on the other path"
chk s.log "result .* errors=0 mismatches=0" "zero errors and mismatches through the unplug"
chk s.log "hp exited 0" "workload exit status"
grep "umpath-perf: result" "$log"
echo "lab: hot-unplug test passed"
