#!/usr/bin/env bash
# CTest (label lab), issue 7: kernel NVMe controllers as paths, ANA for real. One boot
# of the lab node with the kernel's multipath off (nvme_core.multipath=N) and no QEMU
# NVMe: the guest kernel's NVMe/TCP target (deploy/lab/nvmet_lib.sh) serves one
# namespace on two ports, port 1 ANA optimized, port 2 non-optimized. umpathd connects
# port 1 itself (--kernel_connect), port 2 is attached through buf curl, and the head is
# exported as /dev/ublkb0, where fio writes with crc32c checksums and reads them back.
#  k1. numa, round-robin and queue-depth all use port 1 only;
#  k2. port 1 made inaccessible under verified I/O: zero errors, I/O moves to port 2;
#      port 1 optimized again: I/O fails back;
#  k3. the group in CHANGE on port 1 (port 2 inaccessible): I/O waits, and proceeds once
#      port 1 is optimized;
#  k4. the group stuck in CHANGE past 2 x ANATT: the controller is reset;
#  k5. both ports removed under verified I/O: the controllers go CONNECTING (I/O waits),
#      are lost after ctrl_loss_tmo, the head waits out its delayed removal window, the
#      ports return (port 1 reconnected by the agent, port 2 attached by umpathctl):
#      same head, zero errors;
#  k6. both ports removed past a 3 s window: the head is removed, fio fails, a path
#      coming back makes a new head;
#  k7. detach and attach through umpathctl and buf curl under verified I/O; bad input
#      (an unreachable address, an unknown NQN, a malformed address, an unknown
#      controller): clear errors, nothing disturbed.
# Usage: kernel_test.sh UMPATHD UMPATHCTL [BUF]  (BUF: the buf binary itself, for the guest)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init kernel "$1" "$2"
fio="$(lab_fio)"
buf="$(readlink -f "${3:-$here/../../build/tools/node_modules/@bufbuild/buf-linux-x64/bin/buf}")"
[ -x "$buf" ] || { echo "FAIL: no buf at $buf (deploy/dev/install-deps.sh installs it)"; exit 1; }

cat > "$work/after" <<AFTER
#!/bin/sh
U=$umpathd
C=$ctl
F=$fio
B=$buf
H=nguid-ab0000000000000000000000000000f1
D=/dev/ublkb0
. /lab/lib.sh
. /lab/nvmet.sh
S=/run/umpath/umpathd.sock
bcurl() {  # bcurl METHOD JSON
  \$B curl --protocol grpc --unix-socket \$S -d "\$2" http://localhost/umpath.v1.MultipathControl/\$1
}
ctrl_of() { for c in /sys/class/nvme/nvme*; do grep -q "trsvcid=\$1" \$c/address 2>/dev/null && basename \$c; done | head -1; }
npaths() { \$C head \$H 2>/dev/null | grep -c '^  nvme'; }
wait_paths() { for i in \$(seq 1 300); do [ "\$(npaths)" = "\$1" ] && return 0; sleep 0.1; done; echo "umpath-lab: \$1 paths never seen"; }
wait_dev() { for i in \$(seq 1 300); do [ -b \$D ] && return 0; sleep 0.1; done; echo "umpath-lab: \$D never appeared"; }
col() { \$C head \$H | awk -v p="\$1" -v c="\$2" '\$1 == p {print \$c}'; }
wait_col() {  # wait_col PATH COLUMN REGEX: 20 s at most
  for i in \$(seq 1 200); do col \$1 \$2 | grep -qE "\$3" && return 0; sleep 0.1; done
  echo "umpath-lab: \$1 column \$2 never matched \$3 (is \$(col \$1 \$2))"
}
verify() {  # verify NAME SIZE [EXTRA...]
  n=\$1; s=\$2; shift 2
  \$F --name=\$n --filename=\$D --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --size=\$s --verify=crc32c --do_verify=1 --verify_fatal=1 "\$@" > /tmp/\$n.fio 2>&1
  echo "umpath-lab: \$n fio exit \$? \$(grep -oE 'err= *[0-9]+' /tmp/\$n.fio | head -1) \$(grep -oE 'error=[^,]*' /tmp/\$n.fio | head -1)"
}
counts() { echo "P1 \$(col \$P1 6) P2 \$(col \$P2 6)"; }

