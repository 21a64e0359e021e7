#!/usr/bin/env bash
# Benchmark (issue 5), in ONE boot of the lab node, side by side: the same hot-remove of
# one of two paths (QMP device_del of c0, SECS/3 into a SECS-second run) under
#   - fio (io_uring, direct, 4k randread, QD 32) on the kernel's native multipath head;
#   - umpathd's workload, the same shape, on the same controllers through vfio-pci;
# errors, p99 and max latency of each. Then, with umpathd running round-robin, c0 comes
# back (QMP device_add): the time from the request to the first completion on the
# returning path (it is found by uevent, bound to vfio-pci, brought up, and joins).
# Both vCPUs on one TCG thread (UMPATH_LAB_TCG_THREAD=single, see boot.sh), for both.
# Figures are printed, never asserted.  Usage: bench/lab_failover.sh UMPATHD UMPATHCTL [SECS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
lab="$root/deploy/lab"
umpathd="$(readlink -f "$1")"
perf="$(dirname "$umpathd")/umpath-perf"  # the workload side: the same agent (umpath-perf)
ctl="$(readlink -f "$2")"
secs="${3:-12}"
cut_at=$((secs / 3))
command -v fio >/dev/null || {
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq --no-install-recommends fio >/dev/null
}
fio="$(command -v fio)"
work="$(mktemp -d /tmp/umpath-bench-fo-XXXXXX)"
qemu=""
cleanup() { [ -n "$qemu" ] && kill "$qemu" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
bash "$lab/fetch.sh" >/dev/null

cat > "$work/after" <<AFTER
#!/bin/sh
A=0000:01:00.0; B=0000:02:00.0
C=$ctl
H=nguid-ab000000000000000000000000000001
ADD0='{"driver": "nvme", "id": "c0", "serial": "S0", "subsys": "s0", "bus": "rp0"}'
. /lab/lib.sh

bind nvme \$A \$B
for i in \$(seq 1 100); do
  [ -b /dev/nvme0n1 ] && [ "\$(ls /sys/class/nvme-subsystem/nvme-subsys0 | grep -cE '^nvme[0-9]+\$')" -ge 2 ] && break
  sleep 0.2
done
$fio --name=kernel --filename=/dev/nvme0n1 --ioengine=io_uring --direct=1 --rw=randread \
  --bs=4k --iodepth=32 --time_based --runtime=$secs --output-format=json --output=/tmp/fio.json >/dev/null 2>&1 &
f=\$!
sleep $cut_at
echo "umpath-lab: qmp device_del {\"id\": \"c0\"}"
wait \$f
echo "bench: fio-json-begin"; cat /tmp/fio.json; echo "bench: fio-json-end"
echo "umpath-lab: qmp device_add \$ADD0"
back \$A
sleep 1
bind vfio-pci \$A \$B

$perf --socket=/run/umpath/umpathd.sock --state_file=/tmp/heads --bind_vfio --vfio_devices=\$A,\$B \
  --workload=randread --workload_qd=32 --workload_secs=$secs 2>/dev/null > /tmp/u.out &
u=\$!
for i in \$(seq 1 150); do \$C heads 2>/dev/null | grep -q '^nguid-' && break; sleep 0.1; done
sleep $cut_at
echo "umpath-lab: qmp device_del {\"id\": \"c0\"}"
wait \$u
cat /tmp/u.out
gone \$A

# A path's return: round-robin, so the returning path gets I/O as soon as it is there.
$perf --socket=/run/umpath/umpathd.sock --state_file=/tmp/heads2 --bind_vfio --vfio_devices=\$A,\$B \
  --default_io_policy=round-robin --workload=randread --workload_qd=32 --workload_secs=600 2>/dev/null > /tmp/r.out &
u=\$!
for i in \$(seq 1 150); do \$C heads 2>/dev/null | grep -q '^nguid-' && break; sleep 0.1; done
sleep 1
echo "umpath-lab: qmp device_add \$ADD0"
t0=\$(now)
first=""
while [ -z "\$first" ]; do
  n=\$(\$C head \$H 2>/dev/null | awk -v p=\$A '\$1 == p {print \$6}')
  [ -n "\$n" ] && [ "\$n" -gt 0 ] && first=\$(now)
  [ -n "\$first" ] || sleep 0.05
done
echo "bench: return requested at \$t0, first completion seen at \$first"
kill \$u; wait \$u
AFTER
UMPATH_LAB_AFTER="$work/after" bash "$lab/mkinitramfs.sh" "$work/initramfs.gz" \
  "$lab/smoke_init.sh" "$perf" "$ctl" "$fio"
log="$work/serial.log"
UMPATH_LAB_MULTIPATH=Y UMPATH_LAB_TCG_THREAD=single timeout 900 \
  bash "$lab/boot.sh" "$work/initramfs.gz" 2 "$log" 0 "$work/qmp.sock" &
qemu=$!
bash "$lab/qmp_relay.sh" "$log" "$work/qmp.sock" "$qemu" "$work/qmp.log"
wait "$qemu" || true
qemu=""
tr -d '\r' < "$log" > "$work/s.log"
python3 - "$work/s.log" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
k = re.search(r"bench: fio-json-begin\n(.*?)bench: fio-json-end", text, re.S)
u = re.search(r"umpath-perf: result (.*)", text)
ret = re.search(r"bench: return requested at ([\d.]+), first completion seen at ([\d.]+)", text)
if not k or not u:
    print(text[-3000:]); sys.exit("bench: missing results")
j = json.loads(k.group(1))["jobs"][0]
r = j["read"]; lat = r["lat_ns"]
k_p99 = lat["percentile"]["99.000000"] / 1e3 if "percentile" in lat else r["clat_ns"]["percentile"]["99.000000"] / 1e3
f = dict(kv.split("=", 1) for kv in u.group(1).split() if "=" in kv)
print(f"hot-remove of one of two paths, 4k randread QD 32, same point of the run:")
print(f"  kernel  fio   iops={r['iops']:.0f} errors={j['error']} p99_us={k_p99:.1f} max_us={lat['max'] / 1e3:.1f}")
print(f"  umpathd vfio  iops={float(f['iops']):.0f} errors={f['errors']} p99_us={f['p99_us']} max_us={f['max_us']}")
print(f"  max latency umpath/kernel: {float(f['max_us']) / (lat['max'] / 1e3):.2f}x (target <= 1.0x, zero errors)")
if ret:
    print(f"path return: device_add to first completion on the returning path: {float(ret.group(2)) - float(ret.group(1)):.2f} s "
          f"(guest uptime, 10 ms ticks; includes hot-plug, nvme probe, rebind to vfio-pci, bring-up)")
PY
