#!/usr/bin/env bash
# Benchmark (issue 7): kernel NVMe/TCP controllers as paths, with real ANA from the
# guest kernel's NVMe target (deploy/lab/nvmet_lib.sh: one namespace, port 1 =
# 127.0.0.1:4420 optimized, port 2 = 127.0.0.1:4421 non-optimized). Two boots of the
# same VM shape (no QEMU NVMe, 2 vCPU, 2 GiB) and the same initramfs:
#   A (nvme_core.multipath=Y): the kernel connects to both ports; fio (io_uring, direct,
#     4k randread, QD 32, one job) on its multipath head (numa), RUNS times;
#   B (multipath=N): umpathd connects to both ports itself (--kernel_connect, libnvme)
#     and runs its workload, the same shape, over the /dev/ngXnY of its paths, RUNS
#     times; then umpathd idle 10 s with both paths live.
# On each side, with reads running: the time from an ANA change on the target to I/O
# moving path, for a flip that fails I/O (port 1 -> inaccessible, port 2 -> optimized)
# and one that does not (back again; only the ANA change AEN tells the host). Per-path
# completions are sampled every ~50 ms plus the probe's own time: the kernel's hidden
# path disks' stat; umpathd's metrics (--metrics_address on loopback), or umpathctl
# head's COMPLETED column if they do not answer. Figures are printed, never asserted.
# Usage: bench/lab_tcp_vs_kernel.sh UMPATHD [SECONDS] [RUNS] [UMPATHCTL]
# UMPATHCTL defaults to the umpathctl of UMPATHD's build tree. UMPATH_BENCH_ONLY=kernel
# boots only A, =umpath only B.
set -euo pipefail
. "$(dirname "$0")/../deploy/lab/lib.sh"
# UMPATHCTL: given, or the build tree's (build/PRESET/umpathd, build/PRESET/client/umpathctl).
ctl="${4:-$(dirname "$1")/client/umpathctl}"
[ -x "$ctl" ] || ctl="$1"
# UMPATH_LAB_KEEP=1 keeps $work (both serial logs).
lab_init bench-tcp "$1" "$ctl"
secs="${2:-10}"
runs="${3:-1}"
only="${UMPATH_BENCH_ONLY:-}"
# The ANA runs: SETTLE s of steady reads, each flip then WINDOW s of samples.
settle=3
window=6
fio="$(lab_fio)"
H=nguid-ab0000000000000000000000000000f1