nvmet_setup 128
echo "umpath-lab: kernel multipath \$(cat /sys/module/nvme_core/parameters/multipath)"
# An agent that dies says how at once (and fio fails rather than waiting for it: no
# user recovery here).
( \$U --socket=\$S --state_file=/tmp/heads --node=lab --workers=2 --export_all \
    --kernel_connect=tcp:127.0.0.1:4420:\$NVMET_NQN --kernel_controllers=\$NVMET_NQN \
    --kernel_poll_ms=500 --fabrics_ctrl_loss_tmo_secs=6 --fabrics_reconnect_delay_secs=1 \
    --ublk_user_recovery=false > /tmp/umpathd.out 2> /tmp/umpathd.err &
  echo \$! > /tmp/umpathd.pid
  wait \$!
  rc=\$?
  [ -e /tmp/stopping ] || { echo "umpath-lab: umpathd died, exit status \$rc"; tail -40 /tmp/umpathd.err; dmesg | grep -vE 'nvme|I/O error' | tail -20; }
  echo "umpath-lab: umpathd exit \$rc" ) &
for i in \$(seq 1 50); do [ -s /tmp/umpathd.pid ] && break; sleep 0.1; done
pid=\$(cat /tmp/umpathd.pid)
\$C watch > /tmp/watch.log 2>&1 &
wait_paths 1

echo "umpath-lab: == k0"
bcurl AttachController "{\"transport\": \"tcp\", \"address\": \"127.0.0.1\", \"service\": \"4421\", \"subsystem_nqn\": \"\$NVMET_NQN\"}"
echo "umpath-lab: k0 buf curl attach exit \$?"
wait_paths 2; wait_dev
P1=\$(ctrl_of 4420); P2=\$(ctrl_of 4421)
echo "umpath-lab: k0 port 1 is \$P1, port 2 is \$P2; ng devices \$(ls /dev | grep '^ng' | tr '\n' ' ')"
\$C controllers
\$C head \$H
echo "umpath-lab: end k0"

echo "umpath-lab: == k1"
for p in numa round-robin queue-depth; do
  \$C set-policy \$H \$p >/dev/null
  before=\$(counts)
  verify k1-\$p 16M
  echo "umpath-lab: k1 \$p before \$before after \$(counts)"
done
\$C set-policy \$H numa >/dev/null
echo "umpath-lab: end k1"

echo "umpath-lab: == k2"
verify k2 64M &
f=\$!
sleep 3
a=\$(counts)
nvmet_ana 1 inaccessible
wait_col \$P1 3 '^inaccessible'
sleep 2
echo "umpath-lab: k2 inaccessible: \$a -> \$(counts); P1 \$(col \$P1 3) P2 \$(col \$P2 3)"
wait \$f
nvmet_ana 1 optimized
wait_col \$P1 3 '^optimized\$'
b=\$(counts)
verify k2-back 8M
echo "umpath-lab: k2 failback: \$b -> \$(counts)"
echo "umpath-lab: end k2"

echo "umpath-lab: == k3"
nvmet_ana 2 inaccessible
nvmet_ana 1 change
wait_col \$P1 3 '^change'
wait_col \$P2 3 '^inaccessible'
verify k3 4M &
f=\$!
sleep 3
echo "umpath-lab: k3 during CHANGE: \$(\$C head \$H | grep -oE 'waiting I/O [0-9]+'), fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
t0=\$(now)
nvmet_ana 1 optimized
wait \$f
echo "umpath-lab: k3 settled at \$t0, fio done at \$(now)"
nvmet_ana 2 non-optimized
echo "umpath-lab: end k3"

