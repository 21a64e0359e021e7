#!/usr/bin/env bash
# The image as a node gets it: builds it (deploy/image/build.sh) from the given binaries,
# or takes an oci-archive already built, unpacks the archive with umoci, checks its
# config (entrypoint, user, labels, and the name containerd gives it: build.sh
# --print-ref's, which the manifest check holds the manifests to), then runs the image's own entrypoint and command from the unpacked
# root filesystem under bwrap, read-only as the DaemonSet has it (readOnlyRootFilesystem)
# with the DaemonSet's mounts (/etc/umpath holding the flags, /run/umpath,
# /var/lib/umpath), on the simulator: the image's umpathctl and the host's see its two
# heads and its info over the socket, and SIGTERM stops it cleanly. Every library the
# binaries need must be in the image (its own ldd), and the check that says so must
# refuse a root filesystem that lacks one.
#
#   bash deploy/image/image_test.sh UMPATHD UMPATHCTL OUTDIR   # builds OUTDIR/umpathd-V.oci.tar
#   bash deploy/image/image_test.sh --archive=FILE UMPATHCTL   # tests FILE as it is
#
# Runs as root (mmdebstrap, bwrap). Closes with "image_test: N passed, M failed".
set -uo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"

# shellcheck disable=SC2034  # read by check_lib.sh's summary
check_test=image_test
# shellcheck source=../check_lib.sh
. "$repo/deploy/check_lib.sh"

archive=""
if [[ "${1:-}" == --archive=* ]]; then
  archive="${1#*=}"
  host_ctl="${2:?usage: image_test.sh --archive=FILE UMPATHCTL}"
else
  umpathd="${1:?usage: image_test.sh UMPATHD UMPATHCTL OUTDIR}"
  host_ctl="${2:?usage: image_test.sh UMPATHD UMPATHCTL OUTDIR}"
  out="${3:?usage: image_test.sh UMPATHD UMPATHCTL OUTDIR}"
fi
for tool in umoci bwrap python3; do
  command -v "$tool" >/dev/null 2>&1
  check "$tool is installed" $? "bash deploy/dev/install-deps.sh"
done
[ "$failed" -eq 0 ] || summary
ref="$(bash "$repo/deploy/image/build.sh" --print-ref)"
version="${ref##*:}"

