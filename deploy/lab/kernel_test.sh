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
#      controller): clear errors, nothing disturbed;
#  k8. a new agent without --kernel_connect: both ports come back, attached again from
#      what the last agent had attached through the API; a detach forgets one.
#  kf. per-connect fabrics options (issue 19 item 7): a second guest interface (dummy0,
#      10.77.0.1) where the target listens too (port 3); umpathctl attach --host-traddr
#      with ctrl_loss_tmo, reconnect_delay and keep_alive_tmo; the kernel controller's
#      sysfs shows them; attaching again is OK, a bad option INVALID_ARGUMENT.
#  k9. a fabrics controller someone else connected (another CSI driver, nvme-cli):
#      attached through the API (--kernel_attachable), then detached: it is let go and
#      stays connected (issue 17: a detach disconnects only what the agent connected).
# Usage: kernel_test.sh UMPATHD UMPATHCTL [BUF]  (BUF: the buf binary itself, for the guest)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init kernel "$1" "$2"
H=nguid-ab0000000000000000000000000000f1
fio="$(lab_fio)"
buf="$(readlink -f "${3:-$here/../../build/tools/node_modules/@bufbuild/buf-linux-x64/bin/buf}")"
[ -x "$buf" ] || { echo "FAIL: no buf at $buf (deploy/dev/install-deps.sh installs it)"; exit 1; }

lab_after
cat >> "$work/after" <<AFTER
BUF=$buf
D=/dev/ublkb0
. /lab/nvmet.sh
bcurl() {  # bcurl METHOD JSON: the call's answer as one "umpath-json bcurl-METHOD" line
  \$BUF curl --protocol grpc --unix-socket \$SOCK -d "\$2" http://localhost/umpath.v1.MultipathControl/\$1 > /tmp/bcurl.json
  rc=\$?
  onejson < /tmp/bcurl.json | sed "s/^/umpath-json bcurl-\$1 /"
  return \$rc
}
attach_port2() { bcurl AttachController "{\"transport\": \"tcp\", \"address\": \"127.0.0.1\", \"service\": \"4421\", \"subsystem_nqn\": \"\$NVMET_NQN\"}"; }
# ports: P1 and P2, the kernel controllers of port 1 and port 2, as a marker for the host.
ports() { P1=\$(nvmet_ctrl 1); P2=\$(nvmet_ctrl 2); echo "umpath-lab: ports P1=\$P1 P2=\$P2"; }

nvmet_setup 128
echo "umpath-lab: kernel multipath \$(cat /sys/module/nvme_core/parameters/multipath)"
# An agent that dies says how at once (and fio fails rather than waiting for it: no
# user recovery here).
( agent umpathd \$U --workers=2 --export_all \
    --kernel_connect=tcp:127.0.0.1:4420:\$NVMET_NQN --kernel_controllers=\$NVMET_NQN \
    --kernel_poll_ms=500 --fabrics_ctrl_loss_tmo_secs=6 --fabrics_reconnect_delay_secs=1 \
    --ublk_user_recovery=false
  echo \$pid > /tmp/umpathd.pid
  wait \$pid
  rc=\$?
  [ -e /tmp/stopping ] || { echo "umpath-lab: umpathd died, exit status \$rc"; tail -40 /tmp/umpathd.err; dmesg | grep -vE 'nvme|I/O error' | tail -20; }
  echo "umpath-lab: umpathd exit \$rc" ) &
for i in \$(seq 1 50); do [ -s /tmp/umpathd.pid ] && break; sleep 0.1; done
pid=\$(cat /tmp/umpathd.pid)
watch_start /tmp/watch.json
wait_paths 1

begin k0
attach_port2
echo "umpath-lab: k0 buf curl attach exit \$?"
wait_paths 2; wait_dev
ports
echo "umpath-lab: k0 ng devices \$(ls /dev | grep '^ng' | tr '\n' ' ')"
jshow controllers controllers
jshow head head \$H
end k0

begin k1
policies k1 16M
\$C set-policy \$H numa >/dev/null
end k1

