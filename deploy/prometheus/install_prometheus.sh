#!/usr/bin/env bash
# Unpacks Debian's prometheus package (the server and promtool) into
# REPO/build/tools/prometheus without installing it system-wide: `apt-get download`
# then `dpkg-deb -x`. Idempotent: a tree that already has both binaries is kept.
# Prints the directory that holds the binaries (…/usr/bin) on its last line.
# Environment: UMPATH_PROMETHEUS_DIR overrides the target directory.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${UMPATH_PROMETHEUS_DIR:-$repo/build/tools/prometheus}"
bin="$dest/usr/bin"

if [ -x "$bin/promtool" ] && [ -x "$bin/prometheus" ] &&
   "$bin/promtool" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download -q prometheus) >&2; }
if ! download 2>/dev/null; then
  # No package list yet (a fresh machine): update once, then try again.
  $SUDO apt-get update -qq >&2
  download
fi
deb="$(ls "$work"/prometheus_*.deb)"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
dpkg-deb -x "$deb" "$dest.tmp"
# Only the binaries are used; a half-unpacked tree never replaces a good one.
"$dest.tmp/usr/bin/promtool" --version >&2
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$bin"