tmp="$(mktemp -d /tmp/umpath-image-test-XXXXXX)"
pid=""
cleanup() {
  [ -z "$pid" ] || { kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  rm -rf "$tmp"
}
trap cleanup EXIT

# 1. The image.
t0=$(date +%s)
if [ -z "$archive" ]; then
  bash "$repo/deploy/image/build.sh" --umpathd="$umpathd" --umpathctl="$host_ctl" --out="$out" \
    >"$tmp/build.log" 2>&1
  rc=$?
  check "build.sh built the image ($(($(date +%s) - t0)) s)" $rc "$(tail -n 30 "$tmp/build.log")"
  [ $rc -eq 0 ] || summary
  grep -E '^(packages|rootfs|image|archive):' "$tmp/build.log"
  archive="$out/umpathd-$version.oci.tar"
fi
t1=$(date +%s)
mkdir "$tmp/layout"
tar -C "$tmp/layout" -xf "$archive"
check "the archive $(basename "$archive") is an OCI layout ($(du -m "$archive" | cut -f1) MiB)" \
  $? "not a tarball"
mkdir "$tmp/image"
umoci raw unpack --image "$tmp/layout:$version" "$tmp/image/rootfs" >"$tmp/unpack.log" 2>&1
check "umoci unpacks tag $version" $? "$(cat "$tmp/unpack.log")"
[ "$failed" -eq 0 ] || summary
rootfs="$tmp/image/rootfs"
echo "     root filesystem: $(du -sm "$rootfs" | cut -f1) MiB"

# 2. Its config: what the runtime runs and what the registry-less node calls it.
python3 - "$tmp/layout" "$version" "docker.io/$ref" "$(git -C "$repo" rev-parse HEAD 2>/dev/null)" \
  >"$tmp/config.txt" <<'PY'
import json, os, sys
layout, tag, full, revision = sys.argv[1:5]
def blob(digest):
    algo, hexd = digest.split(":")
    with open(os.path.join(layout, "blobs", algo, hexd)) as f:
        return json.load(f)
with open(os.path.join(layout, "index.json")) as f:
    index = json.load(f)
ms = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
def out(name, ok, why=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + why}")
out(f"index.json: one manifest tagged {tag}", len(ms) == 1, json.dumps(index["manifests"]))
if ms:
    m = ms[0]
    name = m["annotations"].get("io.containerd.image.name")
    out(f"index.json: io.containerd.image.name {full} (the manifests' image, as containerd names it)",
        name == full, f"is {name}")
    image = blob(blob(m["digest"])["config"]["digest"])
    c = image.get("config", {})
    labels = c.get("Labels") or {}
    out("config: entrypoint /usr/local/bin/umpathd", c.get("Entrypoint") == ["/usr/local/bin/umpathd"],
        json.dumps(c.get("Entrypoint")))
    out("config: cmd --flagfile=/etc/umpath/umpathd.flags",
        c.get("Cmd") == ["--flagfile=/etc/umpath/umpathd.flags"], json.dumps(c.get("Cmd")))
    out("config: user 0:0", c.get("User") == "0:0", json.dumps(c.get("User")))
    out(f"config: label org.opencontainers.image.version {tag}",
        labels.get("org.opencontainers.image.version") == tag, json.dumps(labels))
    out("config: label org.opencontainers.image.revision is this checkout's commit",
        revision != "" and labels.get("org.opencontainers.image.revision") == revision,
        f"{labels.get('org.opencontainers.image.revision')} != {revision}")
    out("config: os linux, architecture " + image.get("architecture", "?"),
        image.get("os") == "linux" and bool(image.get("architecture")))
    print("argv " + json.dumps((c.get("Entrypoint") or []) + (c.get("Cmd") or [])))
PY
grep -v '^argv ' "$tmp/config.txt"
passed=$((passed + $(grep -c '^ok' "$tmp/config.txt")))
failed=$((failed + $(grep -c '^FAIL' "$tmp/config.txt")))
mapfile -t argv < <(grep '^argv ' "$tmp/config.txt" | cut -c6- | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)))')
[ ${#argv[@]} -gt 0 ] || { check "the image's config has a command" 1; summary; }

# 3. What the binaries load is in the image. The sandbox: the image's root, read-only,
# with /proc, /dev and the DaemonSet's mounts; its own network namespace (no port of
# the host's in the way).
mkdir -p "$tmp/etc-umpath" "$tmp/run-umpath" "$tmp/var-lib-umpath"
sandbox() {  # ROOTFS: sets box, the bwrap command line that runs a command in ROOTFS
  box=(bwrap --ro-bind "$1" / --proc /proc --dev /dev --unshare-net --die-with-parent
    --ro-bind "$tmp/etc-umpath" /etc/umpath --bind "$tmp/run-umpath" /run/umpath
    --bind "$tmp/var-lib-umpath" /var/lib/umpath)
}
in_image() {  # ROOTFS COMMAND...
  local box
  sandbox "$1"
  shift
  "${box[@]}" "$@"
}
libraries_found() {  # ROOTFS: every binary's libraries resolve inside it
  local root="$1" bin out rc=0
  for bin in /usr/local/bin/umpathd /usr/local/bin/umpathctl; do
    out="$(in_image "$root" /usr/bin/ldd "$bin" 2>&1)" || { echo "ldd $bin failed: $out"; rc=1; }
    if grep -q "not found" <<<"$out"; then
      echo "$bin: $(grep "not found" <<<"$out" | tr -s '\t\n' '  ')"
      rc=1
    fi
  done
  return $rc
}
why="$(libraries_found "$rootfs")"
check "the image has every library umpathd and umpathctl load (its own ldd)" $? "$why"
why="$(in_image "$rootfs" /bin/sh -c \
  'for c in cat sleep mv rm printf umpathctl; do command -v "$c" >/dev/null || echo "no $c"; done' 2>&1)"
check "the image's /bin/sh has what the CSI sidecar's script runs (cat sleep mv rm printf umpathctl)" \
  "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
for d in /etc/umpath /run/umpath /var/lib/umpath; do
  [ -d "$rootfs$d" ]
  check "the image has the mount point $d" $?
done

# 4. The image's own command, as the DaemonSet's container runs it (its flags file on
# /etc/umpath), on the simulator.
cat >"$tmp/etc-umpath/umpathd.flags" <<'FLAGS'
--sim=1:2:2
--kernel=false
--ublk=false
--handover_socket=
--socket=/run/umpath/umpathd.sock
--state_file=/var/lib/umpath/heads
--admin_uids=0
--node=image-test
FLAGS
sandbox "$rootfs"
"${box[@]}" "${argv[@]}" >"$tmp/umpathd.log" 2>&1 &
pid=$!
sock="$tmp/run-umpath/umpathd.sock"
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ]
check "umpathd from the image (${argv[*]}) serves $sock" $? "$(tail -n 20 "$tmp/umpathd.log")"
# bwrap ($pid) waits for its child and returns its status; the signal goes to umpathd.
agent="$(ps -o pid= --ppid "$pid" | tr -d ' ')"
[ "$(cat "/proc/$agent/comm" 2>/dev/null)" = umpathd ]
check "bwrap's child is umpathd" $? "pid ${agent:-none}"

heads_seen() {  # prints the number of heads in `umpathctl heads -o json` on stdin
  python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("heads", [])))' 2>/dev/null
}
n="$(in_image "$rootfs" /usr/local/bin/umpathctl heads -o json 2>"$tmp/ctl.err" | heads_seen)"
check "the image's umpathctl (from the image, over the socket): 2 heads" "$([ "$n" = 2 ] && echo 0 || echo 1)" \
  "saw ${n:-none}: $(cat "$tmp/ctl.err")"