begin k2
verify_bg k2 64M
jshow before head \$H
nvmet_ana 1 inaccessible
wait_pfield \$P1 ana_state '^ANA_STATE_INACCESSIBLE\$'
sleep 2
jshow inaccessible head \$H
wait \$f
nvmet_ana 1 optimized
wait_pfield \$P1 ana_state '^ANA_STATE_OPTIMIZED\$'
wait_pfield \$P1 selectable '^true\$'
jshow optimized head \$H
verify k2-back 8M
jshow failback head \$H
end k2

begin k3
nvmet_ana 2 inaccessible
nvmet_ana 1 change
wait_pfield \$P1 ana_state '^ANA_STATE_CHANGE\$'
wait_pfield \$P2 ana_state '^ANA_STATE_INACCESSIBLE\$'
verify_bg k3 4M
jshow change head \$H
echo "umpath-lab: k3 during CHANGE: fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
t0=\$(now)
nvmet_ana 1 optimized
wait \$f
echo "umpath-lab: k3 settled at \$t0, fio done at \$(now)"
nvmet_ana 2 non-optimized
end k3

begin k4
jshow p1 controller \$P1
t0=\$(now)
nvmet_ana 1 change
for i in \$(seq 1 600); do grep -q '"to": "reset-requested"' /tmp/watch.json && break; sleep 0.1; done
t1=\$(now)
echo "umpath-lab: k4 CHANGE at \$t0, reset requested at \$t1"
nvmet_ana 1 optimized
wait_pfield \$P1 controller_state '^CONTROLLER_STATE_LIVE\$'
wait_pfield \$P1 ana_state '^ANA_STATE_OPTIMIZED\$'
verify k4 8M
end k4

begin k5
\$C set-delayed-removal \$H 40 >/dev/null
verify_bg k5 48M
nvmet_port_down 1
wait_pfield \$P1 controller_state '^CONTROLLER_STATE_(RESETTING|CONNECTING)\$'
jshow port1-down head \$H
nvmet_port_down 2
wait_pfield \$P2 controller_state '^CONTROLLER_STATE_(RESETTING|CONNECTING)\$'
jshow port2-down head \$H
echo "umpath-lab: k5 port 2 down: fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
wait_paths 0
jshow lost heads
echo "umpath-lab: k5 every controller lost: controllers \$(ls /sys/class/nvme | wc -l), device \$(dev), fio running \$(kill -0 \$f 2>/dev/null && echo yes || echo no)"
sleep 2
nvmet_port_up 1; nvmet_port_up 2
\$C attach tcp 127.0.0.1 4421 \$NVMET_NQN
echo "umpath-lab: k5 umpathctl attach exit \$?"
wait_paths 2
wait \$f
ports
echo "umpath-lab: k5 after: device \$(dev)"
jshow after heads
end k5

begin k6
\$C set-delayed-removal \$H 3 >/dev/null
\$F --name=k6 --filename=\$D --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=8 \
  --time_based --runtime=90 > /tmp/k6.fio 2>&1 &
f=\$!
sleep 2
nvmet_port_down 1; nvmet_port_down 2
wait \$f; fe=\$?
for i in \$(seq 1 100); do [ -b \$D ] || break; sleep 0.1; done
echo "umpath-lab: k6 fio exit \$fe \$(grep -oE 'err= *[0-9]+' /tmp/k6.fio | head -1); device \$(dev)"
nvmet_port_up 1; nvmet_port_up 2
wait_paths 1; wait_dev
\$C attach tcp 127.0.0.1 4421 \$NVMET_NQN >/dev/null
wait_paths 2
ports
verify k6-new 8M
end k6

