#!/usr/bin/env bash
# Benchmark (issue 21 item 3b): the kernel NVMe/TCP backend exporting the head as
# /dev/ublkbN, with and without zero copy, against the kernel's native multipath head
# over the same NVMe/TCP target (deploy/lab/nvmet_lib.sh: one namespace, port 1
# optimized, port 2 non-optimized). Two boots of the same VM shape and initramfs, as
# bench/lab_tcp_vs_kernel.sh (nvme_core.multipath is a boot parameter where nvme core
# is built in, as on 6.18):
#   A (multipath=Y): the kernel connects to both ports; fio on its head (numa);
#   B (multipath=N): umpathd connects to both ports (--kernel_connect), exports the head
#     (--export_all, numa) and fio runs on /dev/ublkb0: first with zero copy (the
#     default where the kernel offers AUTO_BUF_REG), then with --ublk_zero_copy=false
#     (the driver copies into the agent's buffers), each run a fresh agent.
# fio: io_uring, direct, one job; 4k random read at QD 32 and 128k sequential read at
# QD 8. Prints IOPS, MB/s, p99 per run and side, and the ratios umpath/kernel against
# issue 21's targets (4k >= 1.5x, 128k >= 1.2x). Figures are printed, never asserted.
# Usage: bench/lab_tcp_ublk_vs_kernel.sh UMPATHD [SECONDS] [RUNS] [WORKERS]
# Run it with UMPATH_LAB_KERNEL=6.18 for zero copy (6.12 has no AUTO_BUF_REG: both B
# sides then copy, and the log says so).
set -euo pipefail
. "$(dirname "$0")/../deploy/lab/lib.sh"
lab_init bench-tcp-ublk "$1"
secs="${2:-10}"
runs="${3:-1}"
workers="${4:-2}"
fio="$(lab_fio)"

lab_after
cat >> "$work/after" <<AFTER
SECS=$secs; RUNS=$runs; WORKERS=$workers
AFTER
cat >> "$work/after" <<'AFTER'
. /lab/nvmet.sh
# job NAME DEVICE: both shapes, one JSON document each.
job() {
  $F --name=$1-rand4k --filename=$2 --ioengine=io_uring --direct=1 --rw=randread \
    --bs=4k --iodepth=32 --numjobs=1 --time_based --runtime=$SECS --output-format=json \
    --output=/tmp/fio.json >/dev/null 2>&1
  echo "bench: fio-json-begin $1"; cat /tmp/fio.json; echo "bench: fio-json-end"
  $F --name=$1-seq128k --filename=$2 --ioengine=io_uring --direct=1 --rw=read \
    --bs=128k --iodepth=8 --numjobs=1 --time_based --runtime=$SECS --output-format=json \
    --output=/tmp/fio.json >/dev/null 2>&1
  echo "bench: fio-json-begin $1"; cat /tmp/fio.json; echo "bench: fio-json-end"
}
nvmet_setup
if [ "$(cat /sys/module/nvme_core/parameters/multipath)" = Y ]; then
  nvmet_kernel_head
  echo "bench: kernel head /dev/$head of $(basename $sub), policy $(cat $sub/iopolicy)"
  for run in $(seq 1 $RUNS); do job kernel /dev/$head; done
else
  KC=tcp:127.0.0.1:4420:$NVMET_NQN,tcp:127.0.0.1:4421:$NVMET_NQN
  D=/dev/ublkb0
  # Every agent starts with no controller of ours, whatever the last one left.
  disconnect() {
    for c in /sys/class/nvme/nvme*; do
      [ -e $c/subsysnqn ] && [ "$(cat $c/subsysnqn)" = $NVMET_NQN ] && echo 1 > $c/delete_controller
    done
  }
  for run in $(seq 1 $RUNS); do
    for mode in zc copy; do
      zc=true; [ $mode = copy ] && zc=false
      agent umpathd-$mode-$run $U --kernel_connect=$KC --workers=$WORKERS --export_all \
        --stop=remove --ublk_zero_copy=$zc
      wait_dev
      echo "bench: umpath $mode: $(grep -o 'request data .*' /tmp/umpathd-$mode-$run.err | head -1)"
      job umpath-$mode $D
      kill $pid; wait $pid
      disconnect
      sleep 1
    done
  done
fi
AFTER
lab_initramfs "$umpathd" "$fio"
boot() {
  UMPATH_LAB_MULTIPATH=$1 UMPATH_LAB_TCG_THREAD=multi lab_boot "$3" 0
  cp "$work/s.log" "$2"
}
boot Y "$work/a.log" $((300 + runs * secs * 4))
boot N "$work/b.log" $((400 + runs * secs * 8 + runs * 60))
python3 - "$work/a.log" "$work/b.log" <<'PY'
import json, re, sys
a, b = open(sys.argv[1]).read(), open(sys.argv[2]).read()
def docs(text):
    out = {}
    for name, d in re.findall(r"bench: fio-json-begin (\S+)\n(.*?)bench: fio-json-end", text, re.S):
        out.setdefault(name, []).append(json.loads(d))
    return out
def fig(d):
    j = d["jobs"][0]; r = j["read"]
    lat = r.get("clat_ns", r.get("lat_ns"))
    return r["iops"], r["bw_bytes"] / 1e6, lat["percentile"]["99.000000"] / 1e3, j["error"]
k, u = docs(a), docs(b)
for m in re.findall(r"^bench: (kernel head .*|umpath (?:zc|copy): .*)", a + b, re.M)[:3]:
    print(m)
kern, zc, cp = k.get("kernel", []), u.get("umpath-zc", []), u.get("umpath-copy", [])
if not kern or not zc or not cp:
    print(a[-2000:]); print(b[-3000:]); sys.exit("bench: missing results")
for run in range(min(len(kern), len(zc), len(cp)) // 2):
    for i, (shape, target) in enumerate((("4k randread QD32", 1.5), ("128k read QD8", 1.2))):
        ki, kb, kp, ke = fig(kern[run * 2 + i])
        line = f"run {run + 1} {shape}: kernel iops={ki:.0f} MB/s={kb:.1f} p99_us={kp:.0f} errors={ke}"
        for name, side in (("zero copy", zc), ("copy", cp)):
            ui, ub, up, ue = fig(side[run * 2 + i])
            line += (f" | umpath {name} iops={ui:.0f} MB/s={ub:.1f} p99_us={up:.0f} errors={ue} "
                     f"ratio {ui / ki:.2f}x")
        print(line + f" (target >= {target}x)")
PY
