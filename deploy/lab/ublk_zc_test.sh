#!/usr/bin/env bash
# Lab test, issue 21 item 3: zero-copy ublk on kernel paths. Linux 6.18 only (run by
# bench/lab_on_618.sh; CI's 6.12 has no AUTO_BUF_REG, where z0 fails by design). One boot
# with the kernel's multipath off and no QEMU NVMe: the guest's NVMe/TCP target
# (deploy/lab/nvmet_lib.sh) serves one namespace on two ports, both made optimized;
# umpathd connects both (--kernel_connect) and exports the head as /dev/ublkb0, each
# request's pages going to the NVMe passthrough as an io_uring fixed buffer. fio writes
# with crc32c checksums and reads them back:
#  z0. the agent says the device is zero copy;
#  z1. under numa, round-robin and queue-depth: zero errors; round-robin and queue-depth
#      use both ports, numa one;
#  z2. a path removed mid-I/O (port 1's kernel controller deleted under verified I/O):
#      zero errors, the I/O carries on through port 2;
#  z3. a hand-over under verified I/O, twice (SIGTERM, a new agent takes the device
#      over): each old agent exits 0, each new one serves the device zero copy again,
#      fio has zero errors.
# Usage: ublk_zc_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init ublk_zc "$1" "$2"
H=nguid-ab0000000000000000000000000000f1
fio="$(lab_fio)"

lab_after
cat >> "$work/after" <<AFTER
D=/dev/ublkb0
. /lab/nvmet.sh
LAB_STATE=zc
KC=tcp:127.0.0.1:4420:\$NVMET_NQN,tcp:127.0.0.1:4421:\$NVMET_NQN
start() {  # start NAME [FLAGS...]
  n=\$1; shift
  agent \$n \$U --workers=2 --export_all --kernel_connect=\$KC --kernel_poll_ms=500 "\$@"
  echo "umpath-lab: \$n umpathd pid \$pid"
}
mode() { echo "umpath-lab: \$1 data: \$(grep -o 'request data [a-zA-Z_ ]*' /tmp/\$1.err | tail -1)"; }
ports() { P1=\$(nvmet_ctrl 1); P2=\$(nvmet_ctrl 2); echo "umpath-lab: ports P1=\$P1 P2=\$P2"; }
taken_over() { for j in \$(seq 1 600); do grep -q 'reason="taken over' /tmp/\$1.err && return; sleep 0.05; done; echo "umpath-lab: \$1 never took the device over"; }
writes() { awk '{ print \$5 }' /sys/block/ublkb0/stat 2>/dev/null || echo 0; }
flowing() { local w0=\$(writes) i; for i in \$(seq 1 600); do [ \$((\$(writes) - w0)) -ge 1024 ] && return; sleep 0.05; done; echo "umpath-lab: no writes flowed"; }

nvmet_setup 128
nvmet_ana 2 optimized
echo "umpath-lab: kernel multipath \$(cat /sys/module/nvme_core/parameters/multipath)"

begin z0
start z0
wait_paths 2; wait_dev
ports
mode z0
jshow head head \$H
end z0

begin z1
policies z1 16M
\$C set-policy \$H numa >/dev/null
end z1

begin z2
verify_bg z2 48M
jshow before head \$H
echo 1 > /sys/class/nvme/\$P1/delete_controller
echo "umpath-lab: z2 port 1's controller \$P1 deleted under I/O"
wait_paths 1
jshow during head \$H
wait \$f
end z2

begin z3
for i in 1 2; do
  verify z3-\$i 64M & f=\$!
  flowing
  kill \$pid; wait \$pid; rc=\$?
  start z3-\$i
  taken_over z3-\$i
  running=\$(kill -0 \$f 2>/dev/null && echo yes || echo no)
  wait \$f
  echo "umpath-lab: z3 \$i: old agent exit \$rc, device \$(dev), fio running \$running"
  mode z3-\$i
done
kill \$pid; wait \$pid
end z3
AFTER
lab_initramfs "$umpathd" "$ctl" "$fio"
lab_show="umpath|log:|fio|nvme|error|Error"
lab_boot 1500 0
clean_fio() { chk "$1" "$2 fio exit 0 err= *0" "$2: fio verified with zero errors"; }
ports() {
  local line; line="$(grep -oE "ports P1=nvme[0-9]+ P2=nvme[0-9]+" "$work/$1" | tail -1)" || fail "$1: no ports marker"
  P1="${line#*P1=}"; P1="${P1%% *}"; P2="${line##*P2=}"
}

section z0
ports z0
grep -q "kernel multipath N" "$log" || fail "the guest's native multipath is off"
chk z0 "z0 data: request data zero copy" "the device is zero copy"
jchk z0 "sorted(paths(head(J['head']))) == sorted(['$P1', '$P2'])" "both ports are paths"

section z1
for p in numa round-robin queue-depth; do clean_fio z1 "z1-$p"; done
jchk z1 "grew(J['numa-before'], J['numa-after'], '$P1') + grew(J['numa-before'], J['numa-after'], '$P2') == 1" "numa uses one port"
for p in round-robin queue-depth; do
  jchk z1 "grew(J['$p-before'], J['$p-after'], '$P1') and grew(J['$p-before'], J['$p-after'], '$P2')" "$p uses both ports"
done

section z2
clean_fio z2 z2
jchk z2 "'$P1' not in paths(head(J['during'])) and '$P2' in paths(head(J['during']))" "port 1's path was removed during fio"
jchk z2 "grew(J['before'], J['during'], '$P2')" "the I/O went on through port 2"

section z3
for i in 1 2; do
  clean_fio z3 "z3-$i"
  chk z3 "z3 $i: old agent exit 0, device present, fio running yes" "hand-over $i under fio: the old agent ends cleanly, the device stays"
  chk z3 "z3-$i data: request data zero copy" "the agent taking over serves the device zero copy"
done
echo "lab: ublk_zc passed (zero copy on kernel paths: policies, a path removed mid-I/O, hand-over)"
