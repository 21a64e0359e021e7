#!/usr/bin/env bash
# Builds umpathd's OCI image from Debian's packages and this build, with no container
# registry and no daemon: mmdebstrap makes a root filesystem of the host's Debian release
# holding the essential packages (/bin/sh and coreutils, which the CSI sidecar's script
# uses) and the packages whose libraries the binaries load, found by ldd and dpkg -S so
# the list follows the build; umoci adds it and the binaries as two layers, sets the
# config and writes an OCI image layout; an oci-archive tarball of it is what a node
# imports (ctr -n k8s.io images import FILE).
#
#   bash deploy/image/build.sh [--umpathd=PATH] [--umpathctl=PATH] [--out=DIR]
#   bash deploy/image/build.sh --print-ref    # the image's name:tag, as the manifests use it
#
# PATHs default to build/release/umpathd and build/release/client/umpathctl, DIR to
# build/image. Writes DIR/oci (the layout, tag VERSION) and DIR/umpathd-VERSION.oci.tar,
# and prints "image: REF", its size and digest. The name is umpath/umpathd, the tag the
# project's version in CMakeLists.txt: one source for this script, the manifests and
# their kustomization (deploy/kubernetes/validate.mjs checks they agree).
#
# Runs as root (mmdebstrap --mode=root; CI is root). The downloaded packages are kept in
# ~/.cache/umpath-image/apt (UMPATH_IMAGE_CACHE): a second build downloads only the
# package indices.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
readonly name="umpath/umpathd"

version="$(sed -n 's/^project(umpath VERSION \([0-9][0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")"
[ -n "$version" ] || { echo "build.sh: no 'project(umpath VERSION x.y.z' in CMakeLists.txt" >&2; exit 1; }
ref="$name:$version"

umpathd="$repo/build/release/umpathd"
umpathctl="$repo/build/release/client/umpathctl"
out="$repo/build/image"
for arg in "$@"; do
  case "$arg" in
    --print-ref) echo "$ref"; exit 0 ;;
    --umpathd=*) umpathd="${arg#*=}" ;;
    --umpathctl=*) umpathctl="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
for tool in mmdebstrap umoci; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (bash deploy/dev/install-deps.sh)" >&2; exit 1; }
done
for bin in "$umpathd" "$umpathctl"; do
  [ -x "$bin" ] || { echo "build.sh: $bin is not built" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "build.sh: run as root (mmdebstrap --mode=root)" >&2; exit 1; }

start=$(date +%s)
# The packages that own the libraries the binaries load. A library no package owns
# (built by hand into /usr/local, say) would be missing from the image: refuse it.
packages() {
  local bin lib owner
  for bin in "$@"; do
    if ldd "$bin" | grep -q "not found"; then
      ldd "$bin" | grep "not found" >&2
      return 1
    fi
    ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
  done | sort -u | while read -r lib; do
    # usrmerge: ldd says /lib/..., dpkg may know it under /usr/lib/... or the reverse.
    owner="$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null ||
      dpkg -S "/usr$lib" 2>/dev/null)" || { echo "build.sh: no package owns $lib" >&2; return 1; }
    echo "${owner%%: *}"
  done | sort -u
}
pkgs="$(packages "$umpathd" "$umpathctl")" || exit 1
echo "packages: $(paste -sd' ' <<<"$pkgs")"

# The host's release: the binaries were linked against its libraries.
suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ -n "$suite" ] || { echo "build.sh: no VERSION_CODENAME in /etc/os-release" >&2; exit 1; }
revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
# The commit's time dates the image and its files: two builds of one commit differ only
# where Debian's packages moved.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}"
created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"

cache="${UMPATH_IMAGE_CACHE:-$HOME/.cache/umpath-image}/apt"
mkdir -p "$cache" "$out"
work="$(mktemp -d "$out/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

# Documentation, man pages and translations are of no use in a container; the
# copyright files stay (the licences of what the image ships). The merged-usr hook sets
# up the /usr symlinks itself, instead of the usrmerge package, which pulls perl in.
# eatmydata (where the host has it) spares dpkg its fsyncs: the tree is thrown away on
# failure anyway.
hooks=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
command -v eatmydata >/dev/null && hooks+=(--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata)
if ! mmdebstrap --mode=root --format=directory --variant=essential \
  --include="$(paste -sd, <<<"$pkgs")" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "${hooks[@]}" --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $cache /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $cache" \
  "$suite" "$rootfs" >"$work/mmdebstrap.log" 2>&1; then
  tail -n 40 "$work/mmdebstrap.log" >&2
  echo "build.sh: mmdebstrap failed" >&2
  exit 1
