#!/usr/bin/env bash
# CTest (label lab), issue 6: heads as block devices. One boot of the lab node, two
# controllers sharing one namespace through vfio; fio (io_uring, direct, crc32c verify)
# on /dev/ublkb0, the node's own block device:
#  u1. under numa, round-robin and queue-depth: zero errors; limits from the namespace;
#      discard and write zeroes reach the device (blkdiscard; zeroes read back);
#  u2. one path hot-removed under fio: zero errors; the path comes back;
#  u3. every path gone for 4 s of a 20 s window: the device stays, fio has zero errors;
#  u4. every path gone past a 3 s window: fio sees errors, the device goes, the events
#      say why; the paths coming back make a new head and a new device;
#  u5. bad input: an unknown head, exporting twice, unexporting a device in use;
#      unexport, unexport again, export again; ExportHead's dev_t and diskseq are what
#      stat(1) and sysfs say, /dev/disk/by-id/umpath-HEAD names the device, goes with
#      the unexport and names the new device (another diskseq) after the export again;
#  u6. kill -9 of umpathd under fio with user recovery, umpathd started again: fio ends
#      with zero errors;
#  u7. kill -9 without user recovery: fio fails (no hang), the restart cleans up;
#  u8. kill -9 and a restart whose head never comes: the device is removed after the
#      wait; a stop with --stop=remove removes every device it made;
#  urec. an agent killed (a test hook) between ADD_DEV and START_DEV: the device and its
#      record are left; the next agent removes the device and exports the head anew;
#  ucrash. delayed_removal_secs 120, every path gone, kill -9 of the agent, another at
#      40 s, the paths back at 60 s: the device survives, fio has zero errors;
#  u9. hand-over (a stop's default) under fio, three times: each stop leaves the device
#      and its record, the next agent takes it over; fio has zero errors; a umpathctl
#      watch across the restarts is told each time and starts again from a snapshot;
#      the by-id link names the same device (same diskseq) after each restart;
# uadopt. descriptor hand-over under fio, three times: a successor started with
#      --take_over beside the running agent gets its vfio controllers running (container,
#      device, queue memory and positions over the hand-over socket), not reset; the old
#      agent exits 0, the device stays, fio has zero errors; a successor whose vfio queues
#      are another depth gets the simple path (said why) and fio still has zero errors;
#      one old agent started with --linger_after_handover waits for SIGTERM after it;
# u10. a file system mounted on the device: `umpathctl stop --remove` is refused naming
#      the mount (the agent runs on); SIGTERM under --stop=remove hands the mounted
#      device over instead of removing it (an event says why), the next agent takes it
#      over and the file reads back; `umpathctl stop --remove --force` removes it and
#      umpathd exits 3.
# ucsi. the example CSI node plugin's sidecar script (deploy/kubernetes/examples/
#      csi-node-plugin.yaml, taken out of its ConfigMap) against this umpathd without
#      --export_all: a stage request made while the head is away (both paths detached)
#      waits, unanswered, until the paths are attached again; then it is answered with
#      the head's by-id link, which names the device the agent exported; an unstage
#      request unexports the head and forgets its settings; a second one is done too.
# Usage: ublk_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init ublk "$1" "$2"
H=nguid-ab000000000000000000000000000001
fio="$(lab_fio)"
blkdiscard="$(command -v blkdiscard || echo /usr/sbin/blkdiscard)"

# The sidecar as the example ships it: its ConfigMap's sidecar.sh, unindented.
sed -n '/^  sidecar.sh: |$/,/^---$/p' "$here/../kubernetes/examples/csi-node-plugin.yaml" |
  sed -e '1d' -e '$d' -e 's/^    //' > "$work/sidecar.sh"
grep -q 'settings set' "$work/sidecar.sh" || { echo "FAIL: no sidecar.sh in csi-node-plugin.yaml"; exit 1; }

