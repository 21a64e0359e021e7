#!/usr/bin/env bash
# CTest (label lab), issue 16: the agent replaced and killed under I/O, many times in one
# boot of the lab node (two controllers sharing one namespace through vfio, the head
# exported as /dev/ublkb0). Each round runs its own fio verify (io_uring, direct,
# crc32c) and acts once the round's writes are flowing (the device's own counters, not
# a sleep), so every stop and kill lands under I/O:
#  uup.   u-upgrade: SIGTERM (a hand-over stop) and another binary, a copy of umpathd,
#         started at once, 10 times: the same device each time, fio err=0 in every
#         round; each pause (stop to take-over, and fio's longest completion) printed;
#  ukill. u-kill-loop: kill -9 of the agent and a restart, 20 times: fio err=0 in every
#         round, and no oops (the guest panics on one: boot.sh's oops=panic, and the
#         test then fails for want of its end marker).
# The rounds are ublk user recovery with requests on their way to the dying server: on
# Linux 6.12 before 6.12.114 that is CVE-2025-37906's race (README, "Which kernels are
# safe"), which oopses about one kill in four there. CTest runs this test on the lab's
# 6.18 kernel (UMPATH_LAB_KERNEL=6.18, LAB.md); on another the guest says which.
# Usage: upgrade_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init upgrade "$1" "$2"
H=nguid-ab000000000000000000000000000001
fio="$(lab_fio)"
upgrades="${UMPATH_LAB_UPGRADES:-10}"
kills="${UMPATH_LAB_KILLS:-20}"

lab_after
cat >> "$work/after" <<AFTER
D=/dev/ublkb0
LAB_STATE=upgrade
echo "umpath-lab: kernel \$(uname -r)"
cp \$U /tmp/umpathd.copy
start() {  # start NAME BINARY [FLAGS...]
  n=\$1 b=\$2; shift 2
  agent \$n \$b --bind_vfio --vfio_devices=\$A,\$B --workers=2 --export_all "\$@"
  cur=\$n
}
# stopped_how NAME: how the agent NAME handed the device over (quiesced, with the time
# it took and what was left, or not), and how many requests it left held for the next.
stopped_how() {
  q=\$(grep -oE 'quiesced for the hand-over in [0-9]+ ms: [^"]*' /tmp/\$1.err | head -1)
  h=\$(grep -oE 'handed over to the next agent \([0-9]+' /tmp/\$1.err | grep -oE '[0-9]+\$' | head -1)
  echo "\${q:-not quiesced}; \${h:-?} request(s) held"
}
taken_over() { for j in \$(seq 1 600); do grep -q 'reason="taken over' /tmp/\$1.err && return; sleep 0.05; done; echo "umpath-lab: \$1 never took the device over"; }
writes() { awk '{ print \$5 }' /sys/block/ublkb0/stat 2>/dev/null || echo 0; }
# flowing: until 1024 more writes (4 MiB) have completed on the device than when called.
flowing() { local w0=\$(writes) i; for i in \$(seq 1 600); do [ \$((\$(writes) - w0)) -ge 1024 ] && return; sleep 0.05; done; echo "umpath-lab: no writes flowed"; }
maxlat() { grep -E '^ *clat \(' /tmp/\$1.fio | sed -E 's/.*\((.sec)\).*max= *([0-9.]+k?).*/\2 \1/' | tr '\n' ' '; }

# round KIND I BINARY: a fio verify round; once its writes flow the agent is stopped
# (uup: SIGTERM, a hand-over) or killed (ukill: kill -9), BINARY is started in its place,
# and the time from the stop to the take-over is said with fio's result.
round() {
  k=\$1 i=\$2 b=\$3
  verify \$k-\$i 64M & f=\$!
  flowing
  t0=\$(now)
  old=\$cur
  if [ \$k = uup ]; then kill \$pid; wait \$pid; rc=\$?; else kill -9 \$pid; wait \$pid 2>/dev/null; rc=killed; fi
  [ \$k = uup ] && echo "umpath-lab: \$k \$i: stop: \$(stopped_how \$old)"
  start \$k-\$i \$b
  taken_over \$k-\$i
  t1=\$(now)
  running=\$(kill -0 \$f 2>/dev/null && echo yes || echo no)
  wait \$f
  echo "umpath-lab: \$k \$i: old agent exit \$rc, \$(basename \$b) took over in \$(awk -v a=\$t0 -v b=\$t1 'BEGIN { printf "%.2f", b - a }') s, device \$(dev), fio running \$running, fio clat max \$(maxlat \$k-\$i)"
  events /tmp/\$k-\$i.err
}