echo "umpath-lab: == k4"
echo "umpath-lab: k4 \$(\$C -o json controller \$P1 | grep -oE '"anatt_secs": *[0-9]+')"
t0=\$(now)
nvmet_ana 1 change
for i in \$(seq 1 600); do grep -q "reset-requested" /tmp/watch.log && break; sleep 0.1; done
t1=\$(now)
echo "umpath-lab: k4 CHANGE at \$t0, reset requested at \$t1"
nvmet_ana 1 optimized
wait_col \$P1 2 '^live\$'
wait_col \$P1 3 '^optimized\$'
verify k4 8M
echo "umpath-lab: end k4"

echo "umpath-lab: == k5"
\$C set-delayed-removal \$H 40 >/dev/null
verify k5 48M &
f=\$!
sleep 3
nvmet_port_down 1
wait_col \$P1 2 '^(resetting|connecting)\$'
echo "umpath-lab: k5 port 1 down: P1 \$(col \$P1 2)"
nvmet_port_down 2
wait_col \$P2 2 '^(resetting|connecting)\$'
echo "umpath-lab: k5 port 2 down: P2 \$(col \$P2 2), fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
\$C head \$H
wait_paths 0
echo "umpath-lab: k5 every controller lost: paths \$(npaths), controllers \$(ls /sys/class/nvme | wc -l), device \$( [ -b \$D ] && echo present || echo missing), fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
\$C heads
sleep 2
nvmet_port_up 1; nvmet_port_up 2
\$C attach tcp 127.0.0.1 4421 \$NVMET_NQN
echo "umpath-lab: k5 umpathctl attach exit \$?"
wait_paths 2
wait \$f
P1=\$(ctrl_of 4420); P2=\$(ctrl_of 4421)
echo "umpath-lab: k5 after: paths \$(npaths), device \$( [ -b \$D ] && echo present || echo missing), \$(\$C heads | grep '^nguid' | awk '{print \$1, \$6}')"
echo "umpath-lab: end k5"

echo "umpath-lab: == k6"
\$C set-delayed-removal \$H 3 >/dev/null
\$F --name=k6 --filename=\$D --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=8 \
  --time_based --runtime=90 > /tmp/k6.fio 2>&1 &
f=\$!
sleep 2
nvmet_port_down 1; nvmet_port_down 2
wait \$f; fe=\$?
for i in \$(seq 1 100); do [ -b \$D ] || break; sleep 0.1; done
echo "umpath-lab: k6 fio exit \$fe \$(grep -oE 'err= *[0-9]+' /tmp/k6.fio | head -1); device \$( [ -b \$D ] && echo present || echo gone)"
nvmet_port_up 1; nvmet_port_up 2
wait_paths 1; wait_dev
\$C attach tcp 127.0.0.1 4421 \$NVMET_NQN >/dev/null
wait_paths 2
P1=\$(ctrl_of 4420); P2=\$(ctrl_of 4421)
verify k6-new 8M
echo "umpath-lab: end k6"

