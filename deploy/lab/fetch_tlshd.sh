#!/usr/bin/env bash
# Gets the TLS handshake daemon for the lab node (tls_test.sh): Debian 13 (trixie) has
# ktls-utils' tlshd, Debian 12 has none. tlshd, nvme-cli (it derives and inserts the
# target's PSK the way nvme-cli on a Debian 13 target does) and keyctl, with every
# library they need down to trixie's own libc and dynamic loader, downloaded from trixie
# main through a sources file of our own (as fetch.sh does for the kernels) and unpacked
# into $cache/trixie-tlshd, never installed. The node runs them with that loader:
#   $T/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $T/usr/lib/x86_64-linux-gnu $T/usr/sbin/tlshd
# Lab only: a production node installs ktls-utils (Debian 13) and runs tlshd.service.
# Idempotent; prints the tree's path.
set -euo pipefail
. "$(dirname "$0")/kernel.sh"
root="$cache/trixie-tlshd"
if [ ! -x "$root/usr/sbin/tlshd" ] || [ ! -x "$root/usr/sbin/nvme" ]; then
  uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  uri="${uri:-http://deb.debian.org/debian}"
  apt_dir="$cache/apt-trixie"
  mkdir -p "$apt_dir/lists/partial"
  echo "deb $uri trixie main" > "$apt_dir/sources.list"
  opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists")
  apt-get "${opts[@]}" update -qq
  # The packages and their dependencies (not nvme-cli's uuid-runtime: a script's, with
  # adduser and perl behind it).
  pkgs="$(apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances --no-pre-depends ktls-utils libnvme1t64 libjson-c5 keyutils |
    grep -v '^[ <]' | sort -u)"
  debs="$(mktemp -d)"
  (cd "$debs" && apt-get "${opts[@]}" download $pkgs nvme-cli >/dev/null)
  rm -rf "$root.new"
  mkdir -p "$root.new"
  for d in "$debs"/*.deb; do dpkg -x "$d" "$root.new"; done
  rm -rf "$debs" "$root"
  mv "$root.new" "$root"
fi
echo "$root"
