#!/usr/bin/env bash
# CTest (label lab): boots the lab node with two controllers and checks that the guest
# binds both to vfio-pci, each in its own IOMMU group. A lab that cannot start fails.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init smoke
lab_initramfs
start=$(date +%s)
lab_boot 300 2
line="$(grep "umpath-lab: .* nvme functions bound" "$log" || true)"
echo "${line:-no summary line} ($(( $(date +%s) - start )) s)"
grep "umpath-lab:" "$log" || { tail -40 "$log"; exit 1; }
groups="$(grep -o "group [0-9]*" "$log" | sort -u | wc -l)"
[[ "$line" == "umpath-lab: 2 nvme functions bound to vfio-pci"* ]] && [ "$groups" -eq 2 ] || {
  tail -40 "$log"; echo "FAIL: expected 2 controllers on vfio-pci in 2 groups"; exit 1; }
