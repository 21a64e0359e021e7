#!/usr/bin/env bash
# Benchmark (issue 16): what an upgrade of the agent costs the node's I/O, in ONE boot of
# the lab node, two controllers sharing one namespace, fio 4k randread QD32 in the guest.
#   - umpathd exporting the head as /dev/ublkb0; HANDOVERS times: fio runs, and 2 s in
#     the agent is stopped (SIGTERM, a hand-over) and started again at once; per
#     hand-over: fio's errors, its longest completion (the pause) and how long the
#     device had no agent (stop to take-over);
#   - then HANDOVERS descriptor hand-overs under the same fio: a successor started with
#     --take_over beside the running agent, which hands its vfio controllers over running
#     (issue 16 item 3); per hand-over: fio's errors, its longest completion, the time
#     from the successor's start to the old agent's exit and to the take-over, and
#     whether both controllers were adopted;
#   - the reference, beside it: the kernel's native multipath on the same controllers,
#     a controller reset (sysfs reset_controller) of one path, then of both, under the
#     same fio.
# With ALTERNATE=1 the agents alternate --ublk_quiesce=true and false, so the two stop
# paths (QUIESCE_DEV, or the queues holding) share one boot and its load (on a kernel
# with QUIESCE_DEV: the lab's 6.18); each hand-over says which path it took.
# Figures are printed, never asserted. Targets: 0 errors; a hand-over pause <= 1 s with
# the simple path, <= 100 ms with descriptor hand-over.
# Usage: [ALTERNATE=1] bench/lab_upgrade.sh UMPATHD [HANDOVERS] [SECONDS]
set -euo pipefail
. "$(dirname "$0")/../deploy/lab/lib.sh"
lab_init bench "$1"
handovers="${2:-5}"
secs="${3:-8}"
alternate="${ALTERNATE:-0}"
fio="$(lab_fio)"

lab_after
cat >> "$work/after" <<AFTER
# run NAME DEVICE: fio in the background for $secs s, its JSON to /tmp/NAME.json.
run() {
  \$F --name=\$1 --filename=\$2 --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
    --iodepth=32 --numjobs=1 --time_based --runtime=$secs --output-format=json \
    --output=/tmp/\$1.json >/dev/null 2>&1 &
  f=\$!
}
show() { echo "bench: fio-json-begin \$1"; cat /tmp/\$1.json; echo "bench: fio-json-end"; }
# qflag J: the J-th agent's --ublk_quiesce (ALTERNATE=1: even ones quiesce, odd ones hold).
qflag() {
  [ $alternate = 1 ] || return 0
  [ \$((\$1 % 2)) = 0 ] && echo --ublk_quiesce=true || echo --ublk_quiesce=false
}
# path NAME: how the agent NAME stopped: quiesce (QUIESCE_DEV) or hold.
path() { grep -q 'quiesced for the hand-over' /tmp/\$1.err && echo quiesce || echo hold; }

kernel_head "\$@"
for which in one both; do
  run kernel-reset-\$which \$KH
  sleep 2
  if [ \$which = one ]; then
    echo 1 > /sys/class/nvme/nvme0/reset_controller
  else
    echo 1 > /sys/class/nvme/nvme0/reset_controller & echo 1 > /sys/class/nvme/nvme1/reset_controller
  fi
  wait \$f
  show kernel-reset-\$which
done

bind vfio-pci "\$@"
D=/dev/ublkb0
agent umpathd-0 \$U --vfio_devices=all --workers=2 --export_all \$(qflag 0)
wait_dev
for i in \$(seq 1 $handovers); do
  run handover-\$i \$D
  sleep 2
  t0=\$(now)
  kill \$pid; wait \$pid
  t1=\$(now)
  agent umpathd-\$i \$U --vfio_devices=all --workers=2 --export_all \$(qflag \$i)
  for j in \$(seq 1 600); do grep -q 'reason="taken over' /tmp/umpathd-\$i.err && break; sleep 0.05; done
  echo "bench: handover \$i stop \$t0 exited \$t1 taken-over \$(now) path \$(path umpathd-\$((i - 1)))"
  last=umpathd-\$i
  wait \$f
  show handover-\$i