begin k7
verify_bg k7 96M
\$C detach \$P2; echo "umpath-lab: k7 umpathctl detach exit \$? P2 in sysfs \$( [ -e /sys/class/nvme/\$P2 ] && echo yes || echo no)"
jshow detached head \$H
attach_port2
echo "umpath-lab: k7 buf curl attach exit \$?"
wait_paths 2
P2=\$(nvmet_ctrl 2)
bcurl DetachController "{\"name\": \"controllers/\$P2\"}"
echo "umpath-lab: k7 buf curl detach exit \$?"
jshow bcurl-detached head \$H
\$C attach tcp 127.0.0.1 4421 \$NVMET_NQN; echo "umpath-lab: k7 umpathctl attach exit \$?"
\$C attach tcp 127.0.0.1 4421 \$NVMET_NQN; echo "umpath-lab: k7 attach again exit \$?"
jshow attached-again head \$H
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
echo "umpath-lab: k7 configured detach: P1 in sysfs \$( [ -e /sys/class/nvme/\$P1 ] && echo yes || echo no), port 1 controller \$(nvmet_ctrl 1)"
jshow configured-detached head \$H
\$C attach tcp 127.0.0.1 4420 \$NVMET_NQN >/dev/null; echo "umpath-lab: k7 configured attach again exit \$?"
wait_paths 2
wait \$f
echo "umpath-lab: k7 after: controllers \$(ls /sys/class/nvme | tr '\n' ' ')"
jshow after head \$H
end k7

begin kf
# A second guest interface (a dummy NIC, its own address), the target listening there too
# (port 3), and one more path connected from that address only, with its own timeouts.
tkf=\$(now)
ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy
ip link set dummy0 up
ip addr add 10.77.0.1/24 dev dummy0
nvmet_port_add 3 10.77.0.1 non-optimized
t0=\$(now)
\$C attach tcp 10.77.0.1 4422 \$NVMET_NQN --host-traddr=10.77.0.1 --ctrl-loss-tmo=30 --reconnect-delay=3 \
  --keep-alive-tmo=7
rc=\$?
echo "umpath-lab: kf umpathctl attach exit \$rc in \$(awk "BEGIN { print \$(now) - \$t0 }") s"
wait_paths 3
P3=\$(nvmet_ctrl 3)
k=/sys/class/nvme/\$P3
echo "umpath-lab: kf sysfs \$P3 address=\$(cat \$k/address) ctrl_loss_tmo=\$(cat \$k/ctrl_loss_tmo) reconnect_delay=\$(cat \$k/reconnect_delay) kato=\$(cat \$k/kato 2>/dev/null || echo none)"
\$C attach tcp 10.77.0.1 4422 \$NVMET_NQN --host-traddr=10.77.0.1 --ctrl-loss-tmo=30
echo "umpath-lab: kf attach again exit \$?, controllers on port 3: \$(for c in /sys/class/nvme/nvme*; do grep -q trsvcid=4422 \$c/address && echo x; done | wc -l)"
\$C attach tcp 10.77.0.1 4422 \$NVMET_NQN --reconnect-delay=0; echo "umpath-lab: kf bad-option exit \$?"
\$C attach kernel \$P3 --ctrl-loss-tmo=5; echo "umpath-lab: kf kernel-option exit \$?"
jshow with-p3 head \$H
\$C detach \$P3; echo "umpath-lab: kf detach exit \$?, P3 in sysfs \$( [ -e \$k ] && echo yes || echo no)"
wait_paths 2
echo "umpath-lab: kf section took \$(awk "BEGIN { print \$(now) - \$tkf }") s"
end kf

touch /tmp/stopping
kill \$pid
while kill -0 \$pid 2>/dev/null; do sleep 0.1; done
sleep 0.5
watch_show /tmp/watch.json
events /tmp/umpathd.err
logs /tmp/umpathd.err

begin k8
echo "umpath-lab: k8 remembered: \$(grep -c transport=tcp /tmp/heads.umpathd.controllers)"
LAB_STATE=umpathd agent k8 \$U --workers=2 --ublk=false \
  --kernel_poll_ms=500 --fabrics_ctrl_loss_tmo_secs=6 --fabrics_reconnect_delay_secs=1