lab_after
{ echo "cat > /tmp/sidecar.sh <<'SIDECAR_EOF'"; cat "$work/sidecar.sh"; echo "SIDECAR_EOF"; } >> "$work/after"
cat >> "$work/after" <<AFTER
D=/dev/ublkb0
L=/dev/disk/by-id/umpath-\$H
# seen TAG: what the node says of \$L and the device it names, as JSON (dev_t by stat,
# diskseq by sysfs); {"link": ""} when there is no link.
seen() {
  local d=
  [ -L \$L ] && d=\$(readlink -f \$L)
  if [ -b "\$d" ]; then
    echo "umpath-json \$1 {\"link\": \"\$d\", \"major\": \$((0x\$(stat -c %t \$d))), \"minor\": \$((0x\$(stat -c %T \$d))), \"diskseq\": \"\$(cat /sys/block/\${d#/dev/}/diskseq)\"}"
  else
    echo "umpath-json \$1 {\"link\": \"\$d\"}"
  fi
}
LAB_STATE=ublk
start() {  # start NAME [FLAGS...]
  n=\$1; shift
  agent \$n \$U --bind_vfio --vfio_devices=\$A,\$B --workers=2 --export_all "\$@"
  echo "umpath-lab: \$n umpathd pid \$pid"
}
ublk_state() { echo "devices \$(ls /dev | grep -c '^ublkb'), records \$(ls /run/umpath/ublk | wc -l)"; }

begin u1
start u1 --default_io_policy=numa
wait_paths 2; wait_dev
echo "umpath-lab: u1 limits lbs \$(cat /sys/block/ublkb0/queue/logical_block_size) max_hw_kb \$(cat /sys/block/ublkb0/queue/max_hw_sectors_kb) cache \$(cat /sys/block/ublkb0/queue/write_cache | tr ' ' _) discard \$(cat /sys/block/ublkb0/queue/discard_max_hw_bytes) zeroes \$(cat /sys/block/ublkb0/queue/write_zeroes_max_bytes) sectors \$(cat /sys/block/ublkb0/size)"
policies u1 24M
# Write zeroes and discard: a pattern, zeroed through BLKZEROOUT, read back.
dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null
dd if=/tmp/pat of=\$D bs=64k count=16 oflag=direct 2>/dev/null
$blkdiscard -z -o 0 -l 1048576 \$D; z=\$?
nz=\$(dd if=\$D bs=64k count=16 iflag=direct 2>/dev/null | od -An -v -tx1 | grep -cv '^ 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\$')
$blkdiscard -o 1048576 -l 1048576 \$D; d=\$?
echo "umpath-lab: u1 write-zeroes exit \$z nonzero-lines \$nz discard exit \$d"
end u1

begin u2
verify_bg u2 64M
unplug 0; wait_paths 1
jshow during head \$H
wait \$f
replug 0; wait_paths 2
jshow after head \$H
end u2

begin u3
\$C set-delayed-removal \$H 20 >/dev/null
verify_bg u3 48M
unplug 0 1
sleep 1
echo "umpath-lab: u3 during the outage: device \$(dev)"
jshow outage heads
sleep 3
replug 0 1; wait_paths 2
wait \$f
echo "umpath-lab: u3 after: device \$(dev)"
jshow after head \$H
end u3

begin u4
watch_start /tmp/u4.watch
\$C set-delayed-removal \$H 3 >/dev/null
\$F --name=u4 --filename=\$D --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=8 \
  --time_based --runtime=60 > /tmp/u4.fio 2>&1 &
f=\$!
sleep 2
t0=\$(now)
unplug 0 1
wait \$f; fe=\$?
t1=\$(now)
for i in \$(seq 1 100); do [ -b \$D ] || break; sleep 0.1; done
echo "umpath-lab: u4 fio exit \$fe after \$t0 -> \$t1; device \$(dev); \$(grep -oE 'err= *[0-9]+' /tmp/u4.fio | head -1)"
replug 0 1; wait_paths 2; wait_dev
echo "umpath-lab: u4 after re-add: device \$(dev)"
verify u4-new 8M
grep -vE '^[ {}]' /tmp/u9.watch | sed 's/^/umpath-lab: u9 watch said: /'
echo "umpath-lab: u9 watch running \$(kill -0 \$w 2>/dev/null && echo yes || echo no)"
kill \$w
watch_show /tmp/u4.watch
end u4

begin u5
\$C export nothere; echo "umpath-lab: u5 unknown exit \$?"
jshow export export \$H; jshow export-twice export \$H
seen seen-exported
echo "umpath-lab: u5 devices \$(ls /dev | grep -c '^ublkb')"
\$F --name=u5 --filename=\$D --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=4 \
  --time_based --runtime=8 > /tmp/u5.fio 2>&1 &
