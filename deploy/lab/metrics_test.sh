#!/usr/bin/env bash
# CTest (label lab), issue 8: umpathd's metrics end to end. The lab node (kernel backend
# over the guest's NVMe/TCP target, two paths, the head exported with fio running on it)
# serves --metrics_address=0.0.0.0:9810, forwarded to a loopback port of the host. There:
#  m1. promtool check metrics on a live scrape; the series of both paths, the head, the
#      controllers and the agent;
#  m2. a real Prometheus (Debian's package, on loopback) scrapes it, and every query of
#      the alert rules and of the dashboard is evaluated without error and with the
#      expected series, every per-head panel (the dashboard's Head I/O row) showing the
#      head under fio, and UmpathdDown quiet (deploy/prometheus/e2e_check.py);
#  m3. a path detached (umpathctl in the node): its series are gone from the next scrape,
#      and the RPC is counted;
#  m4. (issue 20, before m3) what the application saw, per head: under fio the head's
#      umpath_head_io_total grows; port 1 (the optimized path, fio's) goes down and comes
#      back: the I/O it held fails over (umpath_head_requeued_total grows) and not one
#      I/O error reaches the application (umpath_head_io_errors_total stays 0 for every
#      reason), the promise "a short outage costs no I/O error".
# The host tells the node when to move on through a second forwarded port (nc in the
# node), so nothing waits on a clock.
# Usage: metrics_test.sh UMPATHD UMPATHCTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init metrics "$1" "$2"
fio="$(lab_fio)"
prom="$(bash "$here/../prometheus/install_prometheus.sh")"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
hp="$(free_port)"; hc="$(free_port)"; hg="$(free_port)"
H=nguid-ab0000000000000000000000000000f1

lab_after
cat >> "$work/after" <<AFTER
. /lab/nvmet.sh
nvmet_setup 64
agent umpathd \$U --workers=2 --export_all \
  --kernel_connect=tcp:127.0.0.1:4420:\$NVMET_NQN,tcp:127.0.0.1:4421:\$NVMET_NQN --kernel_poll_ms=500 \
  --fabrics_reconnect_delay_secs=1 --metrics_address=0.0.0.0:9810
wait_paths 2
for i in \$(seq 1 300); do [ -b /dev/ublkb0 ] && break; sleep 0.1; done
\$F --name=load --filename=/dev/ublkb0 --ioengine=io_uring --direct=1 --rw=randrw --bs=4k \
  --iodepth=4 --rate_iops=100 --time_based --runtime=900 > /tmp/load.fio 2>&1 &
f=\$!
sleep 3
P1=\$(nvmet_ctrl 1); P2=\$(nvmet_ctrl 2)
echo "umpath-lab: metrics ready P1=\$P1 P2=\$P2"
nc -l -p 7000 > /tmp/cmd0
echo "umpath-lab: host says \$(cat /tmp/cmd0)"
nvmet_port_down 1
wait_pfield \$P1 controller_state '^CONTROLLER_STATE_(RESETTING|CONNECTING)\$'
echo "umpath-lab: port 1 down, \$P1 \$(pfield \$P1 controller_state)"
sleep 2
nvmet_port_up 1
wait_pfield \$P1 controller_state '^CONTROLLER_STATE_LIVE\$'
wait_pfield \$P1 selectable '^true\$'
sleep 2
echo "umpath-lab: port 1 back, \$P1 \$(pfield \$P1 controller_state) selectable \$(pfield \$P1 selectable)"
nc -l -p 7000 > /tmp/cmd1
echo "umpath-lab: host says \$(cat /tmp/cmd1)"
\$C detach \$P2
wait_paths 1
echo "umpath-lab: detached \$P2, paths \$(npaths)"
nc -l -p 7000 > /tmp/cmd2
echo "umpath-lab: host says \$(cat /tmp/cmd2)"
kill \$f; wait \$f
kill \$pid; wait \$pid
echo "umpath-lab: umpathd exit \$?"
grep -E "^umpathd: (serving metrics|rpc-error|io-errors)" /tmp/umpathd.err | sed 's/^/log: /'
AFTER
lab_initramfs "$umpathd" "$ctl" "$fio"
UMPATH_LAB_HOSTFWD="hostfwd=tcp:127.0.0.1:$hp-:9810,hostfwd=tcp:127.0.0.1:$hc-:7000" lab_start 900 0 "$hg"
lab_show="umpath|log:|metrics"
until_log() {  # until_log REGEX SECONDS
  for _ in $(seq 1 $(($2 * 2))); do
    grep -qE "$1" "$log" 2>/dev/null && return 0
    kill -0 "$qemu" 2>/dev/null || break
    sleep 0.5
  done
  tr -d '\r' < "$log" > "$work/s.log"; log="$work/s.log"; fail "the node never said: $1"
}
# tell WORD: through the forwarded port to nc in the node (retried until it listens).
tell() {
  for _ in $(seq 1 60); do
    python3 - "$hc" "$1" <<'PY' && return 0
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall((sys.argv[2] + "\n").encode())
s.shutdown(socket.SHUT_WR)
# slirp accepts at once; a guest that is not listening resets the connection.
sys.exit(0 if s.recv(1) == b"" else 1)
PY
    sleep 1
  done
  fail "the node did not take \"$1\""
}
scrape() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:" + sys.argv[1] + "/metrics", timeout=10).read().decode())' "$hp"; }
series() { grep -v '^#' "$1" | grep -cF -- "$2" || true; }

