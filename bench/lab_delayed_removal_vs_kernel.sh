#!/usr/bin/env bash
# Benchmark (issue 21 item 2): delayed removal of the multipath head side by side on the
# guest kernel 6.18, the kernel's native multipath (nvme_core.multipath=Y, its head's
# /sys/block/HEAD/delayed_removal_secs) against umpathd (vfio, the head exported as
# /dev/ublkb0, umpathctl set-delayed-removal), one boot per side, the same outages (both
# controllers hot-removed by QMP) under fio (io_uring, randwrite 4k QD16, crc32c verify
# with a verify backlog, stopping at its first error):
#   a. window 20 s, the paths back 8 s after the last one went;
#   b. window 5 s, the paths gone for 12 s (io policy set to round-robin before);
#   c1. window 5 s raised to 60 s 1 s into the outage (paths back after 10 s);
#   c2. window 60 s lowered to 4 s 1 s into the outage (paths back after 15 s);
#   d. window 0;
#   e. the head back after b's removal: same head or not, its window and io policy.
# Per case: fio's error, the time of the first error after the last path went (guest
# uptime when fio exited on it minus when the last function left the PCI bus), when the
# head's block device went, max latency (fio's, completed I/O), head kept (kernel: the
# disk's diskseq; umpathd: the head's uid), and the window and policy after. Then a
# markdown table of both. Figures are printed, never asserted.
# Usage: bench/lab_delayed_removal_vs_kernel.sh UMPATHD UMPATHCTL
set -euo pipefail
export UMPATH_LAB_KERNEL=6.18
. "$(dirname "$0")/../deploy/lab/lib.sh"
lab_init drvk "$1" "$2"
fio="$(lab_fio)"
H=nguid-ab000000000000000000000000000001

# The outages, the same on both sides; each side defines D (the head's block device),
# setwin/getwin, setpol/getpol, headid and paths_back before them.
scenario() {
  cat <<'SCEN'
n_of() { basename $D; }
writes() { awk '{print $5}' /sys/block/$(n_of)/stat 2>/dev/null || echo 0; }
# wait_io: until 1000 more writes completed on $D (10 s at most).
wait_io() { local s0 i; s0=$(writes); for i in $(seq 1 100); do [ "$(writes)" -gt $((s0 + 1000)) ] && return 0; sleep 0.1; done; echo "umpath-lab: no writes on $D"; }
# after SECS: is the uptime SECS past $t0?
after() { awk -v a=$(now) -v b=$t0 -v s=$1 'BEGIN { exit !(a >= b + s) }'; }
# fio_start NAME: fio verify on $D in the background; its exit time into /tmp/NAME.end.
fio_start() {
  rm -f /tmp/$1.end /tmp/$1.json /tmp/gone_at
  ( $F --name=$1 --filename=$D --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k --iodepth=16 \
      --size=64M --time_based --runtime=300 --verify=crc32c --verify_backlog=256 --verify_fatal=1 \
      --output-format=json --output=/tmp/$1.json > /dev/null 2> /tmp/$1.err &
    echo $! > /tmp/fio.pid; wait $!; now > /tmp/$1.end ) &
  fw=$!
  wait_io
  id0=$(headid); w0=$(getwin); p0=$(getpol)
}
# outage: a watcher for $D's disk leaving (its uptime into /tmp/gone_at), both
# controllers removed; t0 is when the last function left the bus.
outage() {
  ( n=$(n_of); while [ -e /sys/block/$n ]; do sleep 0.05; done; now > /tmp/gone_at ) &
  rw=$!
  unplug 0 1
  t0=$(now)
}
# wait_removed SECS: until the disk went or SECS passed since t0.
wait_removed() { until [ -e /tmp/gone_at ] || after $1; do sleep 0.1; done; }
# case_end NAME: (fio still running: I/O flows again, then it is stopped) its figures.
case_end() {
  [ -e /tmp/$1.end ] || { wait_io; kill $(cat /tmp/fio.pid) 2>/dev/null; }
  wait $fw
  kill $rw 2>/dev/null
  echo "bench: case $1 t_gone=$t0 fio_end=$(cat /tmp/$1.end) removed_at=$(cat /tmp/gone_at 2>/dev/null || echo -) set_at=${set_at:--} id_before=$id0 id_after=$(headid) win_before=$w0 win_after=$(getwin) pol_before=$p0 pol_after=$(getpol) dev=$D"
  echo "bench: fio-json-begin $1"; sed -n '/^{/,$p' /tmp/$1.json; echo "bench: fio-json-end $1"
  tail -3 /tmp/$1.err | sed "s/^/bench: fio-stderr $1: /"
  set_at=""
}

begin a; setwin 20; fio_start a; outage
until after 8; do sleep 0.05; done
paths_back; case_end a; end a

begin b; setwin 5; setpol round-robin; fio_start b; outage
until after 12; do sleep 0.1; done
paths_back; case_end b; end b

begin c1; setwin 5; fio_start c1; outage
sleep 1; setwin 60; set_at=$(now)
wait_removed 10
paths_back; case_end c1; end c1

begin c2; setwin 60; fio_start c2; outage
sleep 1; setwin 4; set_at=$(now)
wait_removed 15
paths_back; case_end c2; end c2

begin d; setwin 0; fio_start d; outage
wait_removed 10
paths_back; case_end d; end d
echo "umpath-lab: bench done"
SCEN
}

