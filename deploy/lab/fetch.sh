#!/usr/bin/env bash
# Gets what the lab node needs, from Debian's registry only (../shared/LAB.md):
# QEMU 10 from bookworm-backports (installed), the guest kernel UMPATH_LAB_KERNEL names
# (kernel.sh: the bookworm-backports 6.12 cloud kernel by default, trixie-backports' 6.18
# with 6.18; downloaded and unpacked into the cache, never installed), busybox, cpio,
# kmod, fio. Idempotent; the kernel is cached in $UMPATH_LAB_CACHE (default
# ~/.cache/umpath-lab).
set -euo pipefail
. "$(dirname "$0")/kernel.sh"
mkdir -p "$cache"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Our own sources list with bookworm-backports, leaving the system's alone.
uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
uri="${uri:-http://deb.debian.org/debian}"
apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial"
echo "deb $uri bookworm-backports main" > "$apt_dir/sources.list"
bpo_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::State::Lists=$apt_dir/lists")

need_update=1
if ! qemu-system-x86_64 --version 2>/dev/null | grep -q "version 10\."; then
  $SUDO apt-get "${bpo_opts[@]}" -o Dir::Etc::sourceparts=/etc/apt/sources.list.d update -qq
  need_update=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${bpo_opts[@]}" \
    -o Dir::Etc::sourceparts=/etc/apt/sources.list.d install -y -qq --no-install-recommends \
    -t bookworm-backports qemu-system-x86
fi
missing=()
for p in busybox-static cpio kmod fio; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! ls "$kernel_dir"/boot/vmlinuz-* >/dev/null 2>&1; then
  # The kernel's suite: bookworm-backports' lists are QEMU's too; another suite has its
  # own sources file and lists beside them.
  if [ "$kernel_suite" != bookworm-backports ]; then
    apt_dir="$cache/apt-$kernel_suite"
    mkdir -p "$apt_dir/lists/partial"
    echo "deb $uri $kernel_suite main" > "$apt_dir/sources.list"
    bpo_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::State::Lists=$apt_dir/lists")
    need_update=1
  fi
  if [ "$need_update" = 1 ]; then
    apt-get "${bpo_opts[@]}" -o Dir::Etc::sourceparts=- update -qq
  fi
  version="$(apt-cache "${bpo_opts[@]}" -o Dir::Etc::sourceparts=- search --names-only \
    "$kernel_re" | awk '{print $1}' | sort -V | tail -n 1)"
  [ -n "$version" ] || { echo "no $kernel_re in $kernel_suite"; exit 1; }
  (cd "$cache" && apt-get "${bpo_opts[@]}" -o Dir::Etc::sourceparts=- download "$version")
  rm -rf "$kernel_dir"
  dpkg -x "$cache"/"$version"_*.deb "$kernel_dir"
  kver="$(ls "$kernel_modroot/lib/modules")"
  depmod -b "$kernel_modroot" "$kver"
  rm -f "$cache"/linux-image-*.deb
fi
ls "$kernel_dir"/boot/vmlinuz-*
