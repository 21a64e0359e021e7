#!/usr/bin/env bash
# Boots the lab node: QEMU 10 under TCG, an emulated IOMMU, CONTROLLERS NVMe controllers
# of one subsystem (each behind its own root port, so QMP can hot-unplug it) sharing one
# namespace with explicit identifiers, a QMP socket, and the guest's port 50051
# forwarded to a loopback port (LAB.md). CONTROLLERS=0: no QEMU NVMe at all (the
# guest's own NVMe/TCP target gives the paths, deploy/lab/nvmet_lib.sh).
# Usage: boot.sh INITRAMFS CONTROLLERS LOG [HOSTPORT] [QMP_SOCKET]  (runs in the foreground)
# UMPATH_LAB_MULTIPATH=Y turns the guest kernel's native multipath on (the baseline);
# UMPATH_LAB_NAMESPACES=N gives the subsystem N shared namespaces; UMPATH_LAB_TCG_THREAD=
# single runs both vCPUs on one host thread (QEMU 10's multi-threaded TCG can abort in
# iotlb_to_section when PCI functions come and go under load).
set -euo pipefail
initramfs="$1"; controllers="$2"; log="$3"; hostport="${4:-0}"; qmp="${5:-}"
# The kernel UMPATH_LAB_KERNEL names (kernel.sh) and what its command line needs.
. "$(dirname "$0")/kernel.sh"
kernel="$(ls "$kernel_dir"/boot/vmlinuz-*)"
work="$(dirname "$log")"
ns="$work/ns0.img"
[ "$controllers" = 0 ] || [ -e "$ns" ] || truncate -s 256M "$ns"

args=(
  -machine q35,kernel-irqchip=split -accel "tcg,thread=${UMPATH_LAB_TCG_THREAD:-multi}"
  -cpu max -smp 2 -m 2G
  -device intel-iommu,intremap=on,caching-mode=on
  -nographic -no-reboot -serial "file:$log" -monitor none
  -kernel "$kernel" -initrd "$initramfs"
  -append "console=ttyS0 intel_iommu=on nvme_core.multipath=${UMPATH_LAB_MULTIPATH:-N} panic=-1 oops=panic quiet$kernel_append"
)
if [ "$controllers" != 0 ]; then
  args+=(-device nvme-subsys,id=s0,nqn=nqn.2026-01.io.umpath:lab)
  for i in $(seq 0 $((controllers - 1))); do
    args+=(-device "pcie-root-port,id=rp$i,chassis=$((i + 1)),slot=$((i + 1))"
           -device "nvme,id=c$i,serial=S0,subsys=s0,bus=rp$i")
  done
  args+=(-drive "file=$ns,if=none,id=d0,format=raw,cache=none,aio=threads"
         -device "nvme-ns,drive=d0,nsid=1,shared=on,nguid=ab000000-0000-0000-0000-000000000001,eui64=0xab00000000000001,uuid=6a5e0d2c-6e1b-4c7e-9d1a-000000000001")
fi
# UMPATH_LAB_NAMESPACES=N: N shared namespaces (64 MiB each after the first), NSID i with
# identifiers ...01ii.
for i in $(seq 2 "${UMPATH_LAB_NAMESPACES:-1}"); do
  [ "$controllers" != 0 ] || break
  img="$work/ns$((i - 1)).img"
  [ -e "$img" ] || truncate -s 64M "$img"
  id="$(printf '%02d' "$i")"
  args+=(-drive "file=$img,if=none,id=d$((i - 1)),format=raw,cache=none,aio=threads"
         -device "nvme-ns,drive=d$((i - 1)),nsid=$i,shared=on,nguid=ab000000-0000-0000-0000-0000000001$id,eui64=0xab000000000001$id,uuid=6a5e0d2c-6e1b-4c7e-9d1a-0000000001$id")
done
if [ "$hostport" != 0 ]; then
  # UMPATH_LAB_HOSTFWD: more forwards from host loopback ports to the guest, e.g.
  # "hostfwd=tcp:127.0.0.1:19810-:9810".
  args+=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$hostport-:50051${UMPATH_LAB_HOSTFWD:+,$UMPATH_LAB_HOSTFWD}"
         -device virtio-net-pci,netdev=n0)
fi
# UMPATH_LAB_EXTRA: more devices for a test (another subsystem, a faulty controller).
# shellcheck disable=SC2206
[ -n "${UMPATH_LAB_EXTRA:-}" ] && args+=(${UMPATH_LAB_EXTRA})
[ -n "$qmp" ] && args+=(-qmp "unix:$qmp,server=on,wait=off")
# UMPATH_LAB_WRAP: a command to run QEMU under (e.g. "gdb -batch -ex run -ex bt --args").
# shellcheck disable=SC2086
exec ${UMPATH_LAB_WRAP:-} qemu-system-x86_64 "${args[@]}"
