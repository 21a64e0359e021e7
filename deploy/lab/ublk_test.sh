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
#      unexport, unexport again, export again;
#  u6. kill -9 of umpathd under fio with user recovery, umpathd started again: fio ends
#      with zero errors;
#  u7. kill -9 without user recovery: fio fails (no hang), the restart cleans up;
#  u8. kill -9 and a restart whose head never comes: the device is removed after the
#      wait; a clean shutdown removes every device it made.
# Usage: ublk_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init ublk "$1" "$2"
fio="$(lab_fio)"
blkdiscard="$(command -v blkdiscard || echo /usr/sbin/blkdiscard)"

cat > "$work/after" <<AFTER
#!/bin/sh
U=$umpathd
C=$ctl
F=$fio
H=nguid-ab000000000000000000000000000001
A=0000:01:00.0
B=0000:02:00.0
D=/dev/ublkb0
ADD0='{"driver": "nvme", "id": "c0", "serial": "S0", "subsys": "s0", "bus": "rp0"}'
ADD1='{"driver": "nvme", "id": "c1", "serial": "S0", "subsys": "s0", "bus": "rp1"}'
. /lab/lib.sh
npaths() { \$C head \$H 2>/dev/null | grep -c '^  0000:0'; }
wait_paths() { for i in \$(seq 1 300); do [ "\$(npaths)" = "\$1" ] && return 0; sleep 0.1; done; echo "umpath-lab: \$1 paths never seen"; }
wait_dev() { for i in \$(seq 1 300); do [ -b \$D ] && return 0; sleep 0.1; done; echo "umpath-lab: \$D never appeared"; }
col() { \$C head \$H | awk -v p="\$1" -v c="\$2" '\$1 == p {print \$c}'; }
start() {  # start NAME [FLAGS...]
  n=\$1; shift
  \$U --socket=/run/umpath/umpathd.sock --state_file=/tmp/heads --node=lab --bind_vfio \
    --vfio_devices=\$A,\$B --workers=2 --export_all "\$@" >> /tmp/umpathd.out 2>> /tmp/umpathd.err &
  pid=\$!
  echo "umpath-lab: \$n umpathd pid \$pid"
}
# verify NAME SIZE [EXTRA...]: fio writes SIZE with crc32c checksums and reads it back.
verify() {
  n=\$1; s=\$2; shift 2
  \$F --name=\$n --filename=\$D --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --size=\$s --verify=crc32c --do_verify=1 --verify_fatal=1 "\$@" > /tmp/\$n.fio 2>&1
  echo "umpath-lab: \$n fio exit \$? \$(grep -oE 'err= *[0-9]+' /tmp/\$n.fio | head -1) \$(grep -oE 'error=[^,]*' /tmp/\$n.fio | head -1)"
}
both_back() {
  qmp device_add "\$ADD0"; back \$A
  qmp device_add "\$ADD1"; back \$B
}

echo "umpath-lab: == u1"
start u1 --default_io_policy=numa
wait_paths 2; wait_dev
echo "umpath-lab: u1 limits lbs \$(cat /sys/block/ublkb0/queue/logical_block_size) max_hw_kb \$(cat /sys/block/ublkb0/queue/max_hw_sectors_kb) cache \$(cat /sys/block/ublkb0/queue/write_cache | tr ' ' _) discard \$(cat /sys/block/ublkb0/queue/discard_max_hw_bytes) zeroes \$(cat /sys/block/ublkb0/queue/write_zeroes_max_bytes) sectors \$(cat /sys/block/ublkb0/size)"
\$C heads
for p in numa round-robin queue-depth; do
  \$C set-policy \$H \$p >/dev/null
  a0=\$(col \$A 6); b0=\$(col \$B 6)
  verify u1-\$p 24M
  echo "umpath-lab: u1 \$p paths completed \$A \$a0 -> \$(col \$A 6), \$B \$b0 -> \$(col \$B 6)"
