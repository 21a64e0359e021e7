# /lab/lib.sh in the lab node (mkinitramfs.sh puts it there): what guest scripts share.
# Sourced by busybox sh. The agent's state is read as `umpathctl -o json` and its
# `event type=...` lines, never its log prose or umpathctl's tables: the node prints both
# to the serial log (jshow, events, watch_show) and the host checks them there
# (deploy/lab/check.py). A script sets C (umpathctl) and H (the head) before using them.
# An ASan build's agent keeps what it frees in quarantine (256 MiB by default), so its
# resident memory grows with what it frees, not with what it keeps: a small quarantine
# keeps the memory checks (hotplug t6) about leaks. A release build ignores it.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1:thread_local_quarantine_size_kb=64"
SOCK=/run/umpath/umpathd.sock

# --- Sections and markers the host cuts the log by (lib.sh `section`). ---
begin() { echo "umpath-lab: == $*"; }
end() { echo "umpath-lab: end $1"; }
now() { cut -d' ' -f1 /proc/uptime; }

# --- PCI functions and QEMU. ---
# bind DRIVER BDF...: binds functions to a driver through driver_override.
bind() {
  local drv=$1 b; shift
  for b in "$@"; do
    [ -e /sys/bus/pci/devices/$b/driver ] && echo $b > /sys/bus/pci/devices/$b/driver/unbind
    echo $drv > /sys/bus/pci/devices/$b/driver_override
    echo $b > /sys/bus/pci/drivers_probe
  done
}
# gone BDF / back BDF: wait (30 s at most) for a function to leave or join the bus.
gone() { local i; for i in $(seq 1 300); do [ -e /sys/bus/pci/devices/$1 ] || return 0; sleep 0.1; done; echo "umpath-lab: $1 did not go"; }
back() { local i; for i in $(seq 1 300); do [ -e /sys/bus/pci/devices/$1 ] && return 0; sleep 0.1; done; echo "umpath-lab: $1 did not come"; }
# qmp COMMAND JSON: asks the host (deploy/lab/qmp_relay.sh) to send it to QEMU.
qmp() { echo "umpath-lab: qmp $*"; }
# ctrl_bdf N: the PCI address of boot.sh's controller cN (behind root port rpN).
ctrl_bdf() { echo 0000:0$(($1 + 1)):00.0; }
# unplug N...: QMP device_del of each cN, then each function waited out of the bus.
unplug() {
  local i
  for i in "$@"; do qmp device_del "{\"id\": \"c$i\"}"; done
  for i in "$@"; do gone $(ctrl_bdf $i); done
}
# replug N...: QMP device_add of each cN as boot.sh made it, each waited onto the bus.
replug() {
  local i
  for i in "$@"; do
    qmp device_add "{\"driver\": \"nvme\", \"id\": \"c$i\", \"serial\": \"S0\", \"subsys\": \"s0\", \"bus\": \"rp$i\"}"
    back $(ctrl_bdf $i)
  done
}
# kernel_head BDF...: the functions bound to the kernel's nvme driver, then waits (20 s at
# most) for its multipath head with every one of them a path: $KH is the head's device and
# $KS its subsystem in sysfs. 6.12 names them nvme0n1 and nvme-subsys0; 6.18 after
# whichever controller probed first (nvme0n1 or nvme1n1), so they are looked up.
kernel_head() {
  local i s h
  bind nvme "$@"
  for i in $(seq 1 100); do
    for s in /sys/class/nvme-subsystem/nvme-subsys*; do
      [ "$(ls $s 2>/dev/null | grep -cE '^nvme[0-9]+$')" -ge $# ] || continue
      h=$(ls $s | grep -E '^nvme[0-9]+n1$' | head -1)
      [ -n "$h" ] && [ -b /dev/$h ] && { KH=/dev/$h; KS=$s; return 0; }
    done
    sleep 0.2
  done
  echo "umpath-lab: no kernel head over $*"
}

# --- The agent. ---
# agent NAME PROGRAM [FLAGS...]: PROGRAM (umpathd or umpath-perf) in the background on
# $SOCK as node "lab", its settings in /tmp/heads.NAME (/tmp/heads.$LAB_STATE when set),
# stdout appended to /tmp/NAME.out and stderr to /tmp/NAME.err; $pid is its pid.
agent() {
  local n=$1 p=$2; shift 2
  $p --socket=$SOCK --state_file=/tmp/heads.${LAB_STATE:-$n} --node=lab "$@" >> /tmp/$n.out 2>> /tmp/$n.err &
  pid=$!
}
# stop NAME: ends the agent $pid (a workload still prints its result), says its exit
# status, then prints its output and its event lines.
stop() {
  kill $pid
  wait $pid
  echo "umpath-lab: $1 exited $?"
  cat /tmp/$1.out
  events /tmp/$1.err
}
# events FILE: the agent's event lines in its stderr. logs FILE: the rest, the last 60
# lines as "log: ..." (to read when a check fails; no check reads them).
events() { grep '^event ' "$1"; }
logs() { grep -v '^event ' "$1" | tail -60 | sed 's/^/log: /'; }

# --- Its state, as JSON. ---
# onejson: each JSON document on stdin (as umpathctl -o json or buf curl print them,
# multi-line, the closing brace alone at the start of a line) on one line.
onejson() { awk '{ top = ($0 == "}"); sub(/^[ \t]+/, ""); b = b $0; if (top) { print b; b = "" } }'; }
# jshow TAG ARGS...: `umpathctl -o json ARGS` as one "umpath-json TAG {...}" line (none when
# it fails: its error is on stderr); returns umpathctl's exit status.
jshow() {
  local t=$1 rc; shift
  $C -o json "$@" > /tmp/jshow.$$
  rc=$?
  onejson < /tmp/jshow.$$ | sed "s/^/umpath-json $t /"
  return $rc
}
# watch_start FILE / watch_show FILE: `umpathctl -o json watch` into FILE (its pid in $w,
# returned once its snapshot came), and what it saw, as "umpath-json watch" lines.
watch_start() {
  local i
  $C -o json watch > $1 2>&1 &
  w=$!
  for i in $(seq 1 100); do grep -q '"snapshot"' $1 && return 0; sleep 0.1; done
  echo "umpath-lab: the watch never got its snapshot"
}
watch_show() { onejson < $1 | sed 's/^/umpath-json watch /'; }
# has_head: yes when head $H exists (its removal may be pending), else no.
has_head() { $C head $H > /dev/null 2>&1 && echo yes || echo no; }
# wait_head: until the agent has a head (30 s at most).
wait_head() {
  local i
  for i in $(seq 1 150); do $C -o json heads 2>/dev/null | grep -q '"name": "heads/' && return 0; sleep 0.2; done
  echo "umpath-lab: no head"
  return 1
}
# npaths: how many paths head $H has.
npaths() { $C -o json head $H 2>/dev/null | grep -c '"name": "heads/.*/paths/'; }
# hfield FIELD: a field of head $H itself (live_paths, waiting_ios, export_device, ...),
# as JSON has it without quotes; empty when there is no such head.
hfield() { $C -o json head $H 2>/dev/null | awk -v f="\"$1\":" '$1 == f { v = $2; gsub(/[",]/, "", v); print v; exit }'; }
# wait_paths N: until head $H has N paths (30 s at most).
wait_paths() { local i; for i in $(seq 1 300); do [ "$(npaths)" = "$1" ] && return 0; sleep 0.1; done; echo "umpath-lab: $1 paths never seen"; }
# pfield PATH FIELD: a field of path PATH of head $H (ana_state, controller_state,
# selectable, completed, ...), as JSON has it without quotes; empty when there is none.
pfield() {
  $C -o json head $H 2>/dev/null | awk -v p="/paths/$1\"" -v f="\"$2\":" '
    $1 == "\"name\":" && index($2, "/paths/") { cur = index($0, p) > 0 }
    cur && $1 == f { v = $2; gsub(/[",]/, "", v); print v; exit }'
}
# wait_pfield PATH FIELD REGEX: until pfield matches (20 s at most).
wait_pfield() {
  local i
  for i in $(seq 1 200); do pfield $1 $2 | grep -qE "$3" && return 0; sleep 0.1; done
  echo "umpath-lab: $1 $2 never matched $3 (is $(pfield $1 $2))"
}

# --- Block devices. ---
# dev: present or gone, for the block device $D.
dev() { [ -b $D ] && echo present || echo gone; }
# wait_dev: until $D is there (30 s at most).
wait_dev() { local i; for i in $(seq 1 300); do [ -b $D ] && return 0; sleep 0.1; done; echo "umpath-lab: $D never appeared"; }
# verify NAME SIZE [FIO_ARGS...]: fio ($F) writes SIZE of $D with crc32c checksums and
# reads it back; one "NAME fio exit RC err=N" line.
verify() {
  local n=$1 s=$2; shift 2
  $F --name=$n --filename=$D --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --size=$s --verify=crc32c --do_verify=1 --verify_fatal=1 "$@" > /tmp/$n.fio 2>&1
  echo "umpath-lab: $n fio exit $? $(grep -oE 'err= *[0-9]+' /tmp/$n.fio | head -1) $(grep -oE 'error=[^,]*' /tmp/$n.fio | head -1)"
}

# verify_bg NAME SIZE: verify in the background ($f is its pid), 3 s under way.
verify_bg() { verify "$@" & f=$!; sleep 3; }
# policies NAME SIZE: for each policy, head $H set to it and verify NAME-POLICY SIZE, with
# the head's JSON before and after ("POLICY-before", "POLICY-after").
policies() {
  local p
  for p in numa round-robin queue-depth; do
    $C set-policy $H $p > /dev/null
    jshow $p-before head $H
    verify $1-$p $2
    jshow $p-after head $H
  done
}

# idle_sample PID: the process's CPU ticks over 10 s with nothing to do, its resident
# memory and threads, as one "bench: idle ticks T0 T1 hz HZ rss_kb R threads N" line.
idle_sample() {
  local t0 t1
  t0=$(awk '{print $14 + $15}' /proc/$1/stat)
  sleep 10
  t1=$(awk '{print $14 + $15}' /proc/$1/stat)
  echo "bench: idle ticks $t0 $t1 hz $(getconf CLK_TCK 2>/dev/null || echo 100) rss_kb $(awk '/VmRSS/ {print $2}' /proc/$1/status) threads $(ls /proc/$1/task | wc -l)"
}
