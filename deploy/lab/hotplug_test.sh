#!/usr/bin/env bash
# CTest (label lab), issue 5: paths that come and go on real (QEMU) NVMe through vfio,
# each step under a verified round-robin workload, with the events checked. The guest
# asks for each fault on the serial console ("umpath-lab: qmp COMMAND JSON"); this script
# sends it to QEMU's QMP socket, and the guest waits for its effect in sysfs.
#  1. one of two paths hot-removed and hot-added (found by uevent, bound to vfio-pci,
#     brought up, back in its head): zero errors, zero mismatches;
#  2. delayed_removal_secs=30, both removed, one back after 3 s: zero errors, the same
#     head, removal-scheduled then removal-cancelled;
#  3. delayed_removal_secs=2, both removed for good: the waiting I/O fails once the
#     window has passed, the head goes, and a later re-add makes a new head;
#  4. delayed_removal_secs=0: the head goes with its last path;
#  5. the window raised during an outage keeps the head past the old deadline;
#  6. ten remove/add cycles under I/O: no error, and the agent's open files and memory
#     back where they were;
#  7, 8. a controller that stops answering is reset, by the health check or by the
#     commands' deadlines.
# Usage: hotplug_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init hotplug "$1" "$2"
H=nguid-ab000000000000000000000000000001

lab_after
cat >> "$work/after" <<AFTER
start() {  # start NAME DELAY
  begin \$1 "(delayed_removal_secs \$2)"
  agent \$1 \$P --bind_vfio --vfio_devices=\$A,\$B --default_io_policy=round-robin \
    --default_delayed_removal_secs=\$2 --workload=verify --workload_secs=600 --workload_qd=16
  wait_paths 2
  sleep 2
}
finish() { stop \$1; end \$1; }

start t1 0
unplug 0; wait_paths 1
jshow removed head \$H
replug 0; wait_paths 2
jshow readded head \$H
sleep 2
jshow readded-later head \$H
finish t1

# The window is wide: under ASan and TCG a path takes up to ~8 s to come back (QMP
# device_add, the guest's hotplug, the kernel's nvme probe, the rebind to vfio-pci);
# a 10 s window expired once in CI.
start t2 30
watch_start /tmp/t2.watch
jshow before head \$H
unplug 0 1
jshow outage heads
sleep 3
replug 0; wait_paths 1
jshow one-back head \$H
sleep 2
replug 1; wait_paths 2
sleep 1
kill \$w
watch_show /tmp/t2.watch
finish t2

start t3 2
jshow before head \$H
unplug 0 1
for i in \$(seq 1 100); do [ "\$(has_head)" = no ] && break; sleep 0.1; done
jshow gone heads
replug 0 1; wait_paths 2
jshow again head \$H
finish t3

start t4 0
unplug 0; wait_paths 1
unplug 1
jshow last-gone heads
replug 0 1; wait_paths 2
finish t4

# An 8 s window, raised to 20 s, then waited past 8. A 3 s one expired once in CI under
# ASan before the raise: the QMP relay and the unplug took that long.
start t5 8
unplug 0 1
sleep 1
\$C set-delayed-removal \$H 20
sleep 9
jshow past-deadline heads
replug 0; wait_paths 1
sleep 1
replug 1; wait_paths 2
finish t5

# A controller that stops answering: its bus mastering turned off behind the agent's
# back, so it can reach neither its queues nor its completions. QEMU's NVMe then reports
# fatal status (found by the health check); with the health check off, the commands'
# deadlines find it. Either way: reset (bus mastering on again), failover, path back.
nomaster() { printf '\\002\\000' | dd of=/sys/bus/pci/devices/\$A/config bs=1 seek=4 count=2 conv=notrunc 2>/dev/null; }
for t in t7 t8; do
  hc=1000; [ \$t = t8 ] && hc=0
  begin \$t "(health check \$hc ms)"
  agent \$t \$P --vfio_devices=\$A,\$B --default_io_policy=round-robin --io_timeout_ms=2000 --health_check_ms=\$hc \
    --workload=verify --workload_secs=600 --workload_qd=16
  wait_paths 2
  sleep 2
  nomaster
  echo "umpath-lab: \$t bus mastering off: PCI command \$(od -An -tx2 -j4 -N2 /sys/bus/pci/devices/\$A/config)"
  for i in \$(seq 1 200); do
    grep -q "^event .* type=controller-state-changed controller=\"\$A\" from=\"resetting\" to=\"live\"" /tmp/\$t.err && break
    sleep 0.1
  done
  sleep 1
  jshow after-reset head \$H
  sleep 2
  jshow after-reset-later head \$H
  echo "umpath-lab: \$t PCI command after the reset \$(od -An -tx2 -j4 -N2 /sys/bus/pci/devices/\$A/config)"
  finish \$t
done

start t6 0
fds() { ls /proc/\$pid/fd | wc -l; }
rss() { awk '/VmRSS/ {print \$2}' /proc/\$pid/status; }
# The baseline is taken after three cycles: an ASan build's allocator is still warming up
# before (its resident size at cycle 1 was seen 8 MiB apart between runs), and a
# release build's is flat from the start. Then 10 more cycles.
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13; do
  unplug 0; wait_paths 1
  replug 0; wait_paths 2
  sleep 0.5
  [ \$i = 3 ] && { f1=\$(fds); r1=\$(rss); }