f=\$!
sleep 2
\$C unexport \$H; echo "umpath-lab: u5 in-use exit \$?"
wait \$f
echo "umpath-lab: u5 fio \$(grep -oE 'err= *[0-9]+' /tmp/u5.fio | head -1)"
\$C unexport \$H; echo "umpath-lab: u5 unexport exit \$? device \$(dev)"
seen seen-unexported
\$C unexport \$H; echo "umpath-lab: u5 unexport again exit \$?"
sleep 2
jshow unexported head \$H
jshow export-again export \$H; echo "umpath-lab: u5 export again exit \$?"
seen seen-again
end u5

begin u6
\$C set-delayed-removal \$H 0 >/dev/null
verify_bg u6 64M
kill -9 \$pid; wait \$pid 2>/dev/null
echo "umpath-lab: u6 killed; device \$(dev); state \$(ls /run/umpath/ublk)"
sleep 2
start u6-again --stop=remove
wait \$f
echo "umpath-lab: u6 after restart: device \$(dev)"
stop u6-again
end u6

begin u7
echo "umpath-lab: u7 clean stop: \$(ublk_state)"
start u7 --ublk_user_recovery=false
wait_paths 2; wait_dev
verify_bg u7 64M
kill -9 \$pid; wait \$pid 2>/dev/null
t0=\$(now)
wait \$f
echo "umpath-lab: u7 fio ended \$t0 -> \$(now)"
echo "umpath-lab: u7 left behind: \$(ublk_state)"
start u7-again
wait_paths 2; wait_dev
verify u7-new 8M
events /tmp/u7-again.err
end u7

begin u8
kill -9 \$pid; wait \$pid 2>/dev/null
echo "umpath-lab: u8 left behind: \$(ublk_state)"
agent u8 \$U --workers=2 --ublk_recover_wait_secs=2
# Removed: the device, then its record.
for i in \$(seq 1 300); do [ -b \$D ] || [ -n "\$(ls /run/umpath/ublk)" ] || break; sleep 0.1; done
echo "umpath-lab: u8 without its head: device \$(dev), records \$(ls /run/umpath/ublk | wc -l)"
stop u8
start u8-last --stop=remove
wait_paths 2; wait_dev
kill \$pid; wait \$pid
echo "umpath-lab: u8 clean stop: exit \$?, \$(ublk_state)"
end u8

begin urec
start urec --ublk_test_crash_after_add
wait \$pid; rc=\$?
echo "umpath-lab: urec crashed after ADD_DEV: exit \$rc, \$(ublk_state), char devices \$(ls /dev | grep -c '^ublkc')"
start urec-again --stop=remove
wait_paths 2; wait_dev
verify urec 16M
kill \$pid; wait \$pid
echo "umpath-lab: urec clean stop: exit \$?, \$(ublk_state)"
events /tmp/urec-again.err
end urec

begin ucrash
start ucrash
wait_paths 2; wait_dev
\$C set-delayed-removal \$H 120 >/dev/null
verify_bg ucrash 48M
unplug 0 1; t0=\$(now)
wait_paths 0
kill -9 \$pid; wait \$pid 2>/dev/null
echo "umpath-lab: ucrash killed during the outage: device \$(dev), \$(ublk_state)"
# The scenario's clock: the agent again at 40 s, the paths back at 60 s.
until awk -v a=\$t0 -v b=\$(now) 'BEGIN { exit !(b - a >= 40) }'; do sleep 0.5; done
start ucrash-again --stop=remove
until awk -v a=\$t0 -v b=\$(now) 'BEGIN { exit !(b - a >= 60) }'; do sleep 0.5; done
echo "umpath-lab: ucrash at 60 s: device \$(dev), fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
replug 0 1; wait_paths 2
wait \$f
echo "umpath-lab: ucrash after: device \$(dev)"
\$C set-delayed-removal \$H 0 >/dev/null
kill \$pid; wait \$pid
echo "umpath-lab: ucrash clean stop: exit \$?, \$(ublk_state)"
events /tmp/ucrash-again.err
end ucrash

begin u9
start u9-0
wait_paths 2; wait_dev
seen seen-0
watch_start /tmp/u9.watch
verify_bg u9 160M
for i in 1 2 3; do
  t0=\$(now)
  kill \$pid; wait \$pid; rc=\$?
  state=\$(ublk_state)
  start u9-\$i
  for j in \$(seq 1 600); do grep -q 'reason="taken over' /tmp/u9-\$i.err && break; sleep 0.1; done
  echo "umpath-lab: u9 hand-over \$i: old agent exit \$rc, left \$state, taken over \$t0 -> \$(now), device \$(dev), fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
  events /tmp/u9-\$i.err
  seen seen-\$i
