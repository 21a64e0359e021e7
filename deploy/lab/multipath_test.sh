#!/usr/bin/env bash
# CTest (label lab): umpathd on QEMU's NVMe controllers through vfio, in one boot of the
# lab node:
#  1. two controllers of one subsystem with two shared namespaces: a head per namespace,
#     each with two live optimized paths named by their PCI addresses, as the control
#     API (umpathctl -o json) shows them;
#  2. a verified workload (writes, write zeroes, flushes, read-back) under each policy:
#     zero errors, zero mismatches; round-robin
#     and queue-depth use both paths, numa one;
#  3. fail-path and reinstate-path under a verified workload: zero errors, I/O leaves
#     the failed path and comes back to it; reset, detach and attach through the API;
#  4. bad input: a function that is not NVMe, an address with no device, a controller
#     whose namespace has another identity under the same NSID and subsystem NQN, a
#     controller whose bring-up fails (too few I/O queues), a function not bound to
#     vfio-pci: none attached at start, each a clear error when attached through the
#     API, and the agent serves its other paths.
# Usage: multipath_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init mp "$1" "$2"
H=nguid-ab000000000000000000000000000001

lab_after
cat >> "$work/after" <<AFTER
# vfio NAME PROGRAM FLAGS...: an agent on both controllers.
vfio() { local n=\$1 prog=\$2; shift 2; agent \$n \$prog --vfio_devices=\$A,\$B "\$@"; }
# workload NAME: a verified round-robin workload on both until stop NAME.
workload() { vfio \$1 \$P --default_io_policy=round-robin --workload=verify --workload_secs=600 --workload_qd=16; }

begin topology
vfio serve \$U
wait_head
jshow heads heads
jshow controllers controllers
jshow head head \$H
stop serve
end topology

for p in numa round-robin queue-depth; do
  begin policy-\$p
  vfio policy-\$p \$P --default_io_policy=\$p --workload=verify --workload_secs=3 --workload_qd=16
  wait \$pid
  echo "umpath-lab: workload \$p exited \$?"
  cat /tmp/policy-\$p.out
  end policy-\$p
done

begin fail-path "under I/O"
workload fp
wait_head
sleep 2
jshow fail-path fail-path \$H \$A maintenance
jshow failed head \$H
sleep 2
jshow failed-later head \$H
jshow reinstated reinstate-path \$H \$A
sleep 2
jshow reinstated-later head \$H
stop fp
end fail-path

begin reset "detach and attach under I/O"
workload rs
wait_head
sleep 1
\$C reset \$A
sleep 2
\$C reset \$A
sleep 2
\$C detach \$B
sleep 1
jshow detached head \$H
jshow attach attach pcie \$B
jshow attach-again attach pcie \$B
echo "umpath-lab: attach again exited \$?"
sleep 1
jshow attached head \$H
sleep 2
jshow attached-later head \$H
\$C reset 0000:09:00.0
echo "umpath-lab: reset of an unknown controller exited \$?"
\$C attach pcie 0000:00:00.0
echo "umpath-lab: attach of a non-NVMe function exited \$?"
stop rs
end reset

begin bad-input
agent bad \$P --workers=2 --vfio_devices=0000:00:00.0,0000:09:00.0,\$A,\$B,0000:03:00.0,0000:04:00.0 \
  --workload=verify --workload_secs=600 --workload_qd=8
wait_head
jshow controllers controllers
for d in 0000:00:00.0 0000:09:00.0 0000:04:00.0; do
  \$C attach pcie \$d
  echo "umpath-lab: attach \$d exited \$?"
done
sleep 2
stop bad
end bad-input

begin unbound
echo \$B > /sys/bus/pci/drivers/vfio-pci/unbind
agent unbound \$P --vfio_devices=\$B,\$A --workload=verify --workload_secs=600
wait_head
jshow controllers controllers
\$C attach pcie \$B
echo "umpath-lab: attach \$B exited \$?"
sleep 1
stop unbound
end unbound

