# shellcheck shell=bash disable=SC2034  # the scripts that source this read what it sets
# Sourced by fetch.sh, boot.sh and mkinitramfs.sh: the guest kernel UMPATH_LAB_KERNEL
# names, 6.12 (the default and CI's) or 6.18 (LAB.md, "A second guest kernel"). Sets
# cache, and for the kernel: kernel_suite (the Debian suite it comes from), kernel_re
# (its package name), kernel_dir (where it is unpacked), kernel_modroot (the base that
# depmod -b and modprobe -d take: its lib/modules/KVER holds the modules) and
# kernel_append (what its command line needs besides the lab's own).
cache="${UMPATH_LAB_CACHE:-$HOME/.cache/umpath-lab}"
case "${UMPATH_LAB_KERNEL:-6.12}" in
  6.12)
    kernel_suite=bookworm-backports
    kernel_re='^linux-image-6\.12\..*\+deb12-cloud-amd64$'
    kernel_dir="$cache/kernel"
    kernel_modroot="$kernel_dir"
    kernel_append=""
    ;;
  6.18)
    kernel_suite=trixie-backports
    kernel_re='^linux-image-6\.18\..*\+deb13-cloud-amd64$'
    kernel_dir="$cache/kernel-6.18"
    # trixie's packages are merged-/usr: the modules are under usr/lib/modules.
    kernel_modroot="$kernel_dir/usr"
    # Without it 6 of 30 boots under load panicked at once ("timer doesn't work through
    # Interrupt-remapped IO-APIC"); with it 23 of 23 booted (LAB.md).
    kernel_append=" no_timer_check"
    ;;
  *)
    echo "UMPATH_LAB_KERNEL=$UMPATH_LAB_KERNEL: the lab has 6.12 and 6.18" >&2
    exit 2
    ;;
esac
