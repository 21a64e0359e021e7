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

cat > "$work/after" <<AFTER
#!/bin/sh
U=$perf
C=$ctl
H=nguid-ab000000000000000000000000000001
\$U --socket=/run/umpath/umpathd.sock --state_file=/tmp/heads --node=lab \
  --vfio_devices=0000:01:00.0,0000:02:00.0 --default_io_policy=round-robin \
  --workload=verify --workload_secs=600 --workload_qd=16 > /tmp/hp.out 2> /tmp/hp.err &
pid=\$!
for i in \$(seq 1 150); do \$C heads 2>/dev/null | grep -q '^nguid-' && break; sleep 0.2; done
sleep 2
echo "umpath-lab: ready for unplug"
for i in \$(seq 1 300); do [ -e /sys/bus/pci/devices/0000:01:00.0 ] || break; sleep 0.1; done
echo "umpath-lab: 0000:01:00.0 present after unplug: \$([ -e /sys/bus/pci/devices/0000:01:00.0 ] && echo yes || echo no)"
\$C head \$H
sleep 2
kill \$pid  # ends the workload; its result is still printed
wait \$pid
echo "umpath-lab: hot-unplug workload exited \$?"
cat /tmp/hp.out
grep -E "type=(path|controller)-|umpath-vfio: 0000:01" /tmp/hp.err
AFTER
UMPATH_LAB_AFTER="$work/after" bash "$here/mkinitramfs.sh" "$work/initramfs.gz" \
  "$here/smoke_init.sh" "$perf" "$ctl"
log="$work/serial.log"
timeout 600 bash "$here/boot.sh" "$work/initramfs.gz" 2 "$log" 0 "$work/qmp.sock" &
qemu=$!
for _ in $(seq 1 300); do
  grep -q "umpath-lab: ready for unplug" "$log" 2>/dev/null && break
  kill -0 "$qemu" 2>/dev/null || break
  sleep 0.5
done
python3 "$here/qmp.py" "$work/qmp.sock" device_del '{"id": "c0"}'
wait "$qemu" || true
qemu=""
tr -d '\r' < "$log" > "$work/s.log"
log="$work/s.log"
fail() { grep -E "umpath|event|nguid|  0000" "$log" | tail -60; echo "FAIL: $*"; exit 1; }
has() { grep -qE -- "$1" "$log" || fail "$2"; }
has "umpath-lab: 0000:01:00.0 present after unplug: no" "the device was released and left the bus"
has 'type=controller-removed controller="0000:01:00.0" reason="hot-unplug: the kernel asked for the device back"' \
  "the release request was honoured, with an event"
has 'type=path-removed head="nguid-ab000000000000000000000000000001" path="0000:01:00.0"' "the path was removed"
has "^nguid-ab000000000000000000000000000001|^  0000:02:00.0 +live" "the head serves on the other path"
grep -qE "^  0000:01:00.0 " "$log" && fail "the removed path is still listed"
has "result .* errors=0 mismatches=0" "zero errors and mismatches through the unplug"
has "hot-unplug workload exited 0" "workload exit status"
grep "umpath-perf: result" "$log"
echo "lab: hot-unplug test passed"
