#!/usr/bin/env bash
# Benchmark (issue 6), in ONE boot of the lab node, side by side on the same two
# controllers sharing one namespace, fio (io_uring, direct, one job) in the guest:
#   - the kernel's native multipath head (nvme_core.multipath=Y, numa);
#   - the same controllers rebound to vfio-pci, umpathd exporting the head as
#     /dev/ublkb0 (numa, one ublk queue per worker);
# with two shapes: 4k random read at QD 32 and 128k sequential read at QD 8. Prints IOPS,
# MB/s, p99 and the ratio umpath/kernel. Figures are printed, never asserted.
# UMPATH_BENCH_USER_COPY=1 adds a third side in each run (issue 21): umpathd again with
# --ublk_user_copy (the agent copies with pread/pwrite on /dev/ublkcN instead of the
# driver at fetch and commit), with its ratio to the kernel and to the default mode.
# Usage: bench/lab_ublk_vs_kernel.sh UMPATHD [SECONDS] [RUNS] [WORKERS]
set -euo pipefail
. "$(dirname "$0")/../deploy/lab/lib.sh"
lab_init bench "$1"
secs="${2:-10}"
runs="${3:-1}"
workers="${4:-2}"
fio="$(lab_fio)"
uc="${UMPATH_BENCH_USER_COPY:-0}"

lab_after
cat >> "$work/after" <<AFTER
# job NAME DEVICE: both shapes, one JSON document each.
job() {
  \$F --name=\$1-rand4k --filename=\$2 --ioengine=io_uring --direct=1 --rw=randread \
    --bs=4k --iodepth=32 --numjobs=1 --time_based --runtime=$secs --output-format=json \
    --output=/tmp/fio.json >/dev/null 2>&1
  echo "bench: fio-json-begin"; cat /tmp/fio.json; echo "bench: fio-json-end"
  \$F --name=\$1-seq128k --filename=\$2 --ioengine=io_uring --direct=1 --rw=read \
    --bs=128k --iodepth=8 --numjobs=1 --time_based --runtime=$secs --output-format=json \
    --output=/tmp/fio.json >/dev/null 2>&1
  echo "bench: fio-json-begin"; cat /tmp/fio.json; echo "bench: fio-json-end"
}
D=/dev/ublkb0
for run in \$(seq 1 $runs); do
  kernel_head "\$@"
  echo "bench: kernel paths: \$(ls /sys/block | grep nvme | tr '\n' ' ') policy \$(cat \$KS/iopolicy)"
  job kernel \$KH
  bind vfio-pci "\$@"
  agent umpathd-\$run \$U --vfio_devices=all --workers=$workers --export_all --stop=remove
  wait_dev
  echo "bench: umpath device: \$(ls /dev | grep ublkb) queues \$(ls /sys/block/ublkb0/mq | wc -l)"
  job umpath \$D
  if [ \$run = 1 ]; then
    # Idle with the device exported and both paths live: no I/O for 10 s.
    sleep 2
    idle_sample \$pid
  fi
  kill \$pid; wait \$pid
  if [ $uc = 1 ]; then
    agent umpathd-uc-\$run \$U --vfio_devices=all --workers=$workers --export_all --stop=remove --ublk_user_copy
    wait_dev
    echo "bench: umpath user copy: \$(grep -o 'request data copied by .*' /tmp/umpathd-uc-\$run.err | head -1)"
    job umpath-uc \$D
    kill \$pid; wait \$pid
  fi
done
AFTER
lab_initramfs "$umpathd" "$fio"
UMPATH_LAB_MULTIPATH=Y UMPATH_LAB_TCG_THREAD=multi lab_boot $((300 + runs * secs * (uc == 1 ? 16 : 10))) 2
python3 - "$work/s.log" "$uc" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
per = 6 if sys.argv[2] == "1" else 4
docs = [json.loads(m) for m in re.findall(r"bench: fio-json-begin\n(.*?)bench: fio-json-end", text, re.S)]
if len(docs) < per or len(docs) % per:
    print(text[-3000:]); sys.exit("bench: missing results")
for line in re.findall(r"bench: (kernel paths|umpath device|umpath user copy): (.*)", text)[:3]:
    print(f"{line[0]}: {line[1]}")
def fig(d):
    j = d["jobs"][0]; r = j["read"]
    lat = r.get("clat_ns", r.get("lat_ns"))
    return r["iops"], r["bw_bytes"] / 1e6, lat["percentile"]["99.000000"] / 1e3, j["error"]
for run in range(len(docs) // per):
    d = docs[run * per: run * per + per]
    k4, k128, u4, u128 = d[:4]
    c4, c128 = d[4:6] if per == 6 else (None, None)
    for shape, k, u, c in (("4k randread QD32", k4, u4, c4), ("128k read QD8", k128, u128, c128)):
        ki, kb, kp, ke = fig(k); ui, ub, up, ue = fig(u)
        print(f"run {run + 1} {shape}: kernel iops={ki:.0f} MB/s={kb:.1f} p99_us={kp:.0f} errors={ke} | "
              f"umpath ublk iops={ui:.0f} MB/s={ub:.1f} p99_us={up:.0f} errors={ue} | "
              f"ratio iops {ui / ki:.2f}x p99 {up / kp:.2f}x (target iops >= 1.0x)")
        if c is not None:
            ci, cb, cp, ce = fig(c)
            print(f"run {run + 1} {shape}: umpath ublk USER_COPY iops={ci:.0f} MB/s={cb:.1f} p99_us={cp:.0f} "
                  f"errors={ce} | ratio iops vs kernel {ci / ki:.2f}x, vs driver copy {ci / ui:.2f}x")
m = re.search(r"bench: idle ticks (\d+) (\d+) hz (\d+) rss_kb (\d+) threads (\d+)", text)
if m:
    t0, t1, hz, rss, th = map(int, m.groups())
    cpu = (t1 - t0) / hz
    print(f"idle 10 s, /dev/ublkb0 exported, two live paths: cpu {cpu:.2f} s = {cpu / 10 * 100:.2f}% "
          f"of a core, rss {rss / 1024:.1f} MiB, {th} threads")
PY