done
wait \$f
grep -E '^ *(clat|lat) \(' /tmp/u9.fio | sed 's/^ */umpath-lab: u9 fio /'
ns=\$(grep -c '"snapshot"' /tmp/u9.watch); nt=\$(grep -c 'starting again from a snapshot' /tmp/u9.watch)
echo "umpath-lab: u9 watch: snapshots \$ns, told of a restart \$nt, each new snapshot told \$([ \$nt -ge 1 ] && [ \$ns = \$((nt + 1)) ] && echo yes || echo no)"
kill \$w
kill \$pid; wait \$pid
echo "umpath-lab: u9 last stop: exit \$?, \$(ublk_state)"
end u9

begin uadopt
taken_over() { for j in \$(seq 1 600); do grep -q 'reason="taken over' /tmp/\$1.err && return; sleep 0.1; done; }
start uadopt-0
taken_over uadopt-0
events /tmp/uadopt-0.err
wait_paths 2
verify_bg uadopt 160M
prev=uadopt-0
for i in 1 2 3 simple; do
  extra=; [ \$i = simple ] && extra=--queue_depth=128; [ \$i = 1 ] && extra=--linger_after_handover
  old=\$pid; t0=\$(now)
  start uadopt-\$i --take_over \$extra
  if [ \$i = 2 ]; then
    # uadopt-1 lingers once it has handed over, until a signal.
    taken_over uadopt-\$i
    lingering=\$(kill -0 \$old 2>/dev/null && echo yes || echo no)
    kill \$old; wait \$old; rc=\$?
    echo "umpath-lab: uadopt linger: after the take-over the old agent was running \$lingering, exit on SIGTERM \$rc, said: \$(grep -c 'handed over to a successor; waiting for SIGTERM' /tmp/uadopt-1.err)"
  else
    wait \$old; rc=\$?
    taken_over uadopt-\$i
  fi
  echo "umpath-lab: uadopt \$i: old agent exit \$rc, taken over \$t0 -> \$(now), device \$(dev), fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
  grep -E 'take-over:|vfio: ' /tmp/uadopt-\$i.err | sed "s/^/umpath-lab: uadopt \$i said: /"
  grep -E 'hand-over:' /tmp/\$prev.err | sed "s/^/umpath-lab: uadopt \$i old said: /"
  events /tmp/uadopt-\$i.err
  prev=uadopt-\$i
done
wait \$f
grep -E '^ *(clat|lat) \(' /tmp/uadopt.fio | sed 's/^ */umpath-lab: uadopt fio /'
wait_paths 2
verify uadopt-after 8M
kill \$pid; wait \$pid
echo "umpath-lab: uadopt last stop: exit \$?, \$(ublk_state)"
end uadopt

begin u10
taken_over() { for j in \$(seq 1 600); do grep -q 'reason="taken over' /tmp/\$1.err && return; sleep 0.1; done; }
start u10 --stop=remove
taken_over u10
mke2fs -F \$D > /tmp/u10.mkfs 2>&1; echo "umpath-lab: u10 mkfs exit \$?"
mkdir -p /mnt/u10
mount -t ext4 \$D /mnt/u10; echo "umpath-lab: u10 mount exit \$?"
echo kept > /mnt/u10/f; sync
\$C stop --remove; echo "umpath-lab: u10 refused exit \$?"
sleep 1
echo "umpath-lab: u10 after the refusal: agent running \$(kill -0 \$pid 2>/dev/null && echo yes || echo no), device \$(dev)"
jshow refused head \$H
kill \$pid; wait \$pid; rc=\$?
echo "umpath-lab: u10 SIGTERM under --stop=remove: exit \$rc, left \$(ublk_state)"
events /tmp/u10.err
start u10-again
taken_over u10-again
# What the file system reads now comes from the device, through the new agent.
echo 3 > /proc/sys/vm/drop_caches
echo "umpath-lab: u10 the file after the hand-over: \$(cat /mnt/u10/f)"
\$C stop --remove --force; echo "umpath-lab: u10 forced exit \$?"
wait \$pid; rc=\$?
for i in \$(seq 1 100); do [ -b \$D ] || break; sleep 0.1; done
echo "umpath-lab: u10 forced stop: agent exit \$rc, \$(ublk_state)"
umount -l /mnt/u10
events /tmp/u10-again.err
end u10

