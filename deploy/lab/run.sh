#!/usr/bin/env bash
# umpathd's main job on a machine without NVMe hardware: the lab node (LAB.md). Sets up
# what it needs (Debian packages, the guest kernel, a release build), boots QEMU with two
# NVMe controllers of one subsystem behind an emulated IOMMU, runs umpathd in the guest
# on both through vfio-pci, runs a short verified workload through the multipath path,
# exports the head as the node's block device /dev/ublkb0 and runs fio with verify on it,
# prints `umpathctl heads` from the host over the forwarded mTLS port, and says how to
# reach the agent with umpathctl and buf curl. The node stays up until Ctrl-C.
#
# Usage: deploy/lab/run.sh [--once]   (--once: stop after the report; tests use it)
# UMPATH_BUILD_DIR=DIR uses binaries already built there (skips setup and build).
# UMPATH_LAB_PORT=PORT chooses the loopback port (default: a free one).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
lab="$root/deploy/lab"
once=0
[ "${1:-}" = "--once" ] && once=1

build="${UMPATH_BUILD_DIR:-}"
if [ -z "$build" ]; then
  bash "$root/deploy/dev/install-deps.sh"
  (cd "$root" && cmake --preset release >/dev/null && \
     cmake --build build/release -j2 --target umpathd umpath-perf umpathctl)
  build="$root/build/release"
fi
umpathd="$(readlink -f "$build/umpathd")"
perf="$(readlink -f "$build/umpath-perf")"
ctl="$(readlink -f "$build/client/umpathctl")"
bash "$lab/fetch.sh" >/dev/null

state="${UMPATH_LAB_STATE:-$HOME/.cache/umpath-lab/run}"
mkdir -p "$state"
work="$(mktemp -d /tmp/umpath-lab-run-XXXXXX)"
qemu_pid=""
cleanup() { [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# mTLS for the forwarded port: a CA, the agent's certificate, and an admin client's.
tls="$state/tls"
if [ ! -s "$tls/admin.pem" ]; then
  mkdir -p "$tls"
  (cd "$tls"
   key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1.key" 2>/dev/null; }
   key ca
   openssl req -x509 -new -key ca.key -out ca.pem -days 3650 -subj /CN=umpath-lab-ca
   cert() {
     key "$1"
     openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
     printf 'subjectAltName=%s\n' "$3" > "$1.ext"
     openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
       -extfile "$1.ext" -out "$1.pem" 2>/dev/null
   }
   cert server umpath-lab DNS:localhost,IP:127.0.0.1
   cert admin lab-admin DNS:lab-admin)
fi

port="${UMPATH_LAB_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
. "$lab/lib.sh"
fio="$(lab_fio)"
# In the node: umpath-perf runs a verified workload through the multipath path on both
# controllers; then umpathd takes them, serves, and exports the head as /dev/ublkb0,
# which a node application (fio here) uses.
cat > "$work/after" <<AFTER
#!/bin/sh
$perf --socket=/run/umpath/perf.sock --state_file=/tmp/perf-heads --node=umpath-lab \
  --vfio_devices=all --default_io_policy=round-robin --workers=2 --ublk=false \
  --workload=verify --workload_secs=5 --workload_qd=16
$umpathd --socket=/run/umpath/umpathd.sock --state_file=/var/lib/umpath/heads --node=umpath-lab \
  --vfio_devices=all --default_io_policy=round-robin --workers=2 --export_all \
  --tcp_address=0.0.0.0:50051 --tls_cert_file=/lab/tls/server.pem --tls_key_file=/lab/tls/server.key \
  --tls_client_ca_file=/lab/tls/ca.pem --admin_names=lab-admin &
for i in \$(seq 1 600); do [ -b /dev/ublkb0 ] && break; sleep 0.5; done
echo "umpath-lab: block device \$(ls /dev | grep ublkb | tr '\n' ' ')"
$fio --name=node-app --filename=/dev/ublkb0 --ioengine=io_uring --direct=1 --rw=randrw --bs=4k \
  --iodepth=16 --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 2>&1 \
  | grep -E "err=|read:|write:" | sed 's/^ */umpath-lab: fio on \/dev\/ublkb0: /'
wait
AFTER
mkdir -p "$work/files/lab/tls"
cp "$tls"/{ca.pem,server.pem,server.key} "$work/files/lab/tls/"
UMPATH_LAB_AFTER="$work/after" UMPATH_LAB_FILES="$work/files" \
  bash "$lab/mkinitramfs.sh" "$work/initramfs.gz" "$lab/smoke_init.sh" "$umpathd" "$perf" "$fio"
echo "umpath lab: booting QEMU (TCG) with two NVMe controllers; serial log $state/serial.log"
bash "$lab/boot.sh" "$work/initramfs.gz" 2 "$state/serial.log" "$port" "$state/qmp.sock" &
qemu_pid=$!

ctl_host=("$ctl" --address="127.0.0.1:$port" --tls_cert_file="$tls/admin.pem"
          --tls_key_file="$tls/admin.key" --tls_ca_file="$tls/ca.pem" --tls_server_name=localhost)
deadline=$((SECONDS + 240))
until grep -q "umpath-perf: failed\|fio on /dev/ublkb0: .*err=" "$state/serial.log" 2>/dev/null; do
  if [ $SECONDS -gt $deadline ] || ! kill -0 "$qemu_pid" 2>/dev/null; then
    tail -30 "$state/serial.log"; echo "umpath lab: the workload or fio did not finish"; exit 1
  fi
  sleep 1
done
grep -E "umpath-lab:|umpath-vfio:|umpath-perf:" "$state/serial.log" | tr -d '\r' \
  | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/^\x1bc//'
echo
echo "\$ umpathctl --address=127.0.0.1:$port ... heads"
"${ctl_host[@]}" heads
echo
cat <<INFO
umpathd is serving in the lab node. From this machine:
  umpathctl: ${ctl_host[*]} heads
             (also: head NAME, controllers, fail-path HEAD PATH, watch, help)
  buf curl:  $root/build/tools/node_modules/.bin/buf curl --protocol grpc \\
               --cacert $tls/ca.pem --cert $tls/admin.pem --key $tls/admin.key \\
               -d '{}' https://localhost:$port/umpath.v1.MultipathControl/ListHeads
  QMP (fault injection): $state/qmp.sock
INFO
if [ "$once" = 1 ]; then
  # Both ways of reaching the agent, recorded for the test.
  "${ctl_host[@]}" -o json heads > "$state/heads.json"
  buf="$root/build/tools/node_modules/.bin/buf"
  if [ -x "$buf" ]; then
    "$buf" curl --protocol grpc --cacert "$tls/ca.pem" --cert "$tls/admin.pem" \
      --key "$tls/admin.key" -d '{}' \
      "https://localhost:$port/umpath.v1.MultipathControl/ListHeads" > "$state/buf.json"
    # Export is idempotent: asking again answers the device the head already has.
    "$buf" curl --protocol grpc --cacert "$tls/ca.pem" --cert "$tls/admin.pem" \
      --key "$tls/admin.key" -d '{"name": "heads/nguid-ab000000000000000000000000000001"}' \
      "https://localhost:$port/umpath.v1.MultipathControl/ExportHead" > "$state/export.json"
  fi
  exit 0
fi
echo "Ctrl-C stops the node."
wait "$qemu_pid"