begin uup
start uup-0 \$U
wait_paths 2; wait_dev
for i in \$(seq 1 $upgrades); do
  b=\$U; [ \$((i % 2)) = 1 ] && b=/tmp/umpathd.copy
  round uup \$i \$b
done
end uup

begin ukill
for i in \$(seq 1 $kills); do round ukill \$i \$U; done
verify ukill-after 16M
echo "umpath-lab: ukill oopses \$(dmesg | grep -cE 'BUG:|Oops|general protection')"
end ukill
AFTER
lab_initramfs "$umpathd" "$ctl" "$fio"
lab_show="umpath|log:|fio|ublk|BUG|Oops|panic|RIP"
lab_boot $((600 + (upgrades + kills) * 40)) 2
clean_fio() { chk "$1" "$2 fio exit 0 err= *0" "$2: fio verified with zero errors"; }

section uup
[ -s "$work/uup" ] || fail "uup: the node never got there"
kernel="$(grep -oE 'umpath-lab: kernel \S+' "$log" | head -1 | cut -d' ' -f3)"
for i in $(seq 1 "$upgrades"); do
  clean_fio uup "uup-$i"
  chk uup "uup $i: old agent exit 0, .* took over in [0-9.]+ s, device present, fio running yes" \
    "hand-over $i under fio: the old agent ends cleanly, the next takes the device over"
done
# Linux 6.15 and later offer QUIESCE_DEV: each hand-over quiesces the device and answers
# every request the old agent had, leaving none for user recovery to send again.
case "$kernel" in
  6.1[5-9]*|6.[2-9][0-9]*|[7-9].*)
    for i in $(seq 1 "$upgrades"); do
      chk uup "uup $i: stop: quiesced for the hand-over in [0-9]+ ms: every request it had is answered; 0 request\\(s\\) held" \
        "hand-over $i: the old agent quiesced the device and left no request to reissue"
    done ;;
  *)
    for i in $(seq 1 "$upgrades"); do
      chk uup "uup $i: stop: not quiesced; [0-9]+ request\\(s\\) held" "hand-over $i: held, as this kernel has no quiesce"
    done ;;
esac
chk uup "uup 1: .*umpathd.copy took over" "the odd rounds start the copy"
chk uup "uup 2: .*umpathd took over" "the even rounds start the original"
jchk uup "len(ev('head-exported', head='$H', to='/dev/ublkb0', reason='^taken over from the agent.s last run$')) == $upgrades" \
  "each new agent took the same device over"

section ukill
[ -s "$work/ukill" ] || fail "ukill: the node never got there (an oops panics it: kernel $kernel)"
for i in $(seq 1 "$kills"); do
  clean_fio ukill "ukill-$i"
  chk ukill "ukill $i: old agent exit killed, umpathd took over in [0-9.]+ s, device present, fio running yes" \
    "kill $i under fio: the restart takes the device over"
done
jchk ukill "len(ev('head-exported', head='$H', to='/dev/ublkb0', reason='^taken over from the agent.s last run$')) == $kills" \
  "each restart took the same device over"
clean_fio ukill ukill-after
chk ukill "ukill oopses 0" "no oops in the guest's log"

grep -hE "uup [0-9]+: |ukill [0-9]+: " "$work/uup" "$work/ukill" | sed 's/^umpath-lab: /lab: /'
echo "lab: upgrade test passed on $kernel: $upgrades hand-overs, $kills kills under fio verify, err=0"