until_log "umpath-lab: metrics ready" 600
line="$(tr -d '\r' < "$log" | grep -oE 'metrics ready P1=nvme[0-9]+ P2=nvme[0-9]+')"
P1="${line#*P1=}"; P1="${P1%% *}"; P2="${line##*P2=}"
echo "lab: paths $P1 (port 1, optimized) and $P2 (port 2, non-optimized); metrics on 127.0.0.1:$hp"

# m1
scrape > "$work/m1.txt"
"$prom/promtool" check metrics < "$work/m1.txt" || fail "m1: promtool check metrics on a live scrape"
for p in "$P1" "$P2"; do
  n="$(series "$work/m1.txt" "path=\"$p\"")"
  [ "$n" -le 15 ] && [ "$n" -ge 15 ] || fail "m1: $p has $n series (15 expected)"
done
grep -qE "^umpath_path_ana_state\{head=\"$H\",path=\"$P1\",state=\"optimized\"\} 1$" "$work/m1.txt" || fail "m1: $P1 optimized"
grep -qE "^umpath_path_ana_state\{head=\"$H\",path=\"$P2\",state=\"non_optimized\"\} 1$" "$work/m1.txt" || fail "m1: $P2 non-optimized"
grep -qE "^umpath_controller_state\{controller=\"$P1\",state=\"live\"\} 1$" "$work/m1.txt" || fail "m1: $P1 live"
grep -qE "^umpath_head_paths\{head=\"$H\"\} 2$" "$work/m1.txt" || fail "m1: the head's two paths"
grep -qE "^umpath_path_io_latency_seconds_count\{head=\"$H\",path=\"$P1\"\} [1-9]" "$work/m1.txt" || fail "m1: fio's I/O on $P1"
# The fast-fail timeout (none set: 0) and state (paths selectable: 0) the alert reads.
grep -qE "^umpath_head_io_fail_timeout_seconds\{head=\"$H\"\} 0$" "$work/m1.txt" || fail "m1: the head's fast-fail timeout"
grep -qE "^umpath_head_failing_fast\{head=\"$H\"\} 0$" "$work/m1.txt" || fail "m1: the head is not failing fast"
echo "lab: m1: promtool check metrics clean; $(grep -vc '^#' "$work/m1.txt") series, 15 a path; $(grep -E "^umpath_path_io_latency_seconds_count\{head=\"$H\",path=\"$P1\"\}" "$work/m1.txt")"

# m2
python3 "$here/../prometheus/e2e_check.py" "127.0.0.1:$hp" --expect-head "$H" \
  --expect-path "$P1" --expect-path "$P2=non_optimized" > "$work/m2.txt" 2>&1 || { cat "$work/m2.txt"; fail "m2: a real Prometheus"; }
grep -F ' shows the head (' "$work/m2.txt" | cut -c6- | sed 's/^/lab: m2: /'
tail -n 3 "$work/m2.txt" | sed 's/^/lab: m2: /'

