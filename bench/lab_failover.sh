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
. "$(dirname "$0")/../deploy/lab/lib.sh"
lab_init failover "$1" "$2"
secs="${3:-12}"
cut_at=$((secs / 3))
fio="$(lab_fio)"
H=nguid-ab000000000000000000000000000001

lab_after
cat >> "$work/after" <<AFTER
kernel_head \$A \$B
\$F --name=kernel --filename=\$KH --ioengine=io_uring --direct=1 --rw=randread \
  --bs=4k --iodepth=32 --time_based --runtime=$secs --output-format=json --output=/tmp/fio.json >/dev/null 2>&1 &
f=\$!
sleep $cut_at
unplug 0
wait \$f
echo "bench: fio-json-begin"; cat /tmp/fio.json; echo "bench: fio-json-end"
replug 0
sleep 1
bind vfio-pci \$A \$B

agent cut \$P --bind_vfio --vfio_devices=\$A,\$B --workload=randread --workload_qd=32 --workload_secs=$secs
wait_head
sleep $cut_at
unplug 0
wait \$pid
cat /tmp/cut.out

# A path's return: round-robin, so the returning path gets I/O as soon as it is there.
agent return \$P --bind_vfio --vfio_devices=\$A,\$B --default_io_policy=round-robin \
  --workload=randread --workload_qd=32 --workload_secs=600
wait_head
sleep 1
qmp device_add '{"driver": "nvme", "id": "c0", "serial": "S0", "subsys": "s0", "bus": "rp0"}'
t0=\$(now)
first=""
while [ -z "\$first" ]; do
  n=\$(pfield \$A completed)
  [ -n "\$n" ] && [ "\$n" -gt 0 ] && first=\$(now)
  [ -n "\$first" ] || sleep 0.05
done
echo "bench: return requested at \$t0, first completion seen at \$first"
kill \$pid; wait \$pid
AFTER
lab_initramfs "$perf" "$ctl" "$fio"
UMPATH_LAB_MULTIPATH=Y lab_boot 900 2
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