# side SIDE MULTIPATH: one boot, SIDE (kernel or umpathd) with its definitions on stdin
# and the guest kernel's multipath MULTIPATH (Y or N); its log kept as $work/SIDE.log.
side() {
  rm -f "$work/serial.log" "$work/ns0.img"
  lab_after
  cat >> "$work/after"
  scenario >> "$work/after"
  lab_initramfs "$umpathd" "$ctl" "$fio"
  UMPATH_LAB_MULTIPATH=$2 lab_boot 900 2
  cp "$log" "$work/$1.log"
  echo "bench: $1 side booted and ran (qemu exit $lab_rc)"
}

side kernel Y <<'KERNEL'
kernel_head $A $B
D=$KH
# khead: after the paths came back, until a head has both of them (30 s at most).
khead() {
  local i s h
  for i in $(seq 1 150); do
    for s in /sys/class/nvme-subsystem/nvme-subsys*; do
      [ "$(ls $s 2>/dev/null | grep -cE '^nvme[0-9]+$')" -ge 2 ] || continue
      h=$(ls $s | grep -E '^nvme[0-9]+n1$' | head -1)
      [ -n "$h" ] && [ -b /dev/$h ] && { D=/dev/$h; return 0; }
    done
    sleep 0.2
  done
  echo "umpath-lab: no kernel head"
}
subsys() { local s; for s in /sys/class/nvme-subsystem/nvme-subsys*; do [ -e $s/$(basename $D) ] && echo $s && return; done; }
setwin() { echo $1 > /sys/block/$(basename $D)/delayed_removal_secs; }
getwin() { cat /sys/block/$(basename $D)/delayed_removal_secs 2>/dev/null || echo none; }
setpol() { echo $1 > $(subsys)/iopolicy; }
getpol() { local s; s=$(subsys); [ -n "$s" ] && cat $s/iopolicy || echo none; }
headid() { cat /sys/block/$(basename $D)/diskseq 2>/dev/null || echo none; }
paths_back() { replug 0 1; khead; }
KERNEL