done
# Write zeroes and discard: a pattern, zeroed through BLKZEROOUT, read back.
dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null
dd if=/tmp/pat of=\$D bs=64k count=16 oflag=direct 2>/dev/null
$blkdiscard -z -o 0 -l 1048576 \$D; z=\$?
nz=\$(dd if=\$D bs=64k count=16 iflag=direct 2>/dev/null | od -An -v -tx1 | grep -cv '^ 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\$')
$blkdiscard -o 1048576 -l 1048576 \$D; d=\$?
echo "umpath-lab: u1 write-zeroes exit \$z nonzero-lines \$nz discard exit \$d"
echo "umpath-lab: end u1"

echo "umpath-lab: == u2"
verify u2 64M &
f=\$!
sleep 3
qmp device_del '{"id": "c0"}'; gone \$A; wait_paths 1
echo "umpath-lab: u2 paths during fio \$(npaths)"
wait \$f
qmp device_add "\$ADD0"; back \$A; wait_paths 2
echo "umpath-lab: u2 paths after re-add \$(npaths)"
echo "umpath-lab: end u2"

echo "umpath-lab: == u3"
\$C set-delayed-removal \$H 20 >/dev/null
verify u3 48M &
f=\$!
sleep 3
qmp device_del '{"id": "c0"}'; qmp device_del '{"id": "c1"}'; gone \$A; gone \$B
sleep 1
echo "umpath-lab: u3 during the outage: device \$( [ -b \$D ] && echo present || echo missing)"
\$C heads
sleep 3
both_back; wait_paths 2
wait \$f
echo "umpath-lab: u3 after: device \$( [ -b \$D ] && echo present || echo missing), export \$(\$C head \$H | grep -o 'exported as .*')"
echo "umpath-lab: end u3"

echo "umpath-lab: == u4"
\$C watch > /tmp/u4.watch 2>&1 &
w=\$!
\$C set-delayed-removal \$H 3 >/dev/null
\$F --name=u4 --filename=\$D --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=8 \
  --time_based --runtime=60 > /tmp/u4.fio 2>&1 &
f=\$!
sleep 2
t0=\$(now)
qmp device_del '{"id": "c0"}'; qmp device_del '{"id": "c1"}'; gone \$A; gone \$B
wait \$f; fe=\$?
t1=\$(now)
for i in \$(seq 1 100); do [ -b \$D ] || break; sleep 0.1; done
echo "umpath-lab: u4 fio exit \$fe after \$t0 -> \$t1; device \$( [ -b \$D ] && echo present || echo gone); \$(grep -oE 'err= *[0-9]+' /tmp/u4.fio | head -1)"
both_back; wait_paths 2; wait_dev
echo "umpath-lab: u4 after re-add: device \$( [ -b \$D ] && echo present || echo missing)"
verify u4-new 8M
kill \$w
grep -E "head-(removed|unexported|exported|created)|removal-scheduled" /tmp/u4.watch | sed 's/^/watch: /'
echo "umpath-lab: end u4"

echo "umpath-lab: == u5"
\$C export nothere; echo "umpath-lab: u5 unknown exit \$?"
\$C export \$H; \$C export \$H
echo "umpath-lab: u5 devices \$(ls /dev | grep -c '^ublkb')"
\$F --name=u5 --filename=\$D --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=4 \
  --time_based --runtime=8 > /tmp/u5.fio 2>&1 &
f=\$!
sleep 2
\$C unexport \$H; echo "umpath-lab: u5 in-use exit \$?"
wait \$f
echo "umpath-lab: u5 fio \$(grep -oE 'err= *[0-9]+' /tmp/u5.fio | head -1)"
\$C unexport \$H; echo "umpath-lab: u5 unexport exit \$? device \$( [ -b \$D ] && echo present || echo gone)"
\$C unexport \$H; echo "umpath-lab: u5 unexport again exit \$?"
sleep 2
echo "umpath-lab: u5 after unexport: \$(\$C heads | grep "^\$H" | awk '{print \$NF}')"
\$C export \$H; echo "umpath-lab: u5 export again exit \$?"
echo "umpath-lab: end u5"

