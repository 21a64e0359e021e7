#!/usr/bin/env bash
# Benchmark (issue 4), in ONE boot of the lab node, side by side:
#   - fio (io_uring, direct, 4k randread, QD 32, one job) on the kernel's native
#     multipath head over the two controllers (nvme_core.multipath=Y);
#   - the same controllers rebound to vfio-pci and umpathd's workload, the same shape
#     (4k randread, QD 32, one worker), through the whole multipath path;
#   - umpathd idle with both paths live and no I/O for 10 s: CPU time and resident memory.
# Prints both results and the ratios. Figures are printed, never asserted.
# Usage: bench/lab_vs_kernel.sh UMPATHD [SECONDS] [RUNS]
set -euo pipefail
. "$(dirname "$0")/../deploy/lab/lib.sh"
lab_init bench "$1"
secs="${2:-10}"
runs="${3:-1}"
fio="$(lab_fio)"

lab_after
cat >> "$work/after" <<AFTER
for run in \$(seq 1 $runs); do
  kernel_head "\$@"
  echo "bench: kernel paths: \$(ls /sys/block | grep nvme | tr '\n' ' ') controllers \$(ls \$KS | grep -E '^nvme[0-9]+$' | tr '\n' ' ') policy \$(cat \$KS/iopolicy)"
  \$F --name=kernel --filename=\$KH --ioengine=io_uring --direct=1 --rw=randread \
    --bs=4k --iodepth=32 --numjobs=1 --time_based --runtime=$secs --output-format=json \
    --output=/tmp/fio.json >/dev/null 2>&1
  echo "bench: fio-json-begin"; cat /tmp/fio.json; echo "bench: fio-json-end"
  bind vfio-pci "\$@"
  \$P --socket=\$SOCK --state_file=/tmp/heads --vfio_devices=all \
    --workload=randread --workload_bs=4096 --workload_qd=32 --workload_secs=$secs 2>/dev/null
done
# Idle: two live paths, no I/O, 10 s.
agent idle \$U --vfio_devices=all
sleep 3
idle_sample \$pid
kill \$pid; wait \$pid
AFTER
lab_initramfs "$umpathd" "$perf" "$fio"
UMPATH_LAB_MULTIPATH=Y UMPATH_LAB_TCG_THREAD=multi lab_boot $((300 + runs * secs * 6)) 2
if [ "$lab_rc" = 124 ]; then
  # The node did not finish: say where it stood, not just which figures are missing.
  echo "bench: the lab node timed out; the last of its log:"
  grep -E "umpath|bench: (kernel|idle)|BUG|Oops|panic" "$work/s.log" | grep -v '^event' | tail -25
fi
python3 - "$work/s.log" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
kern = [json.loads(m) for m in re.findall(r"bench: fio-json-begin\n(.*?)bench: fio-json-end", text, re.S)]
ours = re.findall(r"umpath-perf: result (.*)", text)
paths = re.findall(r"bench: kernel paths: (.*)", text)
if not kern or not ours:
    print(text[-3000:]); sys.exit("bench: missing results")
print("kernel multipath:", paths[0] if paths else "?")
for i, (k, u) in enumerate(zip(kern, ours)):
    r = k["jobs"][0]["read"]
    k_iops = r["iops"]; k_p99 = r["lat_ns"]["percentile"]["99.000000"] / 1e3 if "percentile" in r["lat_ns"] else r["clat_ns"]["percentile"]["99.000000"] / 1e3
    k_max = r["lat_ns"]["max"] / 1e3; k_err = k["jobs"][0]["error"]
    f = dict(kv.split("=", 1) for kv in u.split() if "=" in kv)
    u_iops = float(f["iops"]); u_p99 = float(f["p99_us"]); u_max = float(f["max_us"])
    print(f"run {i+1}: kernel  fio   iops={k_iops:.0f} p99_us={k_p99:.1f} max_us={k_max:.1f} errors={k_err}")
    print(f"run {i+1}: umpathd vfio  iops={u_iops:.0f} p99_us={u_p99:.1f} max_us={u_max:.1f} errors={f['errors']}")
    print(f"run {i+1}: ratio umpath/kernel: iops {u_iops / k_iops:.2f}x, p99 {u_p99 / k_p99:.2f}x (target: iops >= 1.5x, p99 <= 1.0x)")
m = re.search(r"bench: idle ticks (\d+) (\d+) hz (\d+) rss_kb (\d+) threads (\d+)", text)
if m:
    t0, t1, hz, rss, th = map(int, m.groups())
    cpu = (t1 - t0) / hz
    print(f"idle 10 s, two live paths: cpu {cpu:.2f} s = {cpu / 10 * 100:.2f}% of a core (target <= 1%), "
          f"rss {rss / 1024:.1f} MiB (target <= 64 MiB), {th} threads")
PY
