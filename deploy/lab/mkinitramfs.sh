#!/usr/bin/env bash
# Builds the lab node's initramfs: busybox, the kernel modules the lab needs (decompressed
# here, loaded in dependency order by /init), an /init, and any programs given with the
# shared libraries ldd lists for them, at the same paths (LAB.md).
# Usage: mkinitramfs.sh OUT.cpio.gz INIT_SCRIPT [PROGRAM...]
# With UMPATH_LAB_AFTER=FILE, FILE becomes /lab/after (run by the init with the BDFs);
# with UMPATH_LAB_FILES=DIR, DIR's tree is copied into the root.
set -euo pipefail
out="$1"; init="$2"; shift 2
# The kernel UMPATH_LAB_KERNEL names (kernel.sh); NVMe core and PCI are built into both.
. "$(dirname "$0")/kernel.sh"
kdir="$kernel_modroot"
kver="$(ls "$kdir/lib/modules")"
# dummy: a second network interface with an address of its own (kernel_test.sh, kf).
# tls, gcm, ghash_generic: the kernel TLS that NVMe/TCP hands the socket to after
# tlshd's handshake, and its AES-GCM (tls_test.sh; the node has no modprobe to load
# them on demand: without them tlshd says "The kernel does not support the requested
# algorithm" after a handshake that completed).
modules=(vfio_pci vfio_iommu_type1 virtio_net ublk_drv nvmet_tcp nvme_tcp dummy tls gcm ghash_generic)
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,run,mnt,lib/modules,lab}
cp /bin/busybox "$root/bin/busybox"
for m in "${modules[@]}"; do
  modprobe --show-depends -d "$kdir" -S "$kver" "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  name="$(basename "$ko" .xz)"
  case "$ko" in
    *.xz) xz -dc "$ko" > "$root/lib/modules/$name" ;;
    *) cp "$ko" "$root/lib/modules/$name" ;;
  esac
  echo "/lib/modules/$name" >> "$root/lib/modules/order"
done
for prog in "$@"; do
  mkdir -p "$root$(dirname "$prog")"
  cp "$prog" "$root$prog"
  # A static program (buf) has no libraries: ldd says so and fails.
  { ldd "$prog" 2>/dev/null || true; } | awk '/=>/ {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
    [ -n "$lib" ] && [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
# The loader at its canonical path, whatever ldd printed.
mkdir -p "$root/lib64"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
cp "$init" "$root/init"
cp "$(dirname "$0")/guest_lib.sh" "$root/lab/lib.sh"
cp "$(dirname "$0")/nvmet_lib.sh" "$root/lab/nvmet.sh"
# UMPATH_LAB_FILES=DIR: a tree copied into the root as it is (certificates, configs).
[ -n "${UMPATH_LAB_FILES:-}" ] && cp -a "$UMPATH_LAB_FILES"/. "$root"/
if [ -n "${UMPATH_LAB_AFTER:-}" ]; then
  cp "$UMPATH_LAB_AFTER" "$root/lab/after"
  chmod +x "$root/lab/after"
fi
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