begin binding
echo nvme > /sys/bus/pci/devices/\$B/driver_override
echo \$B > /sys/bus/pci/drivers_probe
echo "umpath-lab: \$B driver \$(basename \$(readlink /sys/bus/pci/devices/\$B/driver))"
agent bind \$P --bind_vfio --vfio_devices=\$B,\$A --default_io_policy=round-robin --workload=verify --workload_secs=2
wait \$pid
echo "umpath-lab: bind workload exited \$?"
cat /tmp/bind.out
echo "umpath-lab: \$B driver now \$(basename \$(readlink /sys/bus/pci/devices/\$B/driver))"
end binding
AFTER
lab_initramfs "$umpathd" "$perf" "$ctl"
truncate -s 64M "$work/other-subsys.img"
export UMPATH_LAB_EXTRA="-device pcie-root-port,id=rp2,chassis=3,slot=3
  -device pcie-root-port,id=rp3,chassis=4,slot=4
  -device nvme-subsys,id=s1,nqn=nqn.2026-01.io.umpath:lab
  -device nvme,id=c2,serial=S1,subsys=s1,bus=rp2
  -device nvme,id=c3,serial=S1,subsys=s1,bus=rp3,max_ioqpairs=1
  -drive file=$work/other-subsys.img,if=none,id=dother,format=raw
  -device nvme-ns,drive=dother,nsid=1,shared=on,bus=c2,nguid=ab000000-0000-0000-0000-000000000002"
lab_show="umpath|event"
UMPATH_LAB_NAMESPACES=2 lab_boot 600 2
clean() { chk "$1" "result .* errors=0 mismatches=0" "zero errors and mismatches"; chk "$1" "$2 exited 0" "exit status"; }

# 1. One head per namespace, each with both controllers' paths, live and optimized,
#    named by PCI address.
section topology
for h in $H nguid-ab000000000000000000000000000102; do
  jchk topology "sorted(paths(head(J['heads'], '$h'))) == ['$A', '$B'] and head(J['heads'], '$h')['live_paths'] == 2" \
    "head $h: two paths, two live"
done
for p in $A $B; do
  jchk topology "[path(head(J['head']), '$p')[k] for k in ('controller_state', 'ana_state', 'selectable')] == ['CONTROLLER_STATE_LIVE', 'ANA_STATE_OPTIMIZED', True]" \
    "path $p live, optimized, selectable"
  jchk topology "[ctrl(J['controllers'], '$p')[k] for k in ('transport', 'address')] == ['pcie', '$p']" \
    "controller $p listed with its PCI address"
done
chk topology "umpath-lab: serve exited 0" "clean shutdown"

# 2. Each policy: a verified workload with no error and no mismatch.
for p in numa round-robin queue-depth; do
  section "policy-$p"
  chk "policy-$p" "result .* errors=0 mismatches=0" "verified workload clean"
  chk "policy-$p" "workload $p exited 0" "exit status"
  chk "policy-$p" "result .* flushes=[1-9][0-9]* write_zeroes=[1-9]" "Flush and Write Zeroes went to the devices"
  used=$(grep -cE "umpath-perf: path 0000:0[12]:00.0 completed=[1-9]" "$work/policy-$p" || true)
  if [ "$p" = numa ]; then
    [ "$used" -eq 1 ] || fail "numa uses one path ($used used)"
  else
    [ "$used" -eq 2 ] || fail "$p uses both paths ($used used)"
  fi
  echo "lab: $p: $(grep -o 'iops=[0-9]*.*mismatches=[0-9]*' "$work/policy-$p")"
done

# 3. fail-path and reinstate-path under I/O.
section fail-path
clean fail-path fp
jchk fail-path "done(head(J['failed']), '$A') == done(head(J['failed-later']), '$A')" "the failed path took no I/O while failed"
jchk fail-path "grew(J['failed'], J['failed-later'], '$B')" "the other path carried the I/O"
jchk fail-path "not path(head(J['failed-later']), '$A')['selectable'] and path(head(J['failed-later']), '$A')['admin_failed']" \
  "the failed path is not selectable"
