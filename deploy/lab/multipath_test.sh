#!/usr/bin/env bash
# CTest (label lab): umpathd on QEMU's NVMe controllers through vfio, in one boot of the
# lab node:
#  1. two controllers of one subsystem with two shared namespaces: a head per namespace,
#     each with two live optimized paths named by their PCI addresses, as the control
#     API (umpathctl, table and JSON) shows them;
#  2. a verified workload (writes, write zeroes, flushes, read-back) under each policy:
#     zero errors, zero mismatches; round-robin
#     and queue-depth use both paths, numa one;
#  3. fail-path and reinstate-path under a verified workload: zero errors, I/O leaves
#     the failed path and comes back to it;
#  4. bad input: a function that is not NVMe, an address with no device, a controller
#     whose namespace has another identity under the same NSID and subsystem NQN, a
#     controller whose bring-up fails (too few I/O queues), a function not bound to
#     vfio-pci: each a clear error, and the agent serves its other paths.
# Usage: multipath_test.sh UMPATHD UMPATHCTL
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
umpathd="$(readlink -f "$1")"
perf="$(dirname "$umpathd")/umpath-perf"  # the workloads: the same agent (umpath-perf)
ctl="$(readlink -f "$2")"
work="$(mktemp -d /tmp/umpath-lab-mp-XXXXXX)"
[ -n "${UMPATH_LAB_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
bash "$here/fetch.sh" >/dev/null

cat > "$work/after" <<AFTER
#!/bin/sh
U=$umpathd
P=$perf
C=$ctl
common="--socket=/run/umpath/umpathd.sock --state_file=/tmp/heads --node=lab"
wait_head() {
  for i in \$(seq 1 150); do \$C heads 2>/dev/null | grep -q '^nguid-' && return 0; sleep 0.2; done
  return 1
}
col() {  # col PATH COLUMN: a column of the path's row in "umpathctl head"
  \$C head \$H | awk -v p="\$1" -v c="\$2" '\$1 == p {print \$c}'
}
H=nguid-ab000000000000000000000000000001

echo "umpath-lab: == 1 topology"
\$U \$common --vfio_devices=0000:01:00.0,0000:02:00.0 > /tmp/serve.log 2>&1 &
pid=\$!
wait_head || echo "umpath-lab: no head"
\$C heads
\$C controllers
\$C head \$H
\$C -o json head \$H | grep -E '"(name|controller_state|ana_state|selectable|address)"'
kill \$pid; wait \$pid
echo "umpath-lab: serve exited \$?"
cat /tmp/serve.log

for p in numa round-robin queue-depth; do
  echo "umpath-lab: == 2 policy \$p"
  \$P \$common --vfio_devices=0000:01:00.0,0000:02:00.0 --default_io_policy=\$p \
    --workload=verify --workload_secs=3 --workload_qd=16 2>/dev/null
  echo "umpath-lab: workload \$p exited \$?"
done

echo "umpath-lab: == 3 fail-path under I/O"
\$P \$common --vfio_devices=0000:01:00.0,0000:02:00.0 --default_io_policy=round-robin \
  --workload=verify --workload_secs=600 --workload_qd=16 > /tmp/fp.out 2>/tmp/fp.err &
pid=\$!
wait_head || echo "umpath-lab: no head"
sleep 2
\$C fail-path \$H 0000:01:00.0 maintenance
a=\$(col 0000:01:00.0 6); b0=\$(col 0000:02:00.0 6)
sleep 2
b=\$(col 0000:01:00.0 6); b1=\$(col 0000:02:00.0 6)
echo "umpath-lab: failed path completed \$a then \$b; other path \$b0 then \$b1"
echo "umpath-lab: failed path selectable \$(col 0000:01:00.0 4)"
\$C reinstate-path \$H 0000:01:00.0
sleep 2
c=\$(col 0000:01:00.0 6)
echo "umpath-lab: reinstated path completed \$b then \$c"
kill \$pid  # ends the workload early; its result is still printed
wait \$pid
echo "umpath-lab: fail-path workload exited \$?"
cat /tmp/fp.out
grep -E "path-state-changed" /tmp/fp.err

echo "umpath-lab: == 3b reset, detach and attach under I/O"
\$P \$common --vfio_devices=0000:01:00.0,0000:02:00.0 --default_io_policy=round-robin \
  --workload=verify --workload_secs=600 --workload_qd=16 > /tmp/rs.out 2>/tmp/rs.err &
pid=\$!
wait_head || echo "umpath-lab: no head"
sleep 1
\$C reset 0000:01:00.0
sleep 2
\$C reset 0000:01:00.0
sleep 2
\$C detach 0000:02:00.0
sleep 1
echo "umpath-lab: paths after detach: \$(\$C head \$H | grep -c '^  0000:0')"
\$C attach pcie 0000:02:00.0
sleep 1
c=\$(col 0000:02:00.0 6)
sleep 2
d=\$(col 0000:02:00.0 6)
echo "umpath-lab: re-attached path completed \$c then \$d"
\$C reset 0000:09:00.0
echo "umpath-lab: reset of an unknown controller exited \$?"
\$C attach pcie 0000:00:00.0
echo "umpath-lab: attach of a non-NVMe function exited \$?"
kill \$pid
wait \$pid
echo "umpath-lab: reset workload exited \$?"
cat /tmp/rs.out
grep -E "type=controller-|umpath-vfio: 0000:0[12]:00.0: (resetting|reset done|detaching|attached)" /tmp/rs.err

echo "umpath-lab: == 4 bad input"
\$P \$common --workers=2 --vfio_devices=0000:00:00.0,0000:09:00.0,0000:01:00.0,0000:02:00.0,0000:03:00.0,0000:04:00.0 \
  --workload=verify --workload_secs=3 --workload_qd=8 > /tmp/bad.out 2> /tmp/bad.err
echo "umpath-lab: bad-input workload exited \$?"
cat /tmp/bad.out
grep -E "umpath-vfio|path-rejected" /tmp/bad.err
echo 0000:02:00.0 > /sys/bus/pci/drivers/vfio-pci/unbind
\$P \$common --vfio_devices=0000:02:00.0,0000:01:00.0 --workload=verify --workload_secs=2 \
  > /tmp/unbound.out 2> /tmp/unbound.err
echo "umpath-lab: unbound workload exited \$?"
cat /tmp/unbound.out
grep -E "umpath-vfio" /tmp/unbound.err
echo "umpath-lab: == 5 binding"
echo nvme > /sys/bus/pci/devices/0000:02:00.0/driver_override
echo 0000:02:00.0 > /sys/bus/pci/drivers_probe
echo "umpath-lab: 0000:02:00.0 driver \$(basename \$(readlink /sys/bus/pci/devices/0000:02:00.0/driver))"
\$P \$common --bind_vfio --vfio_devices=0000:02:00.0,0000:01:00.0 --default_io_policy=round-robin \
  --workload=verify --workload_secs=2 > /tmp/bind.out 2> /tmp/bind.err
echo "umpath-lab: bind workload exited \$?"
cat /tmp/bind.out
echo "umpath-lab: 0000:02:00.0 driver now \$(basename \$(readlink /sys/bus/pci/devices/0000:02:00.0/driver))"
AFTER
UMPATH_LAB_AFTER="$work/after" bash "$here/mkinitramfs.sh" "$work/initramfs.gz" \
  "$here/smoke_init.sh" "$umpathd" "$perf" "$ctl"
truncate -s 64M "$work/other-subsys.img"
export UMPATH_LAB_EXTRA="-device pcie-root-port,id=rp2,chassis=3,slot=3
  -device pcie-root-port,id=rp3,chassis=4,slot=4
  -device nvme-subsys,id=s1,nqn=nqn.2026-01.io.umpath:lab
  -device nvme,id=c2,serial=S1,subsys=s1,bus=rp2
  -device nvme,id=c3,serial=S1,subsys=s1,bus=rp3,max_ioqpairs=1
  -drive file=$work/other-subsys.img,if=none,id=dother,format=raw
  -device nvme-ns,drive=dother,nsid=1,shared=on,bus=c2,nguid=ab000000-0000-0000-0000-000000000002"
UMPATH_LAB_NAMESPACES=2 timeout 600 bash "$here/boot.sh" "$work/initramfs.gz" 2 "$work/serial.log" || true
log="$work/serial.log"
tr -d '\r' < "$log" > "$work/s.log"; log="$work/s.log"
fail() { grep -E "umpath|event" "$log" | tail -80; echo "FAIL: $*"; exit 1; }
has() { grep -qE -- "$1" "$log" || fail "$2"; }

# 1. One head per namespace, each with both controllers' paths, live and optimized,
#    named by PCI address.
has "^nguid-ab000000000000000000000000000001 +2 +2 " "one head, two paths, two live"
has "^nguid-ab000000000000000000000000000102 +2 +2 " "the second namespace: its own head, two paths"
has "^  0000:01:00.0 +live +optimized +yes " "path 0000:01:00.0 live, optimized, selectable"
has "^  0000:02:00.0 +live +optimized +yes " "path 0000:02:00.0 live, optimized, selectable"
has "0000:01:00.0 .*pcie .*0000:01:00.0" "controller listed with its PCI address"
has "umpath-lab: serve exited 0" "clean shutdown"

# 2. Each policy: a verified workload with no error and no mismatch.
for p in numa round-robin queue-depth; do
  sed -n "/== 2 policy $p\$/,/workload $p exited/p" "$log" > "$work/$p"
  grep -qE "result .* errors=0 mismatches=0" "$work/$p" || fail "$p: verified workload clean"
  grep -q "workload $p exited 0" "$work/$p" || fail "$p: exit status"
  grep -qE "result .* flushes=[1-9][0-9]* write_zeroes=[1-9]" "$work/$p" \
    || fail "$p: Flush and Write Zeroes went to the devices"
  used=$(grep -cE "umpath-perf: path 0000:0[12]:00.0 completed=[1-9]" "$work/$p" || true)
  if [ "$p" = numa ]; then
    [ "$used" -eq 1 ] || fail "numa uses one path ($used used)"
  else
    [ "$used" -eq 2 ] || fail "$p uses both paths ($used used)"
  fi
  echo "lab: $p: $(grep -o 'iops=[0-9]*.*mismatches=[0-9]*' "$work/$p")"
done

# 3. fail-path and reinstate-path under I/O.
line="$(grep "umpath-lab: failed path completed" "$log")" || fail "fail-path samples"
set -- $(echo "$line" | grep -oE '[0-9]+')
[ "$1" = "$2" ] || fail "the failed path took I/O while failed: $line"
[ "$4" -gt "$3" ] || fail "the other path carried the I/O: $line"
line="$(grep "umpath-lab: reinstated path completed" "$log")" || fail "reinstate samples"
set -- $(echo "$line" | grep -oE '[0-9]+')
[ "$2" -gt "$1" ] || fail "I/O came back to the reinstated path: $line"
has "umpath-lab: failed path selectable no" "the failed path is not selectable"
sed -n '/== 3 fail-path/,/== 4 bad input/p' "$log" > "$work/fp"
grep -qE "result .* errors=0 mismatches=0" "$work/fp" || fail "fail-path: zero errors"
grep -q "fail-path workload exited 0" "$work/fp" || fail "fail-path exit status"

# 3b. Reset twice, detach and attach through the API, all under verified I/O.
sed -n '/== 3b reset/,/== 4 bad input/p' "$log" > "$work/rs"
grep -qE "result .* errors=0 mismatches=0" "$work/rs" || fail "reset/detach/attach: zero errors"
grep -q "reset workload exited 0" "$work/rs" || fail "reset workload exit status"
[ "$(grep -c "umpath-vfio: 0000:01:00.0: reset done" "$work/rs")" -eq 2 ] || fail "two resets done"
grep -qE 'type=controller-state-changed controller="0000:01:00.0" from="live" to="resetting"' "$work/rs" \
  || fail "resetting event"
grep -qE 'type=controller-state-changed controller="0000:01:00.0" from="resetting" to="live"' "$work/rs" \
  || fail "live again event"
grep -qE 'type=controller-removed controller="0000:02:00.0" reason="detached through the API"' "$work/rs" \
  || fail "detach event"
grep -q "umpath-lab: paths after detach: 1" "$work/rs" || fail "one path after detach"
grep -q "attached 0000:02:00.0" "$work/rs" || fail "attach through the API"
line="$(grep "umpath-lab: re-attached path completed" "$work/rs")" || fail "re-attach samples"
set -- $(echo "$line" | grep -oE '[0-9]+' | tail -2)
[ "$2" -gt "$1" ] || fail "I/O reached the re-attached path: $line"
grep -q "controller 0000:09:00.0 not found" "$work/rs" || fail "reset of an unknown controller"
grep -q "reset of an unknown controller exited [1-9]" "$work/rs" || fail "its exit status"
grep -q "0000:00:00.0 is not an NVMe controller" "$work/rs" || fail "attach of a non-NVMe function"

# 4. Bad input: clear errors, and the good paths serve.
sed -n '/== 4 bad input/,$p' "$log" > "$work/bad"
chk() { grep -qE -- "$1" "$work/bad" || fail "$2"; }
chk "0000:00:00.0: not attached: FAILED_PRECONDITION: 0000:00:00.0 is not an NVMe controller \(PCI class 0x060000" "a non-NVMe function is refused"
chk "0000:09:00.0: not attached: NOT_FOUND: no PCI device 0000:09:00.0" "an absent address is refused"
chk "0000:04:00.0: not attached: RESOURCE_EXHAUSTED: 0000:04:00.0: set number of queues: granted 1 I/O queues, 2 workers need one each" "a failed bring-up is reported"
chk "type=path-rejected .*controller=\"0000:03:00.0\"" "a namespace with another identity is rejected"
chk "bad-input workload exited 0" "the agent served its good paths"
chk "result .* errors=0 mismatches=0" "no error on the good paths"
chk "0000:02:00.0: not attached: FAILED_PRECONDITION: 0000:02:00.0 is bound to no driver, not vfio-pci" "an unbound function is refused"
chk "unbound workload exited 0" "the bound path serves alone"

# 5. --bind_vfio takes a function from the kernel's nvme driver.
sed -n '/== 5 binding/,$p' "$log" > "$work/bind"
grep -q "0000:02:00.0 driver nvme" "$work/bind" || fail "the function starts on the nvme driver"
grep -q "bind workload exited 0" "$work/bind" || fail "bind workload"
grep -qE "umpath-perf: path 0000:02:00.0 completed=[1-9]" "$work/bind" || fail "the bound path carried I/O"
grep -q "0000:02:00.0 driver now vfio-pci" "$work/bind" || fail "bound to vfio-pci"
echo "lab: multipath test passed"