begin ucsi
# answered VOLUME KIND...: until the sidecar answered the request (60 s at most).
answered() {
  local v=\$1 i k; shift
  for i in \$(seq 1 600); do for k in "\$@"; do [ -e /tmp/csi/\$v.\$k ] && return 0; done; sleep 0.1; done
  echo "umpath-lab: ucsi no answer to \$v"
}
agent ucsi \$U --bind_vfio --vfio_devices=\$A,\$B --workers=2
wait_paths 2
echo "umpath-lab: ucsi before: exported '\$(hfield export_device)'"
\$C detach \$A > /dev/null; \$C detach \$B > /dev/null
for i in \$(seq 1 100); do [ \$(has_head) = no ] && break; sleep 0.1; done
echo "umpath-lab: ucsi head while its paths are detached: \$(has_head)"
mkdir -p /tmp/csi
UMPATH_SOCKET=\$SOCK CSI_REQUESTS=/tmp/csi UMPATHCTL=\$C sh /tmp/sidecar.sh > /tmp/ucsi.sidecar 2>&1 &
sc=\$!
t0=\$(now)
echo \$H > /tmp/csi/vol1.head
sleep 3
echo "umpath-lab: ucsi 3 s into the stage, the head away: requests \$(ls /tmp/csi | grep '^vol1' | tr '\n' ' ')"
jshow away settings
\$C attach pcie \$A > /dev/null; \$C attach pcie \$B > /dev/null
t1=\$(now)
answered vol1 device error
echo "umpath-lab: ucsi staged \$t0 -> \$t1 (paths attached) -> \$(now): answer \$(ls /tmp/csi | grep '^vol1' | tr '\n' ' ')"
cat /tmp/csi/vol1.error 2>/dev/null | sed 's/^/umpath-lab: ucsi error: /'
echo "umpath-json ucsi-answer {\"device\": \"\$(cat /tmp/csi/vol1.device 2>/dev/null)\", \"resolved\": \"\$(readlink -f \$(cat /tmp/csi/vol1.device 2>/dev/null) 2>/dev/null)\"}"
jshow staged head \$H
jshow kept settings
echo \$H > /tmp/csi/vol1.unstage
answered vol1 unstaged error
echo "umpath-lab: ucsi unstaged: answer \$(ls /tmp/csi | grep '^vol1' | tr '\n' ' ')device \$(dev)"
cat /tmp/csi/vol1.error 2>/dev/null | sed 's/^/umpath-lab: ucsi error: /'
seen seen-unstaged
jshow unstaged head \$H
jshow forgotten settings
# Unstaging what is unstaged already is done as well.
echo \$H > /tmp/csi/vol2.unstage
answered vol2 unstaged error
echo "umpath-lab: ucsi unstaged again: answer \$(ls /tmp/csi | grep '^vol2' | tr '\n' ' ')"
kill \$sc
stop ucsi
end ucsi
AFTER
lab_initramfs "$umpathd" "$ctl" "$fio" "$blkdiscard"
lab_show="umpath|log:|fio|ublk"
lab_boot 1500 2
clean_fio() { chk "$1" "$2 fio exit 0 err= *0" "$2: fio verified with zero errors"; }

section u1
chk u1 "lbs 512 max_hw_kb 128 cache write_back discard [1-9][0-9]* zeroes [1-9][0-9]* sectors 524288" \
  "the device's limits come from the namespace"
for p in numa round-robin queue-depth; do clean_fio u1 "u1-$p"; done
jchk u1 "grew(J['numa-before'], J['numa-after'], '$A') + grew(J['numa-before'], J['numa-after'], '$B') == 1" "numa uses one path"
for p in round-robin queue-depth; do
  jchk u1 "grew(J['$p-before'], J['$p-after'], '$A') and grew(J['$p-before'], J['$p-after'], '$B')" "$p uses both paths"
done
chk u1 "write-zeroes exit 0 nonzero-lines 0 discard exit 0" "write zeroes zeroed, discard succeeded"

section u2
clean_fio u2 u2
jchk u2 "paths(head(J['during'])) == ['$B']" "the path was removed during fio"
jchk u2 "sorted(paths(head(J['after']))) == ['$A', '$B']" "the path came back"

section u3
clean_fio u3 u3
chk u3 "u3 during the outage: device present" "the device stays through the window"
jchk u3 "[head(J['outage'], '$H').get(k) for k in ('live_paths', 'delayed_removal_secs', 'removal_pending', 'export_device')] == [0, 20, True, '/dev/ublkb0'] and paths(head(J['outage'], '$H')) == []" \
  "removal pending, still exported"