jchk fail-path "path(head(J['fail-path']), '$A')['admin_failed']" "fail-path answers the head with the path failed"
jchk fail-path "ev('path-state-changed', head='$H', path='$A', reason='^maintenance$')" "the failure is an event with its reason"
jchk fail-path "path(head(J['reinstated']), '$A')['selectable']" "the reinstated path is selectable"
jchk fail-path "ev('path-state-changed', head='$H', path='$A', reason='^reinstated$')" "the reinstatement is an event"
jchk fail-path "grew(J['failed-later'], J['reinstated-later'], '$A')" "I/O came back to the reinstated path"

# 3b. Reset twice, detach and attach through the API, all under verified I/O.
section reset
clean reset rs
jchk reset "len(ev('controller-state-changed', controller='$A', frm='live', to='resetting')) == 2" "two resets started, each an event"
jchk reset "len(ev('controller-state-changed', controller='$A', frm='resetting', to='live', reason='^reset done$')) == 2" "two resets done"
jchk reset "ev('controller-removed', controller='$B', reason='^detached through the API$')" "detach event"
jchk reset "paths(head(J['detached'])) == ['$A']" "one path after detach"
jchk reset "J['attach']['controller']['name'] == 'controllers/$B'" "attach through the API answers the controller"
chk reset "attach again exited 0" "attaching what is attached is OK (CSI idempotency, issue 19 item 5)"
jchk reset "J['attach-again']['controller']['name'] == 'controllers/$B'" "and answers the controller that is there"
jchk reset "[e for e in ev('controller-added', controller='$B') if e['rev'] > ev('controller-removed', controller='$B')[0]['rev']]" \
  "the attached controller is an event"
jchk reset "grew(J['attached'], J['attached-later'], '$B')" "I/O reached the re-attached path"
chk reset "NOT_FOUND: controller 0000:09:00.0 not found" "reset of an unknown controller"
chk reset "reset of an unknown controller exited 5" "its exit status"
chk reset "FAILED_PRECONDITION: 0000:00:00.0 is not one of this agent's functions" "attach of an unconfigured function (issue 17 item 2)"
chk reset "attach of a non-NVMe function exited 9" "its exit status"

# 4. Bad input: nothing bad attached, clear errors, and the good paths serve.
section bad-input
clean bad-input bad
jchk bad-input "{'$A', '$B'} <= set(ctrls(J['controllers'])) and not {'0000:00:00.0', '0000:09:00.0', '0000:04:00.0'} & set(ctrls(J['controllers']))" \
  "the good controllers attached, the bad ones not"
jchk bad-input "ev('path-rejected', controller='0000:03:00.0')" "a namespace with another identity is rejected"
chk bad-input "FAILED_PRECONDITION: 0000:00:00.0 is not an NVMe controller \(PCI class 0x060000" "a non-NVMe function is refused"
chk bad-input "attach 0000:00:00.0 exited 9" "FAILED_PRECONDITION's exit status"
chk bad-input "NOT_FOUND: no PCI device 0000:09:00.0" "an absent address is refused"
chk bad-input "attach 0000:09:00.0 exited 5" "NOT_FOUND's exit status"
chk bad-input "RESOURCE_EXHAUSTED: 0000:04:00.0: set number of queues: granted 1 I/O queues, 2 workers need one each" "a failed bring-up is reported"
chk bad-input "attach 0000:04:00.0 exited 8" "RESOURCE_EXHAUSTED's exit status"
section unbound
clean unbound unbound
jchk unbound "ctrls(J['controllers']) == ['$A']" "the bound path serves alone"
chk unbound "FAILED_PRECONDITION: $B is bound to no driver, not vfio-pci" "an unbound function is refused"
chk unbound "attach $B exited 9" "FAILED_PRECONDITION's exit status"

# 5. --bind_vfio takes a function from the kernel's nvme driver.
section binding
chk binding "$B driver nvme" "the function starts on the nvme driver"
chk binding "bind workload exited 0" "bind workload"
chk binding "umpath-perf: path $B completed=[1-9]" "the bound path carried I/O"
chk binding "$B driver now vfio-pci" "bound to vfio-pci"
echo "lab: multipath test passed"