side umpathd N <<'UMPATHD'
agent um $U --bind_vfio --vfio_devices=$A,$B --workers=2 --export_all
wait_head; wait_paths 2
D=/dev/ublkb0
wait_dev
setwin() { $C set-delayed-removal $H $1 > /dev/null; }
getwin() { local w; w=$(hfield delayed_removal_secs); echo ${w:-none}; }
setpol() { $C set-policy $H $1 > /dev/null; }
getpol() { local p; p=$(hfield io_policy); echo ${p:-none}; }
headid() { local u; u=$(hfield uid); echo ${u:-none}; }
paths_back() { replug 0 1; wait_head; wait_paths 2; wait_dev; }
UMPATHD

python3 - "$work/kernel.log" "$work/umpathd.log" <<'PY'
import json, re, sys
rows = {}
for side, path in (("kernel", sys.argv[1]), ("umpathd", sys.argv[2])):
    text = open(path).read()
    for m in re.finditer(r"bench: case (\S+) (.*)", text):
        name, kv = m.group(1), dict(x.split("=", 1) for x in m.group(2).split())
        j = re.search(r"bench: fio-json-begin %s\n(.*?)bench: fio-json-end %s\n" % (name, name), text, re.S)
        job = json.loads(j.group(1))["jobs"][0] if j and j.group(1).strip() else None
        f = lambda k: float(kv[k]) if kv.get(k, "-") not in ("-", "") else None
        t0, end, gone = f("t_gone"), f("fio_end"), f("removed_at")
        err = job["error"] if job else None
        maxlat = max(job[d]["lat_ns"]["max"] for d in ("read", "write")) / 1e9 if job else None
        r = dict(err=err, first=(end - t0) if err and end is not None else None,
                 gone=(gone - t0) if gone is not None else None, maxlat=maxlat,
                 kept=kv["id_before"] == kv["id_after"] and kv["id_after"] != "none", **kv)
        rows[(side, name)] = r
        print(f"{side:8s} {name:3s} window {kv['win_before']}->{kv['win_after']} policy {kv['pol_before']}->{kv['pol_after']} "
              f"fio error={err} first_error_s={r['first'] if r['first'] is None else round(r['first'], 2)} "
              f"disk_gone_s={r['gone'] if r['gone'] is None else round(r['gone'], 2)} max_lat_s={maxlat if maxlat is None else round(maxlat, 2)} "
              f"head_kept={'yes' if r['kept'] else 'no'} ({kv['id_before']} -> {kv['id_after']}){' window set at +%.2f s' % (f('set_at') - t0) if f('set_at') else ''}")
def s1(v):
    return "?" if v is None else f"{v:.1f}"
def cell(r, case):
    if r is None:
        return "not run"
    if case == "e":
        kept = r["win_after"] == r["win_before"] and r["pol_after"] == r["pol_before"]
        return (f"{'same head' if r['kept'] else 'new head'}; window {r['win_after']} (was {r['win_before']}), "
                f"policy {r['pol_after']} (was {r['pol_before']}): settings {'kept' if kept else 'not kept'}")
    e = "0 errors" if r["err"] == 0 else "fio gave no result" if r["err"] is None else \
        f"EIO after {s1(r['first'])} s" if r["err"] == 5 else f"error {r['err']} after {s1(r['first'])} s"
    g = "head kept" if r["kept"] else f"head removed at {s1(r['gone'])} s" if r["gone"] is not None else "head not kept"
    return f"{e}; max lat {s1(r['maxlat'])} s; {g}; window after {r['win_after']}"
cases = [("a", "a", "window 20 s, paths back at 8 s"), ("b", "b", "window 5 s, gone for 12 s"),
         ("c1", "c1", "window 5 -> 60 s at 1 s, back at 10 s"), ("c2", "c2", "window 60 -> 4 s at 1 s, back at 15 s"),
         ("d", "d", "window 0"), ("e", "b", "head back after b's removal")]
print()
print("| case | kernel 6.18 native multipath | umpathd (vfio, ublk) |")
print("|---|---|---|")
for c, src, what in cases:
    print(f"| {c}. {what} | {cell(rows.get(('kernel', src)), c)} | {cell(rows.get(('umpathd', src)), c)} |")
PY