# m4 (before m3, which takes port 2's path away)
hv() {  # hv FILE SERIES: the value of one series, 0 when absent
  awk -v k="$2" '$1 == k { v = $2 } END { print v == "" ? 0 : v }' "$1"
}
errors_sum() { grep -E "^umpath_head_io_errors_total\{head=\"$H\"," "$1" | awk '{ s += $2 } END { print s + 0 }'; }
io_sum() { grep -E "^umpath_head_io_total\{head=\"$H\"," "$1" | awk '{ s += $2 } END { print s + 0 }'; }
grep -qE "^umpath_head_info\{head=\"$H\",nguid=\"ab0000000000000000000000000000f1\",.*export_device=\"/dev/ublkb0\",volume=\"\"\} 1$" "$work/m1.txt" ||
  fail "m4: umpath_head_info of the head"
[ "$(grep -c "^umpath_head_io_errors_total{head=\"$H\"," "$work/m1.txt")" = 5 ] || fail "m4: five error reasons"
scrape > "$work/m4a.txt"
sleep 3
scrape > "$work/m4b.txt"
[ "$(io_sum "$work/m4b.txt")" -gt "$(io_sum "$work/m4a.txt")" ] || fail "m4: umpath_head_io_total grows under fio"
tell outage
until_log "umpath-lab: port 1 back" 120
scrape > "$work/m4c.txt"
rq="umpath_head_requeued_total{head=\"$H\"}"
np="umpath_head_no_path_seconds_total{head=\"$H\"}"
lat="umpath_head_io_latency_seconds_count{head=\"$H\"}"
for f in m4a m4b m4c; do
  echo "lab: m4: $f: io_total $(io_sum "$work/$f.txt") (read $(hv "$work/$f.txt" "umpath_head_io_total{head=\"$H\",op=\"read\"}"), write $(hv "$work/$f.txt" "umpath_head_io_total{head=\"$H\",op=\"write\"}")), requeued $(hv "$work/$f.txt" "$rq"), io_errors $(errors_sum "$work/$f.txt"), no_path_seconds $(hv "$work/$f.txt" "$np"), latency count $(hv "$work/$f.txt" "$lat"), P1 failovers $(hv "$work/$f.txt" "umpath_path_failovers_total{head=\"$H\",path=\"$P1\"}")"
done
grep -E "^umpath_head_io_latency_seconds_bucket\{head=\"$H\"" "$work/m4c.txt" | sed 's/^/lab: m4: /'
[ "$(io_sum "$work/m4c.txt")" -gt "$(io_sum "$work/m4b.txt")" ] || fail "m4: umpath_head_io_total grows across the outage"
awk -v a="$(hv "$work/m4c.txt" "$rq")" -v b="$(hv "$work/m4b.txt" "$rq")" 'BEGIN { exit !(a > b) }' ||
  fail "m4: umpath_head_requeued_total grows on the failover"
[ "$(errors_sum "$work/m4c.txt")" = 0 ] || fail "m4: an I/O error reached the application"
"$prom/promtool" check metrics < "$work/m4c.txt" || fail "m4: promtool check metrics"

# m3
tell detach
until_log "umpath-lab: detached $P2, paths 1" 120
scrape > "$work/m3.txt"
[ "$(series "$work/m3.txt" "path=\"$P2\"")" = 0 ] || fail "m3: the detached path's series are gone"
[ "$(series "$work/m3.txt" "controller=\"$P2\"")" = 0 ] || fail "m3: its controller's series are gone"
[ "$(series "$work/m3.txt" "path=\"$P1\"")" = 15 ] || fail "m3: the other path stays"
grep -qE "^umpath_head_paths\{head=\"$H\"\} 1$" "$work/m3.txt" || fail "m3: one path left"
grep -qE '^umpath_rpcs_total\{method="DetachController",code="OK"\} 1$' "$work/m3.txt" || fail "m3: the RPC is counted"
echo "lab: m3: $P2 detached: 0 series of it left, $(grep -E '^umpath_rpcs_total\{method="DetachController"' "$work/m3.txt")"
tell done
lab_wait
grep -q "umpath-lab: umpathd exit 0" "$log" || fail "umpathd stopped cleanly"
grep -E "^log: " "$log" | sed 's/^/lab: /' || true
echo "lab: metrics test passed"