wait_paths 2
for i in \$(seq 1 100); do grep -q 'remembered controllers:' /tmp/k8.err && break; sleep 0.1; done
echo "umpath-lab: k8 \$(grep -o 'remembered controllers: .*' /tmp/k8.err)"
jshow restarted head \$H
P2=\$(nvmet_ctrl 2)
\$C detach \$P2; echo "umpath-lab: k8 detach exit \$?, remembered \$(grep -c transport=tcp /tmp/heads.umpathd.controllers)"
\$C detach \$P2; echo "umpath-lab: k8 detach again exit \$?"
kill \$pid; wait \$pid
echo "umpath-lab: k8 stop exit \$?"
grep 'attached again' /tmp/k8.err | sed 's/^/umpath-lab: k8 log: /'
end k8

begin k9
for c in /sys/class/nvme/nvme*; do [ -e \$c/delete_controller ] && echo 1 > \$c/delete_controller; done
nvmet_connect 2
X=\$(nvmet_ctrl 2)
echo "umpath-lab: k9 foreign controller X=\$X"
LAB_STATE=k9 agent k9 \$U --workers=1 --ublk=false --kernel_poll_ms=500 --kernel_attachable=\$NVMET_NQN
for i in \$(seq 1 100); do \$C heads >/dev/null 2>&1 && break; sleep 0.1; done
\$C attach kernel \$X; echo "umpath-lab: k9 attach exit \$?"
wait_paths 1
echo "umpath-lab: k9 attached: paths \$(npaths)"
\$C detach \$X; echo "umpath-lab: k9 detach exit \$?"
wait_paths 0
echo "umpath-lab: k9 after detach: paths \$(npaths), X in sysfs \$( [ -e /sys/class/nvme/\$X ] && echo yes || echo no), state \$(cat /sys/class/nvme/\$X/state 2>/dev/null)"
kill \$pid; wait \$pid
echo "umpath-lab: k9 stop exit \$?, X in sysfs \$( [ -e /sys/class/nvme/\$X ] && echo yes || echo no)"
end k9
AFTER
lab_initramfs "$umpathd" "$ctl" "$fio" "$buf"
lab_show="umpath|log:|fio|nvme|error|Error"
lab_boot 1500 0
clean_fio() { chk "$1" "$2 fio exit 0 err= *0" "$2: fio verified with zero errors"; }
grep -q "umpath-lab: umpathd died" "$log" && fail "umpathd died"
# ports SECTION: P1 and P2 as the section's last ports marker names them.
ports() {
  local line; line="$(grep -oE "ports P1=nvme[0-9]+ P2=nvme[0-9]+" "$work/$1" | tail -1)" || fail "$1: no ports marker"
  P1="${line#*P1=}"; P1="${P1%% *}"; P2="${line##*P2=}"
}
# state DOC PATH: the check's expression for a path's controller state, ANA state, selectable.
state() { echo "[path(head(J['$1']), '$2')[k] for k in ('controller_state', 'ana_state', 'selectable')]"; }

section k0
ports k0
grep -q "umpath-lab: nvmet ready" "$log" || fail "the NVMe/TCP target is up"
grep -q "kernel multipath N" "$log" || fail "the guest's native multipath is off"
chk k0 "buf curl attach exit 0" "buf curl attaches a fabrics controller"
jchk k0 "J['bcurl-AttachController']['controller']['name'] == 'controllers/$P2'" "buf curl attach answers port 2's controller"
chk k0 "ng devices ng[0-9]+n1 ng[0-9]+n1" "two controllers, each with its own ng device"
jchk k0 "sorted(ctrls(J['controllers'])) == sorted(['$P1', '$P2']) and 'trsvcid=4420' in ctrl(J['controllers'], '$P1')['address']" \
  "both ports' controllers, named by the kernel"
jchk k0 "$(state head "$P1") == ['CONTROLLER_STATE_LIVE', 'ANA_STATE_OPTIMIZED', True]" "port 1's path is live and optimized"
jchk k0 "$(state head "$P2") == ['CONTROLLER_STATE_LIVE', 'ANA_STATE_NON_OPTIMIZED', True]" "port 2's path is live and non-optimized"