fi
# The runtime mounts /dev; device nodes in a layer are refused by rootless runtimes. The
# files written during the install are dated to the commit like the packages' own, so
# two builds of one commit with the same packages give the same layer.
rm -rf "${rootfs:?}"/dev/*
find "$rootfs" -newermt "@$SOURCE_DATE_EPOCH" -print0 |
  xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"
echo "rootfs: $(du -sm "$rootfs" | cut -f1) MiB, $(chroot "$rootfs" dpkg-query -W | wc -l) packages ($(($(date +%s) - start)) s)"

# The binaries, without their debug sections (the build keeps them; the build id ties
# the two together).
app="$work/app"
# The mount points of the DaemonSet's volumes, there in a read-only root.
install -d "$app/usr/local/bin" "$app/usr/local/share/bash-completion/completions" \
  "$app/etc/umpath" "$app/run/umpath" "$app/var/lib/umpath"
strip --strip-debug -o "$app/usr/local/bin/umpathd" "$umpathd"
strip --strip-debug -o "$app/usr/local/bin/umpathctl" "$umpathctl"
"$umpathctl" completion bash >"$app/usr/local/share/bash-completion/completions/umpathctl"
find "$app" -exec touch -d "@$SOURCE_DATE_EPOCH" {} +

layout="$out/oci"
rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci insert --image "$layout:$version" --history.created="$created" \
  --history.created_by="mmdebstrap --variant=essential $suite (+ the binaries' libraries)" "$rootfs" /
umoci insert --image "$layout:$version" --history.created="$created" \
  --history.created_by="umpathd and umpathctl, revision $revision" "$app" /
# Where the source is: UMPATH_IMAGE_SOURCE, else the origin remote when it is a URL (a
# clone of a local path says nothing to whoever pulls the image), else no label.
source="${UMPATH_IMAGE_SOURCE:-$(git -C "$repo" remote get-url origin 2>/dev/null || true)}"
source_label=()
[[ "$source" == *://* || "$source" == *@*:* ]] &&
  source_label=(--config.label=org.opencontainers.image.source="$source")
# Root: the agent binds vfio devices, makes ublk devices and reads other processes'
# /proc (the DaemonSet runs it privileged, as uid 0).
umoci config --image "$layout:$version" --created="$created" --history.created="$created" \
  --architecture="$(dpkg --print-architecture)" --os=linux --config.user=0:0 \
  --config.env=PATH=/usr/local/bin:/usr/bin:/bin --config.workingdir=/ \
  --config.entrypoint=/usr/local/bin/umpathd --config.cmd=--flagfile=/etc/umpath/umpathd.flags \
  --config.stopsignal=SIGTERM \
  --config.label=org.opencontainers.image.title=umpathd \
  --config.label="org.opencontainers.image.description=NVMe multipath agent (umpathd) and its CLI (umpathctl)" \
  --config.label=org.opencontainers.image.version="$version" \
  --config.label=org.opencontainers.image.revision="$revision" \
  "${source_label[@]}" \
  --config.label=org.opencontainers.image.created="$created"
umoci gc --layout "$layout"
# containerd names an imported image by the annotation io.containerd.image.name (with
# Debian 12's containerd 1.6, `ctr -n k8s.io images import` of this archive lists
# docker.io/umpath/umpathd:0.1.0), and the kubelet looks "umpath/umpathd:V" up under
# docker.io/umpath/umpathd:V.
python3 - "$layout/index.json" "docker.io/$ref" <<'PY'
import json, sys
path, full = sys.argv[1], sys.argv[2]
with open(path) as f:
    index = json.load(f)
for m in index["manifests"]:
    m.setdefault("annotations", {})["io.containerd.image.name"] = full
with open(path, "w") as f:
    json.dump(index, f, separators=(",", ":"))
PY

archive="$out/umpathd-$version.oci.tar"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  -C "$layout" -cf "$archive.tmp" . && mv "$archive.tmp" "$archive"
digest="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$layout/index.json")"
echo "image: $ref (docker.io/$ref), manifest $digest"
echo "archive: $archive, $(du -m "$archive" | cut -f1) MiB; built in $(($(date +%s) - start)) s"
