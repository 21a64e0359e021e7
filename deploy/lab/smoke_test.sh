#!/usr/bin/env bash
# CTest (label lab): boots the lab node with two controllers and checks that the guest
# binds both to vfio-pci, each in its own IOMMU group. A lab that cannot start fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d /tmp/umpath-lab-smoke-XXXXXX)"
trap 'rm -rf "$work"' EXIT
bash "$here/fetch.sh" >/dev/null
bash "$here/mkinitramfs.sh" "$work/initramfs.gz" "$here/smoke_init.sh"
start=$(date +%s)
timeout 300 bash "$here/boot.sh" "$work/initramfs.gz" 2 "$work/serial.log" || true
line="$(grep "umpath-lab: .* nvme functions bound" "$work/serial.log" || true)"
echo "${line:-no summary line} ($(( $(date +%s) - start )) s)"
grep "umpath-lab:" "$work/serial.log" || { tail -40 "$work/serial.log"; exit 1; }
groups="$(grep -o "group [0-9]*" "$work/serial.log" | sort -u | wc -l)"
[[ "$line" == "umpath-lab: 2 nvme functions bound to vfio-pci"* ]] && [ "$groups" -eq 2 ] || {
  tail -40 "$work/serial.log"; echo "FAIL: expected 2 controllers on vfio-pci in 2 groups"; exit 1; }
