#!/usr/bin/env bash
# CTest (label lab): umpath's vfio layer on QEMU's NVMe controllers in the lab node:
# container and groups, BAR0 mapped and its registers read, controller bring-up through
# the admin queue, Identify, the namespace's identifiers, DMA memory mapped.
# Usage: vfio_probe_test.sh PROBE_BINARY
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
probe="$(readlink -f "$1")"
work="$(mktemp -d /tmp/umpath-lab-probe-XXXXXX)"
trap 'rm -rf "$work"' EXIT
bash "$here/fetch.sh" >/dev/null
cat > "$work/after" <<AFTER
#!/bin/sh
$probe "\$@"
rc=\$?
$probe 0000:09:00.0
echo "umpath-lab: unknown device exited \$?"
exit \$rc
AFTER
UMPATH_LAB_AFTER="$work/after" bash "$here/mkinitramfs.sh" "$work/initramfs.gz" \
  "$here/smoke_init.sh" "$probe"
timeout 300 bash "$here/boot.sh" "$work/initramfs.gz" 2 "$work/serial.log" || true
grep "umpath-" "$work/serial.log" || { tail -40 "$work/serial.log"; exit 1; }
fail() { tail -40 "$work/serial.log"; echo "FAIL: $*"; exit 1; }
[ "$(grep -c "umpath-vfio-probe: 0000:0[12]:00.0 bar0=" "$work/serial.log")" -eq 2 ] \
  || fail "both controllers opened with BAR0 read"
grep -q "mqes=2048 to_ms=.* dstrd=4 mps=4096" "$work/serial.log" || fail "CAP decoded"
grep -q "umpath-vfio-probe: dma 262144 bytes at iova 0x[0-9a-f]*; second map ok" \
  "$work/serial.log" || fail "DMA mapped"
# Bring-up through the admin queue, and the identity both controllers report for the
# shared namespace (set in boot.sh): one head name.
[ "$(grep -c "enabled cntlid=[01] serial=S0 .* cmic=0x2 .* namespaces=1" "$work/serial.log")" -eq 2 ] \
  || fail "both controllers enabled and identified"
ids="nguid=ab000000000000000000000000000001, eui64=ab00000000000001, uuid=6a5e0d2c-6e1b-4c7e-9d1a-000000000001"
[ "$(grep -c "nsid 1 blocks=524288 block_size=512 shared=1 ids=$ids head=nguid-ab000000000000000000000000000001" \
  "$work/serial.log")" -eq 2 ] || fail "the shared namespace's identity and head name"
grep -q "umpath-vfio-probe: 2 devices opened, 0 failures" "$work/serial.log" || fail "summary"
grep -q "umpath-lab: after exited 0" "$work/serial.log" || fail "probe exit status"
grep -q "umpath-vfio-probe: 0000:09:00.0: NOT_FOUND: no PCI device 0000:09:00.0" \
  "$work/serial.log" || fail "an unknown device is not reported"
grep -q "umpath-lab: unknown device exited 1" "$work/serial.log" || fail "unknown device exit status"