chk u3 "u3 after: device present" "the same device after the outage"
jchk u3 "head(J['after'])['export_device'] == '/dev/ublkb0'" "still exported as /dev/ublkb0"

section u4
chk u4 "u4 fio exit [1-9].*device gone; err= *[1-9]" "fio saw errors and the device went"
jchk u4 "wev('head-removed', head='$H', reason='delayed removal expired: no path returned within 3 s')" "head-removed says the window expired"
jchk u4 "wev('head-unexported', head='$H', reason='/dev/ublkb0 removed: the head was removed')" "head-unexported says why"
chk u4 "u4 after re-add: device present" "a new head gets a new device"
clean_fio u4 u4-new
t="$(grep -oE "u4 fio exit [0-9]+ after [0-9.]+ -> [0-9.]+" "$work/u4" | grep -oE '[0-9.]+$')"
t0="$(grep -oE "u4 fio exit [0-9]+ after [0-9.]+" "$work/u4" | grep -oE '[0-9.]+$')"
python3 -c "import sys; d=float(sys.argv[2])-float(sys.argv[1]); sys.exit(0 if 2.5 <= d <= 15 else 1)" "$t0" "$t" \
  || fail "u4: fio failed once the 3 s window passed, not before ($t0 -> $t)"

section u5
chk u5 "NOT_FOUND: head nothere not found" "an unknown head"
chk u5 "u5 unknown exit 5" "NOT_FOUND's exit status"
jchk u5 "J['export']['device'] == J['export-twice']['device'] == '/dev/ublkb0'" "exporting twice returns the same device"
chk u5 "u5 devices 1" "exporting twice makes one device"
chk u5 "FAILED_PRECONDITION: /dev/ublkb0 of head .* is in use \(pid [0-9]+ \(fio\)\)" "in use names its user"
chk u5 "u5 in-use exit 9" "FAILED_PRECONDITION's exit status"
chk u5 "u5 fio err= *0" "the refused unexport disturbed nothing"
chk u5 "u5 unexport exit 0 device gone" "unexport removes the device"
chk u5 "u5 unexport again exit 0" "unexport is idempotent"
jchk u5 "head(J['unexported']).get('export_device', '') == ''" "an unexported head stays unexported (export-all exports a head once)"
chk u5 "u5 export again exit 0" "export again"
jchk u5 "J['export-again']['device'].startswith('/dev/ublkb')" "export again answers the device"
jchk u5 "[J['export'][k] for k in ('major', 'minor')] == [J['seen-exported'][k] for k in ('major', 'minor')] and J['export']['major'] > 0" \
  "ExportHead's dev_t is stat's"
jchk u5 "n(J['export']['diskseq']) == n(J['seen-exported']['diskseq']) > 0" "ExportHead's diskseq is sysfs's"
jchk u5 "J['export']['by_id_link'] == '/dev/disk/by-id/umpath-$H' and J['seen-exported']['link'] == J['export']['device']" \
  "ExportHead answers the by-id link, which names the device"
jchk u5 "J['seen-unexported']['link'] == '' and head(J['unexported']).get('export_by_id_link', '') == ''" \
  "the link goes with the unexport"
jchk u5 "J['seen-again']['link'] == J['export-again']['device'] and n(J['seen-again']['diskseq']) == n(J['export-again']['diskseq']) != n(J['export']['diskseq'])" \
  "after the export again the link names the new device (another diskseq)"

section u6
clean_fio u6 u6
chk u6 "u6 killed; device present; state 0" "the device outlives the agent"
jchk u6 "ev('head-exported', head='$H', to='/dev/ublkb0', reason='^taken over from the agent.s last run$')" \
  "the restarted agent took the device over"
chk u6 "u6 after restart: device present" "the device stays"

section u7
chk u7 "u7 clean stop: devices 0, records 0" "a clean shutdown removes every device"
chk u7 "u7 fio exit [1-9]" "without recovery, fio fails"
chk u7 "u7 left behind: devices [01], records 1" "the killed agent left its device's record"
jchk u7 "ev('head-exported', head='$H', to='/dev/ublkb0', reason='^exported$') and not ev('head-exported', reason='taken over')" \
  "the restart exports the head anew, not taking the old device over"
