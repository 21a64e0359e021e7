#!/usr/bin/env bash
# CTest (label lab; release only), issue 18 item 6: the kernel backend at lab scale. One
# boot of the lab node with the kernel's multipath off and the guest kernel's NVMe/TCP
# target serving 256 namespaces (2 MiB each) on two ports: 256 heads of 2 paths each.
#  s1. start: the time from umpathd's start until every head has 2 live paths, its
#      resident memory and threads then, and one ListHeads of everything (umpathctl);
#  s2. four heads exported as block devices, fio with crc32c verify on each; port 1
#      removed under that I/O: every head down to 1 live path, zero I/O errors; port 1
#      back: every head at 2 live paths again; the times of both, memory after.
# Usage: kernel_scale_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init kernel-scale "$1" "$2"
fio="$(lab_fio)"
N=256

lab_after
cat >> "$work/after" <<AFTER
. /lab/nvmet.sh
N=$N
head_of() { printf 'nguid-ab000000000000000000%012x' \$((0xf0 + \$1)); }
# with_live K: how many heads have K live paths.
with_live() { \$C -o json heads 2>/dev/null | grep -cE "\"live_paths\": \$1(,|\$)"; }
# until_all K SECONDS: until every head has K live paths; says how long it took.
until_all() {
  local t0=\$(now) i
  for i in \$(seq 1 \$((\$2 * 5))); do
    [ "\$(with_live \$1)" = \$N ] && { echo "\$t0 \$(now)" | awk '{ printf "%.1f", \$2 - \$1 }'; return 0; }
    sleep 0.2
  done
  echo "never (\$(with_live \$1) of \$N)"
}
rss() { awk '/^VmRSS/ { print \$2 }' /proc/\$pid/status; }
threads() { awk '/^Threads/ { print \$2 }' /proc/\$pid/status; }

nvmet_setup 2 \$N
echo "umpath-lab: kernel multipath \$(cat /sys/module/nvme_core/parameters/multipath)"
begin s1
# The kernel's share of the start: when its 2 x N namespace devices exist.
( t0=\$(now); for i in \$(seq 1 1500); do [ "\$(ls /dev | grep -c '^ng[0-9]')" -ge \$((2 * N)) ] && break; sleep 0.2; done
  echo "\$t0 \$(now)" | awk -v n=\$((2 * N)) '{ printf "umpath-lab: s1 kernel: %d namespace devices after %.1f s\\n", n, \$2 - \$1 }' ) &
agent umpathd \$U --workers=2 \
  --kernel_connect=tcp:127.0.0.1:4420:\$NVMET_NQN,tcp:127.0.0.1:4421:\$NVMET_NQN \
  --kernel_controllers=\$NVMET_NQN --kernel_poll_ms=500 \
  --fabrics_ctrl_loss_tmo_secs=60 --fabrics_reconnect_delay_secs=1
echo "umpath-lab: s1 all heads with 2 live paths after \$(until_all 2 300) s"
echo "umpath-lab: s1 heads \$(\$C -o json heads | grep -cE '"name": "heads/[^/]*",?\$') rss_kb \$(rss) threads \$(threads)"
t0=\$(now); \$C heads > /tmp/heads.txt; t1=\$(now)
echo "umpath-lab: s1 umpathctl heads: \$(wc -l < /tmp/heads.txt) lines in \$(echo "\$t0 \$t1" | awk '{ printf "%.2f", \$2 - \$1 }') s"
end s1

begin s2
for i in 1 2 3 4; do \$C export \$(head_of \$i) > /dev/null || echo "umpath-lab: s2 export \$i failed"; done
for i in 0 1 2 3; do
  for j in \$(seq 1 150); do [ -b /dev/ublkb\$i ] && break; sleep 0.2; done
done
echo "umpath-lab: s2 devices \$(ls /dev | grep -c '^ublkb')"
fpids=""
for i in 0 1 2 3; do
  ( D=/dev/ublkb\$i; verify s2-\$i 2M --rate_iops=100 --loops=4 ) &
  fpids="\$fpids \$!"
done
sleep 3
P1=\$(nvmet_ctrl 1)
nvmet_port_down 1
echo "umpath-lab: s2 port 1 (\$P1) removed: every head at 1 live path after \$(until_all 1 120) s"
nvmet_port_up 1
echo "umpath-lab: s2 port 1 back: every head at 2 live paths after \$(until_all 2 300) s"
for p in \$fpids; do wait \$p; done
echo "umpath-lab: s2 rss_kb \$(rss) threads \$(threads)"
end s2
kill \$pid; wait \$pid
echo "umpath-lab: umpathd exit \$?"
grep -v '^event ' /tmp/umpathd.err | tail -20 | sed 's/^/log: /'
AFTER
lab_initramfs "$umpathd" "$ctl" "$fio"
lab_show="umpath|log:|fio"
lab_boot 1500 0
section s1
chk s1 "all heads with 2 live paths after [0-9.]+ s" "every head has both paths"
chk s1 "s1 heads $N " "$N heads"
section s2
chk s2 "s2 devices 4" "four heads exported"
for i in 0 1 2 3; do chk s2 "s2-$i fio exit 0 err= *0" "fio on /dev/ublkb$i verified with zero errors"; done
chk s2 "every head at 1 live path after [0-9.]+ s" "a lost port takes one path of every head"
chk s2 "every head at 2 live paths after [0-9.]+ s" "and its return brings it back"
grep -q "umpath-lab: umpathd exit 0" "$log" || fail "umpathd stopped cleanly"
grep -E "umpath-lab: s[12] " "$log" | grep -vE "fio exit" | sed 's/^/lab: /'
echo "lab: kernel scale test passed"