done
echo "umpath-lab: t6 after cycle 3: fds \$f1 rss_kb \$r1; after cycle 13: fds \$(fds) rss_kb \$(rss)"
jshow after-cycles head \$H
finish t6
AFTER
lab_initramfs "$perf" "$ctl"
lab_show="umpath|event"
lab_boot 1200 2
clean() { chk "$1" "result .* errors=0 mismatches=0" "zero errors and mismatches"; chk "$1" "$1 exited 0" "exit status"; }
# readded T: the controller-added events of $A after its first removal in section T.
readded="[e for e in ev('controller-added', controller='$A') if e['rev'] > ev('controller-removed', controller='$A')[0]['rev']]"

section t1
clean t1
jchk t1 "paths(head(J['removed'])) == ['0000:02:00.0']" "the removed path left the head"
jchk t1 "sorted(paths(head(J['readded']))) == ['$A', '0000:02:00.0']" "the re-added controller rejoined the head"
jchk t1 "$readded" "found by uevent and attached"
jchk t1 "grew(J['readded'], J['readded-later'], '$A')" "I/O reached the re-added path"

section t2
clean t2
jchk t2 "head(J['outage'], '$H') is not None" "the head stays during the window"
jchk t2 "[head(J['outage'], '$H')[k] for k in ('paths', 'live_paths', 'io_policy', 'delayed_removal_secs', 'removal_pending')] == [[], 0, 'IO_POLICY_ROUND_ROBIN', 30, True] and 'removal_deadline' in head(J['outage'], '$H')" \
  "removal pending with a deadline"
jchk t2 "len(paths(head(J['one-back']))) == 1 and head(J['one-back'])['uid'] == head(J['before'])['uid']" \
  "the returning path joins the same head"
jchk t2 "types([e for e in E if e['type'].startswith('removal-')])[:2] == ['removal-scheduled', 'removal-cancelled']" \
  "removal-scheduled then removal-cancelled"
# The same story through WatchEvents (umpathctl -o json watch), in order.
story="['path-removed', 'path-removed', 'removal-scheduled', 'path-added', 'removal-cancelled', 'path-added']"
jchk t2 "str($story)[1:-1] in str(types([e for e in W if e['type'] in $story]))" \
  "umpathctl watch saw removed, removed, scheduled, added, cancelled, added"

section t3
jchk t3 "head(J['gone'], '$H') is None" "the head went once the window passed"
chk t3 "result .* errors=[1-9].*first_error=.*head" "waiting I/O failed, naming the removal"
max_us="$(grep -oE "max_us=[0-9.]+" "$work/t3" | cut -d= -f2)"
python3 -c "import sys; m=float(sys.argv[1]); sys.exit(0 if 2.0e6 <= m <= 8.0e6 else 1)" "$max_us" \
  || fail "t3: waiting I/O failed after the 2 s window, not before (max latency ${max_us} us)"
jchk t3 "ev('head-removed', head='$H', reason='^delayed removal expired: no path returned within 2 s$')" "head-removed event"
jchk t3 "head(J['again'])['uid'] != head(J['before'])['uid']" "a later re-add makes a new head"

section t4
jchk t4 "head(J['last-gone'], '$H') is None" "delay 0 removes the head with its last path"
jchk t4 "ev('head-removed', head='$H', reason='delayed_removal_secs is 0')" "head-removed event with the reason"

section t5
clean t5
jchk t5 "head(J['past-deadline'], '$H')['removal_pending'] and head(J['past-deadline'], '$H')['delayed_removal_secs'] == 20" \
  "a raised window keeps the head"
jchk t5 "ev('removal-rescheduled', head='$H')" "removal-rescheduled event"
jchk t5 "ev('removal-cancelled', head='$H')" "removal-cancelled when a path returned"

for t in t7 t8; do
  section "$t"
  clean "$t"
  chk "$t" "$t bus mastering off: PCI command +0002" "bus mastering turned off"
  jchk "$t" "ev('controller-state-changed', controller='$A', frm='resetting', to='live', reason='^reset done$')" "the controller was reset"
  jchk "$t" "grew(J['after-reset'], J['after-reset-later'], '$A')" "the path carried I/O again after the reset"
  chk "$t" "failovers=[1-9]" "what was in flight failed over"
done
jchk t7 "ev('controller-state-changed', controller='$A', frm='live', to='resetting', reason='controller fatal status \(CSTS.CFS\)')" \
  "the health check saw fatal status"
jchk t8 "ev('controller-state-changed', controller='$A', frm='live', to='resetting', reason='I/O command timeout')" \
  "the deadlines saw a controller that stopped answering"

section t6
clean t6
line="$(grep "t6 after cycle 3" "$work/t6")" || fail "t6 samples"
set -- $(echo "$line" | grep -oE 'fds [0-9]+ rss_kb [0-9]+' | grep -oE '[0-9]+')
[ "$1" = "$3" ] || fail "t6: open files after 10 more cycles: $line"
[ "$4" -le $(($2 + 4096)) ] || fail "t6: memory grew more than 4 MiB over 10 cycles: $line"
jchk t6 "len($readded) >= 13" "every re-add attached"
jchk t6 "len(paths(head(J['after-cycles']))) == 2" "both paths after the cycles"
for t in t1 t2 t3 t4 t5 t6; do echo "lab: $t: $(grep -oE 'result .*' "$work/$t" | cut -c8-)"; done
echo "lab: $line"
echo "lab: hotplug test passed"