jchk u7 "ev('head-unexported', head='$H', reason='^/dev/ublkb0 removed: it was made without user recovery$')" \
  "the restart cleans up the device left behind, and says why"
clean_fio u7 u7-new

section u8
chk u8 "u8 left behind: devices 1, records 1" "the killed agent left its device"
chk u8 "u8 without its head: device gone, records 0" "a leftover whose head never comes is removed"
jchk u8 "ev('head-unexported', head='$H', reason='^/dev/ublkb0 removed: its head did not come back within 2 s$')" \
  "and says why"
chk u8 "u8 clean stop: exit 0, devices 0, records 0" "a clean shutdown removes every device"
section urec
chk urec "urec crashed after ADD_DEV: exit 137, devices 0, records 1, char devices 1" \
  "an agent killed between ADD_DEV and START_DEV leaves a device and its record, no disk"
jchk urec "ev('head-unexported', head='$H', reason='^/dev/ublkb0 removed: it was never started$')" \
  "the next agent removes the device that was never started, and says so"
jchk urec "ev('head-exported', head='$H', to='/dev/ublkb[0-9]+', reason='^exported$')" "and exports the head anew"
clean_fio urec urec
chk urec "urec clean stop: exit 0, devices 0, records 0" "nothing left behind"

section ucrash
clean_fio ucrash ucrash
chk ucrash "ucrash killed during the outage: device present, devices 1, records 1" "the device outlives the agent"
chk ucrash "ucrash at 60 s: device present, fio running yes" \
  "60 s into the outage, 20 s after the restart without paths, the device and its I/O wait"
jchk ucrash "ev('head-exported', head='$H', to='/dev/ublkb0', reason='^taken over from the agent.s last run$')" \
  "the device is taken over once the paths are back (the head's 120 s window, not the 30 s default)"
chk ucrash "ucrash after: device present" "the same device after the outage"
chk ucrash "ucrash clean stop: exit 0, devices 0, records 0" "nothing left behind"

section u9
clean_fio u9 u9
for i in 1 2 3; do
  chk u9 "u9 hand-over $i: old agent exit 0, left devices 1, records 1, .*device present" \
    "stop $i (SIGTERM) leaves the device and its record; the next agent takes it over"
done
chk u9 "u9 hand-over 2: .*fio running yes" "the hand-overs happen under fio"
jchk u9 "len(ev('head-exported', head='$H', to='/dev/ublkb0', reason='^taken over from the agent.s last run$')) == 3" \
  "each new agent took the same device over"
chk u9 "u9 last stop: exit 0, devices 1, records 1" "a stop hands over by default"
chk u9 "u9 watch: .*each new snapshot told yes" \
  "a watch across each restart is told and starts again from a snapshot (no silent skip)"
jchk u9 "J['seen-0']['link'] == '/dev/ublkb0' and all(J['seen-%d' % i] == J['seen-0'] for i in (1, 2, 3))" \
  "the by-id link names the same device (dev_t, diskseq) after each hand-over restart"
section uadopt
clean_fio uadopt uadopt
for i in 1 2 3; do
  chk uadopt "uadopt $i: old agent exit 0, taken over .*device present, fio running yes" \
    "take-over $i under fio: the old agent ends cleanly, the device stays"
  chk uadopt "uadopt $i old said: .*hand-over: 2 controller[(]s[)] handed over running" "the old agent hands both controllers over running"
  chk uadopt "uadopt $i said: .*take-over: the running agent hands over: 2 controller[(]s[)] running" "the successor is told so"
  chk uadopt "uadopt $i said: .*vfio: 0 controller[(]s[)] attached, 2 adopted running" "it adopts both, resetting none"
done
chk uadopt "uadopt linger: after the take-over the old agent was running yes, exit on SIGTERM 0, said: 1" \
  "with --linger_after_handover the old agent waits for SIGTERM after handing over, then exits 0"
chk uadopt "uadopt simple: old agent exit 0, taken over .*device present" "a successor that cannot adopt still takes over"
chk uadopt "uadopt simple said: .*take-over: the running agent takes the simple path: its vfio queues are 128 deep and this agent.s 256" \
  "the simple path, and why"
chk uadopt "uadopt simple said: umpathd: vfio: 2 controller[(]s[)] attached\$" "its controllers are brought up as usual"
jchk uadopt "len(ev('head-exported', head='$H', to='/dev/ublkb0', reason='^taken over from the agent.s last run$')) == 5" \
  "each new agent took the same device over (u9's last stop left it)"