section k1
for p in numa round-robin queue-depth; do
  clean_fio k1 "k1-$p"
  jchk k1 "grew(J['$p-before'], J['$p-after'], '$P1') and not grew(J['$p-before'], J['$p-after'], '$P2')" "$p uses port 1 only"
done

section k2
clean_fio k2 k2
jchk k2 "grew(J['before'], J['inaccessible'], '$P2')" "I/O moved to port 2"
jchk k2 "path(head(J['inaccessible']), '$P1')['ana_state'] == 'ANA_STATE_INACCESSIBLE'" "port 1's path is inaccessible"
clean_fio k2 k2-back
jchk k2 "grew(J['optimized'], J['failback'], '$P1') and not grew(J['optimized'], J['failback'], '$P2')" "I/O failed back to port 1"

section k3
jchk k3 "n(head(J['change'])['waiting_ios']) >= 1" "I/O waits while the group is in CHANGE"
chk k3 "during CHANGE: fio running yes" "fio waits too"
clean_fio k3 k3

section k4
jchk k4 "J['p1']['controller']['anatt_secs'] >= 1" "the target's ANATT"
jchk s.log "wev('controller-state-changed', controller='$P1', to='reset-requested', reason='2 x ANATT')" "k4: the reset was requested after 2 x ANATT"
jchk s.log "wev('controller-state-changed', controller='$P1', to='resetting', reason='^reset requested$')" "k4: the kernel controller was reset"
clean_fio k4 k4

section k5
jchk k5 "path(head(J['port1-down']), '$P1')['controller_state'] in ('CONTROLLER_STATE_RESETTING', 'CONTROLLER_STATE_CONNECTING')" \
  "port 1's controller reconnects"
jchk k5 "path(head(J['port2-down']), '$P2')['controller_state'] in ('CONTROLLER_STATE_RESETTING', 'CONTROLLER_STATE_CONNECTING')" \
  "port 2's controller reconnects"
chk k5 "port 2 down: fio running yes" "I/O waits while every controller reconnects"
chk k5 "every controller lost: controllers 0, device present, fio running yes" \
  "lost controllers: the head waits out its window with its device"
jchk k5 "[head(J['lost'], '$H').get(k) for k in ('live_paths', 'delayed_removal_secs', 'removal_pending', 'export_device')] == [0, 40, True, '/dev/ublkb0'] and paths(head(J['lost'], '$H')) == []" \
  "removal pending, still exported"
chk k5 "umpathctl attach exit 0" "umpathctl attaches a fabrics controller"
clean_fio k5 k5
jchk k5 "len(paths(head(J['after'], '$H'))) == 2 and not head(J['after'], '$H')['removal_pending']" "the same head, its removal cancelled"
chk k5 "k5 after: device present" "and its device"
jchk s.log "wev('removal-cancelled', head='$H')" "k5: the removal was cancelled"

section k6
chk k6 "k6 fio exit [1-9] err= *[1-9][0-9]*; device gone" "past the window fio fails and the device goes"
jchk s.log "wev('head-removed', head='$H', reason='delayed removal expired')" "k6: the head was removed when its window expired"
clean_fio k6 k6-new