n="$("$host_ctl" --socket="$sock" heads -o json 2>"$tmp/ctl.err" | heads_seen)"
check "the host's umpathctl: 2 heads" "$([ "$n" = 2 ] && echo 0 || echo 1)" "saw ${n:-none}: $(cat "$tmp/ctl.err")"
info="$(in_image "$rootfs" /usr/local/bin/umpathctl info -o json 2>&1)"
python3 -c '
import json, sys
i = json.loads(sys.argv[1])["agent_info"]
sys.exit(0 if i["version"] == sys.argv[2] and i["node"] == "image-test" and i["caller_role"] == "admin" else 1)
' "$info" "$version" 2>/dev/null
check "umpathctl info: version $version, node image-test, role admin" $? "$info"

if [ -n "$agent" ]; then
  kill -TERM "$agent"
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
if kill -0 "$pid" 2>/dev/null; then
  check "umpathd stops on SIGTERM within 20 s" 1 "$(tail -n 20 "$tmp/umpathd.log")"
else
  wait "$pid"
  rc=$?
  pid=""
  check "umpathd stops on SIGTERM, exit 0" $rc "exit $rc: $(tail -n 20 "$tmp/umpathd.log")"
fi

# 5. The library check can fail: the same root filesystem without liburing.
cp -al "$rootfs" "$tmp/broken"
rm -f "$tmp/broken"/usr/lib/*/liburing.so.*
why="$(libraries_found "$tmp/broken")"
rc=$?
check "the library check refuses a root filesystem without liburing" "$([ $rc -ne 0 ] && echo 0 || echo 1)" \
  "it passed"
grep -q "liburing.so.2 => not found" <<<"$why"
check "and names liburing.so.2" $? "$why"

echo "     image test: $(($(date +%s) - t1)) s after the build"
summary