echo "umpath-lab: == u6"
\$C set-delayed-removal \$H 0 >/dev/null
verify u6 64M &
f=\$!
sleep 3
kill -9 \$pid; wait \$pid 2>/dev/null
echo "umpath-lab: u6 killed; device \$( [ -b \$D ] && echo present || echo gone); state \$(ls /run/umpath/ublk)"
sleep 2
start u6-again
wait \$f
echo "umpath-lab: u6 after restart: device \$( [ -b \$D ] && echo present || echo gone)"
grep -E "taken over|left by pid" /tmp/umpathd.err | tail -2
echo "umpath-lab: end u6"

echo "umpath-lab: == u7"
kill \$pid; wait \$pid
echo "umpath-lab: u7 clean stop: devices \$(ls /dev | grep -c '^ublkb'), records \$(ls /run/umpath/ublk | wc -l)"
start u7 --ublk_user_recovery=false
wait_paths 2; wait_dev
verify u7 64M &
f=\$!
sleep 3
kill -9 \$pid; wait \$pid 2>/dev/null
t0=\$(now)
wait \$f
echo "umpath-lab: u7 fio ended \$t0 -> \$(now)"
start u7-again
wait_paths 2
sleep 2
grep -E "without user recovery" /tmp/umpathd.err | tail -1
verify u7-new 8M
echo "umpath-lab: end u7"

echo "umpath-lab: == u8"
kill -9 \$pid; wait \$pid 2>/dev/null
\$U --socket=/run/umpath/umpathd.sock --state_file=/tmp/heads --node=lab --workers=2 \
  --ublk_recover_wait_secs=2 >> /tmp/umpathd.out 2>> /tmp/umpathd.err &
pid=\$!
sleep 5
echo "umpath-lab: u8 without its head: device \$( [ -b \$D ] && echo present || echo gone), records \$(ls /run/umpath/ublk | wc -l)"
grep -E "did not come back" /tmp/umpathd.err | tail -1
kill \$pid; wait \$pid
start u8-last
wait_paths 2; wait_dev
kill \$pid; wait \$pid
echo "umpath-lab: u8 clean stop: exit \$?, devices \$(ls /dev | grep -c '^ublkb'), records \$(ls /run/umpath/ublk | wc -l)"
echo "umpath-lab: end u8"
grep -E "^umpathd: (ublk|signal)|^event .*(export|head-removed)" /tmp/umpathd.err | sed 's/^/log: /'
AFTER
UMPATH_LAB_AFTER="$work/after" bash "$here/mkinitramfs.sh" "$work/initramfs.gz" \
  "$here/smoke_init.sh" "$umpathd" "$ctl" "$fio" "$blkdiscard"
lab_show="umpath|log:|watch:|fio|ublk"
lab_boot_qmp 1500
clean_fio() { chk "$1" "$2 fio exit 0 err= *0" "$2: fio verified with zero errors"; }

section u1
chk u1 "lbs 512 max_hw_kb 128 cache write_back discard [1-9][0-9]* zeroes [1-9][0-9]* sectors 524288" \
  "the device's limits come from the namespace"
for p in numa round-robin queue-depth; do clean_fio u1 "u1-$p"; done
line="$(grep "u1 numa paths completed" "$work/u1")" || fail "u1 numa counters"
set -- $(echo "$line" | grep -oE '[0-9]+ -> [0-9]+' | grep -oE '[0-9]+')
[ $(( ($2 - $1 > 0) + ($4 - $3 > 0) )) = 1 ] || fail "u1: numa uses one path: $line"
for p in round-robin queue-depth; do
  line="$(grep "u1 $p paths completed" "$work/u1")" || fail "u1 $p counters"
  set -- $(echo "$line" | grep -oE '[0-9]+ -> [0-9]+' | grep -oE '[0-9]+')
  [ "$2" -gt "$1" ] && [ "$4" -gt "$3" ] || fail "u1: $p uses both paths: $line"