done
for i in \$(seq 1 $handovers); do
  run adopt-\$i \$D
  sleep 2
  old=\$pid
  t0=\$(now)
  agent adopt-\$i \$U --vfio_devices=all --workers=2 --export_all --take_over \$(qflag \$(($handovers + i)))
  wait \$old
  t1=\$(now)
  for j in \$(seq 1 600); do grep -q 'reason="taken over' /tmp/adopt-\$i.err && break; sleep 0.05; done
  echo "bench: adopt \$i start \$t0 exited \$t1 taken-over \$(now) \$(grep -o 'vfio: [0-9]* controller.*' /tmp/adopt-\$i.err | tr ' ' _) path \$(path \$last)"
  last=adopt-\$i
  wait \$f
  show adopt-\$i
done
kill \$pid; wait \$pid
AFTER
lab_initramfs "$umpathd" "$fio"
UMPATH_LAB_MULTIPATH=Y UMPATH_LAB_TCG_THREAD=multi lab_boot $((300 + handovers * secs * 12)) 2
python3 - "$work/s.log" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
runs = {name: json.loads(doc) for name, doc in
        re.findall(r"bench: fio-json-begin (\S+)\n(.*?)bench: fio-json-end", text, re.S)}
if "kernel-reset-one" not in runs or not any(k.startswith("handover-") for k in runs):
    print(text[-3000:]); sys.exit("bench: missing results")
def fig(name):
    j = runs[name]["jobs"][0]; r = j["read"]
    lat = r.get("clat_ns", r.get("lat_ns"))
    return j["error"], lat["max"] / 1e6, r["iops"]
times = {int(m[0]): tuple(map(float, m[1:4])) for m in
         re.findall(r"bench: handover (\d+) stop ([\d.]+) exited ([\d.]+) taken-over ([\d.]+)", text)}
paths = {("handover", int(m[0])): m[1] for m in re.findall(r"bench: handover (\d+) .* path (\w+)", text)}
paths.update({("adopt", int(m[0])): m[1] for m in re.findall(r"bench: adopt (\d+) .* path (\w+)", text)})
by_path = {}
for which in ("one", "both"):
    e, mx, iops = fig(f"kernel-reset-{which}")
    print(f"kernel native multipath, reset of {which} path(s): errors={e} max_latency_ms={mx:.0f} iops={iops:.0f}")
pauses = []
for name in sorted((k for k in runs if k.startswith("handover-")), key=lambda k: int(k.split("-")[1])):
    i = int(name.split("-")[1])
    e, mx, iops = fig(name)
    t0, t1, t2 = times.get(i, (0, 0, 0))
    pauses.append(mx)
    p = paths.get(("handover", i), "?")
    by_path.setdefault(("hand-over", p), []).append(mx)
    print(f"umpath hand-over {i}: errors={e} max_latency_ms={mx:.0f} iops={iops:.0f} "
          f"stop_to_exit_s={t1 - t0:.2f} stop_to_takeover_s={t2 - t0:.2f} path={p}")
print(f"hand-overs: {len(pauses)}, max pause {max(pauses):.0f} ms (target <= 1000 ms)")
adopts = {int(m[0]): (float(m[1]), float(m[2]), float(m[3]), m[4]) for m in
          re.findall(r"bench: adopt (\d+) start ([\d.]+) exited ([\d.]+) taken-over ([\d.]+) (\S*)", text)}
apauses = []
for name in sorted((k for k in runs if k.startswith("adopt-")), key=lambda k: int(k.split("-")[1])):
    i = int(name.split("-")[1])
    e, mx, iops = fig(name)
    t0, t1, t2, how = adopts.get(i, (0, 0, 0, "?"))
    apauses.append(mx)
    p = paths.get(("adopt", i), "?")
    by_path.setdefault(("descriptor hand-over", p), []).append(mx)
    print(f"umpath descriptor hand-over {i}: errors={e} max_latency_ms={mx:.0f} iops={iops:.0f} "
          f"start_to_old_exit_s={t1 - t0:.2f} start_to_takeover_s={t2 - t0:.2f} {how.replace('_', ' ')} "
          f"path={p}")
if apauses:
    print(f"descriptor hand-overs: {len(apauses)}, max pause {max(apauses):.0f} ms (target <= 100 ms)")
for (kind, p), v in sorted(by_path.items()):
    v = sorted(v)
    print(f"{kind}s by {p}: {len(v)}, pause median {v[len(v) // 2]:.0f} ms, max {v[-1]:.0f} ms")
PY