echo "umpath-lab: == k7"
verify k7 96M &
f=\$!
sleep 2
\$C detach \$P2; echo "umpath-lab: k7 umpathctl detach exit \$? paths \$(npaths) P2 in sysfs \$( [ -e /sys/class/nvme/\$P2 ] && echo yes || echo no)"
bcurl AttachController "{\"transport\": \"tcp\", \"address\": \"127.0.0.1\", \"service\": \"4421\", \"subsystem_nqn\": \"\$NVMET_NQN\"}" > /tmp/k7.attach
echo "umpath-lab: k7 buf curl attach exit \$? \$(grep -oE '"name": *"[^"]*"' /tmp/k7.attach | head -1)"
wait_paths 2
P2=\$(ctrl_of 4421)
bcurl DetachController "{\"name\": \"controllers/\$P2\"}"
echo "umpath-lab: k7 buf curl detach exit \$? paths \$(npaths)"
\$C attach tcp 127.0.0.1 4421 \$NVMET_NQN; echo "umpath-lab: k7 umpathctl attach exit \$?"
\$C attach tcp 127.0.0.1 4421 \$NVMET_NQN; echo "umpath-lab: k7 attach again exit \$? paths \$(npaths)"
\$C attach tcp 127.0.0.1 4999 \$NVMET_NQN; echo "umpath-lab: k7 unreachable exit \$?"
\$C attach tcp 127.0.0.1 4420 nqn.2026-01.io.umpath:nothere; echo "umpath-lab: k7 unknown-nqn exit \$?"
\$C attach tcp 300.1.1.1 4420 \$NVMET_NQN; echo "umpath-lab: k7 malformed exit \$?"
\$C attach tcp 127.0.0.1 http \$NVMET_NQN; echo "umpath-lab: k7 bad-port exit \$?"
\$C attach kernel nvme99; echo "umpath-lab: k7 unknown-controller exit \$?"
\$C detach nvme99; echo "umpath-lab: k7 unknown-detach exit \$?"
# Port 1 is one the agent was told to connect (--kernel_connect): detached through the
# API, it stays detached (no reconnect after 5 s) until attached through the API again.
\$C detach \$P1 >/dev/null
sleep 8
echo "umpath-lab: k7 configured detach: paths \$(npaths), P1 in sysfs \$( [ -e /sys/class/nvme/\$P1 ] && echo yes || echo no), port 1 controller \$(ctrl_of 4420)"
\$C attach tcp 127.0.0.1 4420 \$NVMET_NQN >/dev/null; echo "umpath-lab: k7 configured attach again exit \$?"
wait_paths 2
wait \$f
echo "umpath-lab: k7 after: paths \$(npaths), controllers \$(ls /sys/class/nvme | tr '\n' ' ')"
echo "umpath-lab: end k7"

touch /tmp/stopping
kill \$pid
while kill -0 \$pid 2>/dev/null; do sleep 0.1; done
sleep 0.5
sed 's/^/watch: /' /tmp/watch.log | grep -vE 'progress' | tail -80
grep -E "^umpath-kernel:|^umpathd:" /tmp/umpathd.err | sed 's/^/log: /' | tail -60
AFTER
UMPATH_LAB_AFTER="$work/after" bash "$here/mkinitramfs.sh" "$work/initramfs.gz" \
  "$here/smoke_init.sh" "$umpathd" "$ctl" "$fio" "$buf"
lab_show="umpath|log:|watch:|fio|nvme|error|Error"
log="$work/serial.log"
UMPATH_LAB_TCG_THREAD=single timeout 1500 bash "$here/boot.sh" "$work/initramfs.gz" 0 "$log" || true
tr -d '\r' < "$log" > "$work/s.log"
log="$work/s.log"
clean_fio() { chk "$1" "$2 fio exit 0 err= *0" "$2: fio verified with zero errors"; }
grep -q "umpath-lab: umpathd died" "$log" && fail "umpathd died"

section k0
grep -q "umpath-lab: nvmet ready" "$log" || fail "the NVMe/TCP target is up"
grep -q "kernel multipath N" "$log" || fail "the guest's native multipath is off"
chk k0 "buf curl attach exit 0" "buf curl attaches a fabrics controller"
chk k0 "port 1 is nvme[0-9]+, port 2 is nvme[0-9]+; ng devices ng[0-9]+n1 ng[0-9]+n1" "two controllers, each with its own ng device"
chk k0 "^  nvme[0-9]+ +live +optimized +yes" "port 1's path is live and optimized"
chk k0 "^  nvme[0-9]+ +live +non-optimized +yes" "port 2's path is live and non-optimized"

section k1
for p in numa round-robin queue-depth; do
  clean_fio k1 "k1-$p"
  line="$(grep "k1 $p before" "$work/k1")" || fail "k1 $p counters"
  set -- $(echo "$line" | grep -oE 'P[12] [0-9]+' | awk '{print $2}')
  [ "$3" -gt "$1" ] && [ "$4" = "$2" ] || fail "k1: $p uses port 1 only: $line"
done

section k2
clean_fio k2 k2
line="$(grep "k2 inaccessible:" "$work/k2")" || fail "k2 counters"
set -- $(echo "$line" | grep -oE 'P[12] [0-9]+' | awk '{print $2}')
[ "$4" -gt "$2" ] || fail "k2: I/O moved to port 2: $line"
chk k2 "P1 inaccessible" "port 1's path is inaccessible"
clean_fio k2 k2-back
line="$(grep "k2 failback:" "$work/k2")" || fail "k2 failback counters"
set -- $(echo "$line" | grep -oE 'P[12] [0-9]+' | awk '{print $2}')
[ "$3" -gt "$1" ] && [ "$4" = "$2" ] || fail "k2: I/O failed back to port 1: $line"

section k3
chk k3 "during CHANGE: waiting I/O [1-9][0-9]*, fio running yes" "I/O waits while the group is in CHANGE"
clean_fio k3 k3

section k4
chk k4 '"anatt_secs": *[1-9]' "the target's ANATT"
grep -qE 'watch: .*controller-state-changed.*reset-requested.*2 x ANATT' "$log" || fail "k4: the reset was requested after 2 x ANATT"
grep -qE 'log: umpath-kernel: nvme[0-9]+: resetting' "$log" || fail "k4: the kernel controller was reset"
clean_fio k4 k4

section k5
chk k5 "port 1 down: P1 (resetting|connecting)" "port 1's controller reconnects"
chk k5 "port 2 down: P2 (resetting|connecting), fio running yes" "I/O waits while every controller reconnects"
chk k5 "every controller lost: paths 0, controllers 0, device present, fio running yes" \
  "lost controllers: the head waits out its window with its device"
chk k5 "^nguid-ab0+f1 +0 +0 .*40s +[0-9][^ ]* +[0-9]+ +/dev/ublkb0" "removal pending, still exported"
chk k5 "umpathctl attach exit 0" "umpathctl attaches a fabrics controller"
clean_fio k5 k5
chk k5 "k5 after: paths 2, device present, nguid-ab0+f1 -" "the same head, its removal cancelled"
grep -qE "watch: .*removal-cancelled" "$log" || fail "k5: the removal was cancelled"

section k6
chk k6 "k6 fio exit [1-9] err= *[1-9][0-9]*; device gone" "past the window fio fails and the device goes"
grep -qE "watch: .*head-removed.*delayed removal expired" "$log" || fail "k6: the head was removed when its window expired"
clean_fio k6 k6-new

section k7
chk k7 "umpathctl detach exit 0 paths 1 P2 in sysfs no" "umpathctl detach disconnects the controller"
chk k7 'buf curl attach exit 0 "name": *"controllers/nvme' "buf curl attach answers the controller"
chk k7 "buf curl detach exit 0 paths 1" "buf curl detach"
chk k7 "umpathctl attach exit 0" "attach again"
chk k7 "attach again exit 0 paths 2" "attaching what is attached succeeds"
chk k7 "UNAVAILABLE: could not connect to tcp 127.0.0.1:4999" "an unreachable address says so"
chk k7 "unreachable exit 14" "UNAVAILABLE's exit status"
chk k7 "could not connect to tcp 127.0.0.1:4420 nqn.2026-01.io.umpath:nothere" "an unknown NQN says so"
chk k7 "unknown-nqn exit (9|14|5)" "an unknown NQN fails"
chk k7 "INVALID_ARGUMENT: address \"300.1.1.1\" is not an IPv4 or IPv6 address" "a malformed address"
chk k7 "malformed exit 3" "INVALID_ARGUMENT's exit status"
chk k7 "service \"http\" is not a port" "a malformed port"
chk k7 "NOT_FOUND: no kernel NVMe controller nvme99" "an unknown controller"
chk k7 "unknown-detach exit 5" "detaching an unknown controller"
chk k7 "configured detach: paths 1, P1 in sysfs no, port 1 controller \$" "a configured controller detached through the API stays detached"
chk k7 "configured attach again exit 0" "and comes back by an attach"
clean_fio k7 k7
chk k7 "k7 after: paths 2" "nothing else disturbed"
grep -q "umpath-lab: umpathd exit 0" "$log" || fail "umpathd stopped cleanly"
grep -E "umpath-lab: k[0-9] " "$log" | grep -E "fio exit|settled|reset requested|inaccessible:|failback" | sed 's/^/lab: /'
echo "lab: kernel test passed"