done
chk u1 "write-zeroes exit 0 nonzero-lines 0 discard exit 0" "write zeroes zeroed, discard succeeded"

section u2
clean_fio u2 u2
chk u2 "u2 paths during fio 1" "the path was removed during fio"
chk u2 "u2 paths after re-add 2" "the path came back"

section u3
clean_fio u3 u3
chk u3 "u3 during the outage: device present" "the device stays through the window"
chk u3 "^nguid-ab0+1 +0 +0 .*20s +[0-9][^ ]* +[0-9]+ +/dev/ublkb0" "removal pending, still exported"
chk u3 "u3 after: device present, export exported as /dev/ublkb0" "the same device after the outage"

section u4
chk u4 "u4 fio exit [1-9].*device gone; err= *[1-9]" "fio saw errors and the device went"
chk u4 "watch: .*head-removed.*delayed removal expired: no path returned within 3" "head-removed says the window expired"
chk u4 "watch: .*head-unexported.*/dev/ublkb0 removed: the head was removed" "head-unexported says why"
chk u4 "u4 after re-add: device present" "a new head gets a new device"
clean_fio u4 u4-new
t="$(grep -oE "u4 fio exit [0-9]+ after [0-9.]+ -> [0-9.]+" "$work/u4" | grep -oE '[0-9.]+$')"
t0="$(grep -oE "u4 fio exit [0-9]+ after [0-9.]+" "$work/u4" | grep -oE '[0-9.]+$')"
python3 -c "import sys; d=float(sys.argv[2])-float(sys.argv[1]); sys.exit(0 if 2.5 <= d <= 15 else 1)" "$t0" "$t" \
  || fail "u4: fio failed once the 3 s window passed, not before ($t0 -> $t)"

section u5
chk u5 "NOT_FOUND: head nothere not found" "an unknown head"
chk u5 "u5 unknown exit 5" "NOT_FOUND's exit status"
[ "$(grep -c "^/dev/ublkb0$" "$work/u5")" -ge 2 ] || fail "u5: exporting twice returns the same device"
chk u5 "u5 devices 1" "exporting twice makes one device"
chk u5 "FAILED_PRECONDITION: /dev/ublkb0 of head .* is in use \(pid [0-9]+ \(fio\)\)" "in use names its user"
chk u5 "u5 in-use exit 9" "FAILED_PRECONDITION's exit status"
chk u5 "u5 fio err= *0" "the refused unexport disturbed nothing"
chk u5 "u5 unexport exit 0 device gone" "unexport removes the device"
chk u5 "u5 unexport again exit 0" "unexport is idempotent"
chk u5 "u5 after unexport: -\$" "an unexported head stays unexported (export-all exports a head once)"
chk u5 "u5 export again exit 0" "export again"

section u6
clean_fio u6 u6
chk u6 "u6 killed; device present; state 0" "the device outlives the agent"
chk u6 "taken over from pid" "the restarted agent took the device over"
chk u6 "u6 after restart: device present" "the device stays"

section u7
chk u7 "u7 clean stop: devices 0, records 0" "a clean shutdown removes every device"
chk u7 "u7 fio exit [1-9]" "without recovery, fio fails"
chk u7 "without user recovery" "the restart cleans up the device left behind"
clean_fio u7 u7-new

section u8
chk u8 "u8 without its head: device gone, records 0" "a leftover whose head never comes is removed"
chk u8 "did not come back within 2 s" "and says why"
chk u8 "u8 clean stop: exit 0, devices 0, records 0" "a clean shutdown removes every device"
for n in u1-numa u1-round-robin u1-queue-depth u2 u3 u6; do
  echo "lab: $n: $(grep -h "$n fio exit" "$work"/u* | head -1 | cut -d' ' -f3-)"
done
echo "lab: $(grep -h "u4 fio exit" "$work/u4" | cut -d' ' -f2-)"
echo "lab: ublk test passed"