clean_fio uadopt uadopt-after
chk uadopt "uadopt last stop: exit 0, devices 1, records 1" "the last stop hands over too"
section u10
chk u10 "u10 mkfs exit 0" "mke2fs on the device"
chk u10 "u10 mount exit 0" "the file system is mounted"
chk u10 "FAILED_PRECONDITION: block devices in use: /dev/ublkb0 of head $H [(]mounted at /mnt/u10[)]" \
  "a removing stop is refused, naming the device in use and by what"
chk u10 "u10 refused exit 9" "FAILED_PRECONDITION's exit status"
chk u10 "u10 after the refusal: agent running yes, device present" "the refused stop changed nothing"
jchk u10 "head(J['refused'])['export_device'] == '/dev/ublkb0'" "the device is still exported"
chk u10 "u10 SIGTERM under --stop=remove: exit 0, left devices 1, records 1" \
  "a signal's removing stop leaves the mounted device and its record"
jchk u10 "ev('head-unexported', head='$H', reason='^/dev/ublkb0 handed over to the next agent instead of removed: in use [(]mounted at /mnt/u10[)]$')" \
  "an event says the device in use was handed over, not removed"
jchk u10 "len(ev('head-exported', head='$H', to='/dev/ublkb0', reason='^taken over')) == 2" \
  "each agent took the device over"
chk u10 "u10 the file after the hand-over: kept" "the file system reads back through the next agent"
chk u10 "u10 forced exit 0" "forced, the removing stop is accepted"
chk u10 "u10 forced stop: agent exit 3, devices 0, records 0" \
  "it removes the mounted device, and umpathd exits 3 (not to be started again)"
section ucsi
chk ucsi "ucsi before: exported ''" "without --export_all the head is not exported before the stage"
chk ucsi "ucsi head while its paths are detached: no" "the head is away when the stage request comes"
chk ucsi "ucsi 3 s into the stage, the head away: requests vol1.head \$" "the stage waits for the head, unanswered (no NOT_FOUND)"
jchk ucsi "[(s['name'], s['head_present'], s.get('export')) for s in J['away']['settings']] == [('heads/$H/settings', False, True)]" \
  "the settings are kept before the head exists"
jchk ucsi "J['ucsi-answer']['device'] == '/dev/disk/by-id/umpath-$H' == head(J['staged'])['export_by_id_link']" \
  "the sidecar answers the head's by-id link"
jchk ucsi "J['ucsi-answer']['resolved'] == head(J['staged'])['export_device'] != ''" \
  "the link resolves to the device the agent exported"
jchk ucsi "[(s['name'], s.get('delayed_removal_secs'), s.get('export')) for s in J['kept'].get('settings', [])] == [('heads/$H/settings', 120, True)]" \
  "the stage kept the head's settings (delayed removal, export)"
chk ucsi "ucsi unstaged: answer (vol1.device )?vol1.unstaged device gone" "unstage answers done and the device is gone"
jchk ucsi "J['seen-unstaged']['link'] == '' and head(J['unstaged']).get('export_device', '') == ''" \
  "unstaged: not exported, no link"
jchk ucsi "J['forgotten'].get('settings', []) == []" "unstaged: the settings are forgotten"
chk ucsi "ucsi unstaged again: answer vol2.unstaged" "unstaging what is unstaged is done"
for m in seen-exported seen-again; do
  echo "lab: u5 $m $(python3 "$here/check.py" -p "$work/u5" "J['$m']")"
done
echo "lab: u9 $(python3 "$here/check.py" -p "$work/u9" "J['seen-3']")"
grep -hE "ucsi (staged|unstaged)" "$work/ucsi" | sed 's/^umpath-lab: /lab: /'
grep -hE "u9 (hand-over|fio)" "$work/u9" | sed 's/^umpath-lab: /lab: /'
grep -hE "uadopt ([0-9]+|simple): |uadopt [0-9]+ said: umpathd: take-over: the previous|uadopt fio (clat|lat) [(]" "$work/uadopt" |
  sed 's/^umpath-lab: /lab: /'
for n in u1-numa u1-round-robin u1-queue-depth u2 u3 u6; do
  echo "lab: $n: $(grep -h "$n fio exit" "$work"/u* | head -1 | cut -d' ' -f3-)"
done
echo "lab: $(grep -h "u4 fio exit" "$work/u4" | cut -d' ' -f2-)"
echo "lab: ublk test passed"
