#!/usr/bin/env bash
# CTest (label lab): umpath's vfio layer on QEMU's NVMe controllers in the lab node:
# container and groups, BAR0 mapped and its registers read, controller bring-up through
# the admin queue, Identify, the namespace's identifiers, DMA memory mapped. The checks
# read the probe's own report (its result lines), as umpath-perf's are read.
# Usage: vfio_probe_test.sh PROBE_BINARY
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init probe
probe="$(readlink -f "$1")"
cat > "$work/after" <<AFTER
#!/bin/sh
$probe "\$@"
rc=\$?
$probe 0000:09:00.0
echo "umpath-lab: unknown device exited \$?"
exit \$rc
AFTER
lab_initramfs "$probe"
lab_boot 300 2
grep "umpath-" "$log" || { tail -40 "$log"; exit 1; }
lab_show="umpath-"
[ "$(grep -c "umpath-vfio-probe: 0000:0[12]:00.0 bar0=" "$log")" -eq 2 ] \
  || fail "both controllers opened with BAR0 read"
chk s.log "mqes=2048 to_ms=.* dstrd=4 mps=4096" "CAP decoded"
chk s.log "umpath-vfio-probe: dma 262144 bytes at iova 0x[0-9a-f]*; second map ok" "DMA mapped"
# Bring-up through the admin queue, and the identity both controllers report for the
# shared namespace (set in boot.sh): one head name.
[ "$(grep -c "enabled cntlid=[01] serial=S0 .* cmic=0x2 .* namespaces=1" "$log")" -eq 2 ] \
  || fail "both controllers enabled and identified"
ids="nguid=ab000000000000000000000000000001, eui64=ab00000000000001, uuid=6a5e0d2c-6e1b-4c7e-9d1a-000000000001"
[ "$(grep -c "nsid 1 blocks=524288 block_size=512 shared=1 ids=$ids head=nguid-ab000000000000000000000000000001" \
  "$log")" -eq 2 ] || fail "the shared namespace's identity and head name"
chk s.log "umpath-vfio-probe: 2 devices opened, 0 failures" "summary"
chk s.log "umpath-lab: after exited 0" "probe exit status"
chk s.log "umpath-vfio-probe: 0000:09:00.0: NOT_FOUND: no PCI device 0000:09:00.0" "an unknown device is not reported"
chk s.log "umpath-lab: unknown device exited 1" "unknown device exit status"