section k7
ports k6
chk k7 "umpathctl detach exit 0 P2 in sysfs no" "umpathctl detach disconnects the controller"
jchk k7 "paths(head(J['detached'])) == ['$P1']" "one path after umpathctl detach"
chk k7 "buf curl attach exit 0" "buf curl attach"
jchk k7 "J['bcurl-AttachController']['controller']['name'].startswith('controllers/nvme')" "buf curl attach answers the controller"
chk k7 "buf curl detach exit 0" "buf curl detach"
jchk k7 "paths(head(J['bcurl-detached'])) == ['$P1']" "one path after buf curl detach"
chk k7 "umpathctl attach exit 0" "attach again"
chk k7 "attach again exit 0" "attaching what is attached succeeds"
jchk k7 "len(paths(head(J['attached-again']))) == 2" "two paths after attaching twice"
chk k7 "UNAVAILABLE: could not connect to tcp 127.0.0.1:4999" "an unreachable address says so"
chk k7 "unreachable exit 14" "UNAVAILABLE's exit status"
chk k7 "could not connect to tcp 127.0.0.1:4420 nqn.2026-01.io.umpath:nothere" "an unknown NQN says so"
chk k7 "unknown-nqn exit (9|14|5)" "an unknown NQN fails"
chk k7 "INVALID_ARGUMENT: address \"300.1.1.1\" is not an IPv4 or IPv6 address" "a malformed address"
chk k7 "malformed exit 3" "INVALID_ARGUMENT's exit status"
chk k7 "service \"http\" is not a port" "a malformed port"
chk k7 "NOT_FOUND: no kernel NVMe controller nvme99" "an unknown controller"
chk k7 "unknown-detach exit 0" "detaching an unknown controller is done already (CSI: removing what is gone is OK)"
chk k7 "configured detach: P1 in sysfs no, port 1 controller \$" "a configured controller detached through the API stays detached"
jchk k7 "len(paths(head(J['configured-detached']))) == 1 and '$P1' not in paths(head(J['configured-detached']))" \
  "its path stays gone"
chk k7 "configured attach again exit 0" "and comes back by an attach"
clean_fio k7 k7
jchk k7 "len(paths(head(J['after']))) == 2" "nothing else disturbed"
grep -q "umpath-lab: umpathd exit 0" "$log" || fail "umpathd stopped cleanly"

section kf
chk kf "kf umpathctl attach exit 0" "umpathctl attaches a path over the second interface (--host-traddr)"
chk kf "kf sysfs nvme[0-9]+ address=traddr=10.77.0.1,trsvcid=4422,host_traddr=10.77.0.1" \
  "the kernel controller connects from the second interface's address"
chk kf "kf sysfs .* ctrl_loss_tmo=30 reconnect_delay=3 kato=7\$" "the kernel controller has the attach's timeouts"
chk kf "kf attach again exit 0, controllers on port 3: 1" "attaching it again is OK and connects nothing more"
chk kf "INVALID_ARGUMENT: reconnect_delay_secs 0 is out of range \\(1..86400 seconds\\)" "a bad option names its range"
chk kf "kf bad-option exit 3" "a bad option is INVALID_ARGUMENT"
chk kf "kf kernel-option exit 3" "an option with transport kernel is INVALID_ARGUMENT"
jchk kf "len(paths(head(J['with-p3']))) == 3" "the head has the third path"
chk kf "kf detach exit 0, P3 in sysfs no" "and it is detached (disconnected)"
grep -E "umpath-lab: kf (sysfs|umpathctl attach|section took)" "$log" | sed 's/^/lab: /'

section k8
chk k8 "k8 remembered: 2" "both ports, attached through the API, are remembered"
chk k8 "k8 remembered controllers: 2 attached again, 0 not" "a new agent (no --kernel_connect, no claims) attaches them again"
jchk k8 "len(paths(head(J['restarted']))) == 2" "the head has both paths again"
chk k8 "k8 detach exit 0, remembered 1" "a detach forgets the controller"
chk k8 "k8 detach again exit 0" "detaching it again is OK (it is neither attached nor remembered: done already)"
chk k8 "k8 stop exit 0" "a clean stop"

section k9
chk k9 "k9 attach exit 0" "a controller someone else connected is attached through the API"
chk k9 "k9 attached: paths 1" "it is a path"
chk k9 "k9 detach exit 0" "and detached"
chk k9 "k9 after detach: paths 0, X in sysfs yes, state live" "a detach lets it go and leaves it connected (not the agent's to disconnect)"
chk k9 "k9 stop exit 0, X in sysfs yes" "and the agent's stop leaves it too"
grep -E "umpath-lab: k[0-9] " "$log" | grep -E "fio exit|settled|reset requested" | sed 's/^/lab: /'
echo "lab: kernel test passed"
