#!/usr/bin/env bash
# CTest (label lab): README's main-job command (deploy/lab/run.sh --once) with this
# build's binaries: the lab node boots, umpathd takes both controllers through vfio, the
# verified workload is clean, and the host reaches the agent over the forwarded mTLS
# port with umpathctl and with buf curl (their JSON answers checked).
# Usage: run_test.sh BUILD_DIR
set -euo pipefail
. "$(dirname "$0")/lib.sh"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d /tmp/umpath-lab-runtest-XXXXXX)"
trap 'rm -rf "$work"' EXIT
log="$work/out"
UMPATH_BUILD_DIR="$1" UMPATH_LAB_STATE="$work" bash "$here/run.sh" --once | tee "$log"
lab_show="umpath-perf: |fio on "
H=nguid-ab000000000000000000000000000001
chk out "umpath-perf: result .* errors=0 mismatches=0" "verified workload"
chk out "umpath-perf: path 0000:01:00.0 completed=[1-9]" "path 1 used"
chk out "umpath-perf: path 0000:02:00.0 completed=[1-9]" "path 2 used"
chk out "fio on /dev/ublkb0: .*err= *0" "fio with verify on the exported block device"
jchk heads.json "[head(j, '$H')[k] for k in ('live_paths', 'io_policy', 'export_device')] == [2, 'IO_POLICY_ROUND_ROBIN', '/dev/ublkb0'] and len(paths(head(j, '$H'))) == 2" \
  "umpathctl -o json heads over mTLS from the host: two live paths, round-robin, exported"
[ -x "$here/../../build/tools/node_modules/.bin/buf" ] || fail "buf is installed (deploy/dev/install-deps.sh)"
jchk buf.json "heads(j) == ['$H']" "buf curl ListHeads over mTLS"
jchk export.json "j['device'] == '/dev/ublkb0'" "buf curl ExportHead answers the device"
# protojson names fields in lowerCamelCase, and a uint64 as a string.
jchk export.json "j.get('byIdLink') == '/dev/disk/by-id/umpath-$H' and j.get('major', 0) > 0 and int(j.get('diskseq', 0)) > 0" \
  "buf curl ExportHead answers its dev_t, diskseq and by-id link"
echo "lab: run.sh passed"
