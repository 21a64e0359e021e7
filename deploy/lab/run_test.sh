#!/usr/bin/env bash
# CTest (label lab): README's main-job command (deploy/lab/run.sh --once) with this
# build's binaries: the lab node boots, umpathd takes both controllers through vfio, the
# verified workload is clean, and the host reaches the agent over the forwarded mTLS
# port with umpathctl (table and JSON) and with buf curl.
# Usage: run_test.sh BUILD_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="$(mktemp -d /tmp/umpath-lab-runtest-XXXXXX)"
trap 'rm -rf "$state"' EXIT
out="$state/out"
UMPATH_BUILD_DIR="$1" UMPATH_LAB_STATE="$state" bash "$here/run.sh" --once | tee "$out"
fail() { echo "FAIL: $*"; exit 1; }
grep -qE "umpath-perf: result .* errors=0 mismatches=0" "$out" || fail "verified workload"
grep -qE "umpath-perf: path 0000:01:00.0 completed=[1-9]" "$out" || fail "path 1 used"
grep -qE "umpath-perf: path 0000:02:00.0 completed=[1-9]" "$out" || fail "path 2 used"
grep -qE "fio on /dev/ublkb0: .*err= *0" "$out" || fail "fio with verify on the exported block device"
grep -qE "^nguid-ab000000000000000000000000000001 +2 +2 +round-robin .*/dev/ublkb0" "$out" \
  || fail "umpathctl heads over mTLS from the host"
grep -q '"name": "heads/nguid-ab000000000000000000000000000001"' "$state/heads.json" \
  || fail "JSON output"
[ -x "$here/../../build/tools/node_modules/.bin/buf" ] || fail "buf is installed (deploy/dev/install-deps.sh)"
grep -q '"name": "heads/nguid-ab000000000000000000000000000001"' "$state/buf.json" \
  || fail "buf curl ListHeads over mTLS"
grep -q '"device": "/dev/ublkb0"' "$state/export.json" || fail "buf curl ExportHead answers the device"
echo "lab: run.sh passed"