# One guest script for both boots; it tells them apart by nvme_core.multipath.
lab_after
cat >> "$work/after" <<AFTER
SECS=$secs; RUNS=$runs; SETTLE=$settle; WINDOW=$window
AFTER
cat >> "$work/after" <<'AFTER'
. /lab/nvmet.sh
# Guest uptime without a fork: $up (seconds, two decimals) and $up_cs (centiseconds).
tick() { read -r up idle < /proc/uptime; up_cs=${up%.*}${up#*.}; }
# ana_run OUT: calls probe (which sets c1 c2, each port's completed reads, and a1 a2,
# the host's view of each port's ANA state) every ~50 ms: SETTLE s, flip 1, WINDOW s,
# flip 2, WINDOW s. Lines "F N T_BEFORE T_AFTER" (the target's writes) and
# "S T_BEFORE T_AFTER c1 c2 a1 a2" (a probe).
ana_run() {
  : > $1
  tick
  f1=$((up_cs + SETTLE * 100)); f2=$((f1 + WINDOW * 100)); end=$((f2 + WINDOW * 100)); flips=0
  while [ $up_cs -lt $end ]; do
    if [ $flips = 0 ] && [ $up_cs -ge $f1 ]; then
      t0=$up; nvmet_ana 1 inaccessible; nvmet_ana 2 optimized; tick
      echo "F 1 $t0 $up" >> $1; flips=1
    elif [ $flips = 1 ] && [ $up_cs -ge $f2 ]; then
      t0=$up; nvmet_ana 1 optimized; nvmet_ana 2 non-optimized; tick
      echo "F 2 $t0 $up" >> $1; flips=2
    fi
    tick; t0=$up
    probe
    tick
    echo "S $t0 $up $c1 $c2 $a1 $a2" >> $1
    sleep 0.05
    tick
  done
}
show() { echo "bench: $1-begin"; cat $2; echo "bench: $1-end"; }
nvmet_setup

if [ "$(cat /sys/module/nvme_core/parameters/multipath)" = Y ]; then
  # Boot A: the kernel's multipath head over both ports.
  nvmet_kernel_head
  # Each port's hidden path disk (nvmeXcYnZ, under its controller): its stat counts the
  # reads the head sent down that path.
  path() {
    for c in $(ls $sub | grep -E '^nvme[0-9]+$'); do
      grep -qE "trsvcid=$(nvmet_svc $1)(,|\$)" $sub/$c/address && ls -d $sub/$c/nvme*c*n*
    done
  }
  P1=$(path 1); P2=$(path 2)
  echo "bench: kernel head /dev/$head of $(basename $sub), controllers $(ls $sub | grep -E '^nvme[0-9]+$' | tr '\n' ' ')policy $(cat $sub/iopolicy), paths port 1 $(basename $P1) port 2 $(basename $P2)"
  for run in $(seq 1 $RUNS); do
    $F --name=kernel --filename=/dev/$head --ioengine=io_uring --direct=1 --rw=randread \
      --bs=4k --iodepth=32 --numjobs=1 --time_based --runtime=$SECS --output-format=json \
      --output=/tmp/fio.json >/dev/null 2>&1
    show fio-json /tmp/fio.json
  done
  probe() { read -r c1 x < $P1/stat; read -r c2 x < $P2/stat; read -r a1 < $P1/ana_state; read -r a2 < $P2/ana_state; }
  $F --name=kernel-ana --filename=/dev/$head --ioengine=io_uring --direct=1 --rw=randread \
    --bs=4k --iodepth=32 --numjobs=1 --time_based --runtime=$((SETTLE + 2 * WINDOW + 3)) \
    --output-format=json --output=/tmp/fio-ana.json >/dev/null 2>&1 &
  f=$!
  sleep 1
  ana_run /tmp/ana.txt
  wait $f
  show ana-kernel /tmp/ana.txt
  show fio-ana-json /tmp/fio-ana.json
else
  # Boot B: umpathd connects to both ports and is the only multipath layer.
  KC=tcp:127.0.0.1:4420:$NVMET_NQN,tcp:127.0.0.1:4421:$NVMET_NQN
  # disconnect WHEN: every run starts with no controller of ours, whatever umpathd
  # leaves behind.
  disconnect() {
    n=0
    for c in /sys/class/nvme/nvme*; do
      [ -e $c/subsysnqn ] && [ "$(cat $c/subsysnqn)" = $NVMET_NQN ] || continue
      echo 1 > $c/delete_controller && n=$((n + 1))
    done
    echo "bench: umpathd left $n controllers connected $1 (deleted)"
  }
  # wait_live PID: until the head has both paths live (60 s at most) while PID runs.
  alive() { read -r pid comm st rest 2>/dev/null < /proc/$1/stat && [ "$st" != Z ]; }
  wait_live() {
    for i in $(seq 1 300); do
      alive $1 || return 1
      [ "$(hfield live_paths)" = 2 ] && return 0
      sleep 0.2
    done
    return 1
  }
  # umpathd_end RC [RC_OF_OUR_KILL]: an unexpected exit status and umpathd's last words.
  umpathd_end() { [ $1 = 0 ] || [ $1 = "${2:-0}" ] || { echo "bench: umpathd exited $1"; tail -5 /tmp/u.err; }; }
  for run in $(seq 1 $RUNS); do
    $P --socket=/run/umpath/umpathd.sock --state_file=/tmp/heads --node=lab --kernel_connect=$KC \
      --workload=randread --workload_bs=4096 --workload_qd=32 --workload_secs=$SECS 2>/tmp/u.err
    umpathd_end $?
    disconnect "after run $run"
  done
  # ANA: the workload runs long enough for both flips; the control API serves meanwhile.
  $P --socket=/run/umpath/umpathd.sock --state_file=/tmp/heads --node=lab --kernel_connect=$KC \
    --workload=randread --workload_bs=4096 --workload_qd=32 --workload_secs=60 \
    --workload_then=serve --metrics_address=127.0.0.1:9810 > /tmp/ana-u.out 2>/tmp/u.err &
  u=$!
  if wait_live $u; then
    # Path names are kernel controller names; the port is in the controller's address
    # (sysfs, else the agent's controller address).
    has_path() { [ -n "$1" ] && [ -n "$(pfield $1 name)" ]; }
    ctrl_at() {
      $C -o json controllers | awk -v svc="trsvcid=$(nvmet_svc $1)" '$1 == "\"name\":" {n = $2; gsub(/.*\/|[",]/, "", n)}
        $1 == "\"address\":" && (index($0, svc ",") || index($0, svc "\"")) {print n; exit}'
    }
    P1=$(nvmet_ctrl 1); P2=$(nvmet_ctrl 2)
    has_path "$P1" || P1=$(ctrl_at 1)
    has_path "$P2" || P2=$(ctrl_at 2)
    echo "bench: umpathd paths port 1 $P1 port 2 $P2"
    $C controllers; $C head $H
    cprobe() {
      set -- $($C -o json head $H 2>/dev/null | awk -v p1="/paths/$P1\"" -v p2="/paths/$P2\"" '
        $1 == "\"name\":" && index($2, "/paths/") {cur = index($0, p1) ? 1 : index($0, p2) ? 2 : 0}
        cur && $1 == "\"ana_state\":" {v = $2; gsub(/[",]/, "", v); sub(/^ANA_STATE_/, "", v); a[cur] = tolower(v)}
        cur && $1 == "\"completed\":" {v = $2; gsub(/[",]/, "", v); c[cur] = v}
        END {print c[1] + 0, c[2] + 0, (a[1] == "" ? "-" : a[1]), (a[2] == "" ? "-" : a[2])}')
      c1=$1; c2=$2; a1=$3; a2=$4
    }
    # The same from umpathd's metrics (completions are the latency histogram's count):
    # busybox wget over loopback takes milliseconds, a umpathctl start far longer under
    # TCG, so the metrics give the finer timing when they answer.
    mprobe() {
      set -- $(wget -q -O - http://127.0.0.1:9810/metrics 2>/dev/null | awk -v p1="path=\"$P1\"" -v p2="path=\"$P2\"" '
        /^umpath_path_io_latency_seconds_count/ {if (index($0, p1)) c1 = $2; if (index($0, p2)) c2 = $2}
        /^umpath_path_ana_state/ && $2 == 1 {st = $0; sub(/.*state="/, "", st); sub(/".*/, "", st)
          if (index($0, p1)) a1 = st; if (index($0, p2)) a2 = st}
        END {if (c1 != "" && c2 != "") printf "%d %d %s %s\n", c1, c2, (a1 == "" ? "-" : a1), (a2 == "" ? "-" : a2)}')
      [ $# = 4 ] && { c1=$1; c2=$2; a1=$3; a2=$4; }
    }
    c1=""; mprobe
    if [ -n "$c1" ]; then
      probe() { mprobe; }; echo "bench: umpathd ANA probe: metrics (wget)"
    else
      probe() { cprobe; }; echo "bench: umpathd ANA probe: umpathctl head"
    fi
    ana_run /tmp/ana.txt
    $C head $H
    show ana-umpathd /tmp/ana.txt
    # The workload's own result (errors, max latency across the flips) when it ends.
    for i in $(seq 1 450); do
      grep -q '^umpath-perf: result' /tmp/ana-u.out && break
      alive $u || break
      sleep 0.2
    done
  else
    echo "bench: umpathd head $H never had 2 live paths; no ANA timing"
  fi
  kill $u 2>/dev/null; wait $u
  umpathd_end $? 143
  sed 's/^/bench: ana-run /' /tmp/ana-u.out
  disconnect "after the ANA run"
  # Idle: two live paths, no I/O, 10 s.
  $U --socket=/run/umpath/umpathd.sock --state_file=/tmp/heads --node=lab --kernel_connect=$KC 2>/tmp/u.err &
  u=$!
  if wait_live $u; then
    sleep 3
    idle_sample $u
  else
    echo "bench: umpathd never had 2 live paths; no idle sample"
  fi
  kill $u 2>/dev/null; wait $u
  umpathd_end $? 143
fi
AFTER
lab_initramfs "$umpathd" "$perf" "$ctl" "$fio"
# boot MULTIPATH LOG TIMEOUT: the node with no QEMU NVMe; the paths are nvmet's.
boot() {
  UMPATH_LAB_MULTIPATH=$1 UMPATH_LAB_TCG_THREAD=multi lab_boot "$3" 0
  cp "$log" "$2"
  mv "$work/serial.log" "$work/serial-$1.log"
}
: > "$work/a.log"; : > "$work/b.log"
[ "$only" = umpath ] || boot Y "$work/a.log" $((300 + runs * secs * 3))
[ "$only" = kernel ] || boot N "$work/b.log" $((600 + runs * (secs * 3 + 60)))
python3 - "$work/a.log" "$work/b.log" "$only" <<'PY'
import json, re, sys
a, b = open(sys.argv[1]).read(), open(sys.argv[2]).read()
only = sys.argv[3]

def fio_res(doc):
    j = json.loads(doc)["jobs"][0]; r = j["read"]
    lat = r["clat_ns"] if "percentile" in r["clat_ns"] else r["lat_ns"]
    return dict(iops=r["iops"], p99=lat["percentile"]["99.000000"] / 1e3, max=r["lat_ns"]["max"] / 1e3, errors=j["error"])

def ump_res(line):
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    return dict(iops=float(f["iops"]), p99=float(f["p99_us"]), max=float(f["max_us"]), errors=f.get("errors", "?"))

def block(text, name):
    m = re.search(rf"bench: {name}-begin\n(.*?)bench: {name}-end", text, re.S)
    return m.group(1) if m else None

def ana(text, what):
    """Per flip: ms from the target's first write to the new path's first growth, to the
    old path's last growth, and to the host showing the new path optimized."""
    if text is None:
        print(f"{what}: no ANA samples"); return
    # F[k] = (t0, t1, index of the first probe after the writes): before and after go by
    # order, since a probe and a write can share a centisecond.
    S, F = [], {}
    for line in text.splitlines():
        p = line.split()
        if len(p) == 4 and p[0] == "F":
            F[int(p[1])] = (float(p[2]), float(p[3]), len(S))
        elif len(p) == 7 and p[0] == "S":
            S.append((float(p[1]), float(p[2]), (int(p[3]), int(p[4])), (p[5], p[6])))
    if len(S) > 1:
        gaps = [y[0] - x[0] for x, y in zip(S, S[1:])]
        print(f"{what}: {len(S)} samples, every {sum(gaps) / len(gaps) * 1e3:.0f} ms on average "
              f"(guest uptime, 10 ms resolution; a probe takes {sum(s[1] - s[0] for s in S) / len(S) * 1e3:.0f} ms)")
    names = {1: "port 1 optimized -> inaccessible, port 2 non-optimized -> optimized (I/O on port 1 fails)",
             2: "port 1 -> optimized, port 2 -> non-optimized (no I/O fails; the host learns by the AEN)"}
    for k, new, old in ((1, 1, 0), (2, 0, 1)):
        if k not in F:
            print(f"{what}: flip {k}: not done"); continue
        t0, t1, i = F[k]
        before = S[:i]
        win = S[i:F[k + 1][2] if k + 1 in F else len(S)]
        if not before or not win:
            print(f"{what}: flip {k}: too few samples"); continue
        seq = [before[-1]] + win
        steps = list(zip(seq, seq[1:]))
        # Each event as "A-B ms": after the probe before the one that saw it began, before
        # the one that saw it ended.
        ms = lambda e: f"{max(0, e[0][0] - t0) * 1e3:.0f}-{(e[1][1] - t0) * 1e3:.0f} ms" if e else "never"
        moved = next(((x, y) for x, y in steps if y[2][new] > x[2][new]), None)
        grew = [(x, y) for x, y in steps if y[2][old] > x[2][old]]
        stop = grew[-1] if grew else steps[0]
        still = bool(grew) and grew[-1][1] is win[-1]
        opt = lambda a: a.split(",")[0] == "optimized"
        saw = next(((x, y) for x, y in steps if opt(y[3][new]) and not opt(y[3][old])), None)
        moved_n = win[-1][2][new] - before[-1][2][new]; old_n = win[-1][2][old] - before[-1][2][old]
        print(f"{what}: flip {k}: {names[k]}")
        print(f"    first I/O on port {new + 1} {ms(moved)}; port {old + 1} "
              + ("still growing at the end of the window" if still else f"last growth {ms(stop)}")
              + f"; host shows port {new + 1} optimized {ms(saw)} "
              f"(writes took {(t1 - t0) * 1e3:.0f} ms; reads in the {(win[-1][1] - t0):.1f} s after: "
              f"port {new + 1} {moved_n}, port {old + 1} {old_n})")

def line(who, i, r):
    print(f"run {i + 1}: {who} iops={r['iops']:.0f} p99_us={r['p99']:.1f} max_us={r['max']:.1f} errors={r['errors']}")

kern = [fio_res(d) for d in re.findall(r"bench: fio-json-begin\n(.*?)bench: fio-json-end", a, re.S)]
ours = [ump_res(l) for l in re.findall(r"^umpath-perf: result (.*)", b, re.M)]
for m in re.findall(r"^bench: kernel head (.*)", a, re.M):
    print("kernel multipath:", m)
for m in re.findall(r"^bench: umpathd paths (.*)", b, re.M):
    print("umpathd paths:", m)
if only != "umpath" and not kern:
    print(a[-3000:]); print("bench: no kernel results")
if only != "kernel" and not ours:
    print(b[-3000:]); print("bench: no umpathd results")
for i in range(max(len(kern), len(ours))):
    k = kern[i] if i < len(kern) else None
    u = ours[i] if i < len(ours) else None
    if k: line("kernel  nvme-tcp multipath fio", i, k)
    if u: line("umpathd nvme-tcp /dev/ng workload", i, u)
    if k and u:
        print(f"run {i + 1}: ratio umpath/kernel: iops {u['iops'] / k['iops']:.2f}x, p99 {u['p99'] / k['p99']:.2f}x")
if only != "umpath":
    ana(block(a, "ana-kernel"), "kernel ANA")
    d = block(a, "fio-ana-json")
    if d:
        r = fio_res(d)
        print(f"kernel during the flips: iops={r['iops']:.0f} p99_us={r['p99']:.1f} max_us={r['max']:.1f} errors={r['errors']}")
if only != "kernel":
    ana(block(b, "ana-umpathd"), "umpathd ANA")
    m = re.search(r"^bench: ana-run umpath-perf: result (.*)", b, re.M)
    if m:
        r = ump_res(m.group(1))
        print(f"umpathd during the flips (60 s workload): iops={r['iops']:.0f} p99_us={r['p99']:.1f} max_us={r['max']:.1f} errors={r['errors']}")
    for m in re.findall(r"^bench: (umpathd (?:exited|left|head|never|ANA probe).*)", b, re.M):
        print(m)
    m = re.search(r"bench: idle ticks (\d+) (\d+) hz (\d+) rss_kb (\d+) threads (\d+)", b)
    if m:
        t0, t1, hz, rss, th = map(int, m.groups())
        cpu = (t1 - t0) / hz
        print(f"umpathd idle 10 s, two live nvme-tcp paths: cpu {cpu:.2f} s = {cpu / 10 * 100:.2f}% of a core, "
              f"rss {rss / 1024:.1f} MiB, {th} threads")
PY
