#!/usr/bin/env bash
# Issue 19 item 7: NVMe/TCP with TLS (a PSK by file reference). One boot of the lab node
# with the kernel's multipath off and the guest kernel's NVMe/TCP target
# (deploy/lab/nvmet_lib.sh) on a TLS-only port (port 5, 127.0.0.1:4424, addr_tsas
# tls1.3). The target's PSK is derived and put in the .nvme keyring by Debian 13's
# nvme-cli (nvme check-tls-key --insert), so the agent's own derivation is checked
# against another implementation by the handshake itself. tlshd (ktls-utils) runs in the
# node for both ends' handshakes, with trixie's loader and libraries
# (deploy/lab/fetch_tlshd.sh).
#  t1. umpathctl attach --tls-psk-file: the controller is live over TLS (sysfs tls_key,
#      and tls_configured_key where the kernel has it: the agent's key), fio verifies
#      through the exported head; the key is in no keyring the agent keeps; detach: the
#      controller and the agent's key are gone.
#  t2. a valid key that is not the target's: the handshake fails, the attach answers a
#      clear error, nothing stays connected, no key stays behind.
#  t3. a damaged key file (CRC): INVALID_ARGUMENT before any connect.
#  t4. no tlshd: TLS_UNSUPPORTED, saying so.
# Usage: tls_test.sh UMPATHD UMPATHCTL  (UMPATH_LAB_KERNEL=6.18 for the 6.18 kernel)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lab_init tls "$1" "$2"
H=nguid-ab0000000000000000000000000000f1
fio="$(lab_fio)"
trixie="$(bash "$here/fetch_tlshd.sh" 2>/dev/null | tail -1)"

# What the node gets besides the programs: trixie's tlshd, nvme-cli and keyctl with their
# libraries under /opt/trixie, tlshd's config, and the key files (mode 0600).
files="$work/files"
mkdir -p "$files/opt/trixie/usr/sbin" "$files/opt/trixie/usr/lib/x86_64-linux-gnu" "$files/lab"
cp -a "$trixie/usr/sbin/tlshd" "$trixie/usr/sbin/nvme" "$files/opt/trixie/usr/sbin/"
cp -a "$trixie"/usr/lib/x86_64-linux-gnu/*.so* "$files/opt/trixie/usr/lib/x86_64-linux-gnu/"
cat > "$files/lab/tlshd.conf" <<'CONF'
[debug]
loglevel=1
tls=0
nl=0

[authenticate]
keyrings=.nvme
CONF
# Two valid configured PSKs (hash 01: SHA-256, 32 bytes and their CRC-32): the target's
# and one it does not know; and the first with one base64 character changed.
python3 - "$files/lab" <<'PY'
import base64, struct, sys, zlib
d = sys.argv[1]
def key(b):
    return "NVMeTLSkey-1:01:" + base64.b64encode(b + struct.pack("<I", zlib.crc32(b))).decode() + ":"
good, wrong = key(bytes(range(32))), key(bytes(range(32, 64)))
bad = good[:20] + ("B" if good[20] == "A" else "A") + good[21:]
for name, text in (("psk-good", good), ("psk-wrong", wrong), ("psk-damaged", bad)):
    open(f"{d}/{name}", "w").write(text + "\n")
PY
chmod 600 "$files/lab"/psk-*

lab_after
cat >> "$work/after" <<'AFTER'
D=/dev/ublkb0
T=/opt/trixie
trixie() { $T/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $T/usr/lib/x86_64-linux-gnu "$@"; }
. /lab/nvmet.sh
# keys: the psk keys the reader may see (/proc/keys), as "serial:identity-prefix" words.
keys() { awk '$8 == "psk" { printf "%s:%s ", $1, $9 }' /proc/keys; }
# attach_tls FILE TAG: umpathctl attach to the TLS port with FILE; exit status, seconds
# and the error line as one marker.
attach_tls() {
  local t0=$(now) rc
  $C attach tcp 127.0.0.1 4424 $NVMET_NQN --tls-psk-file=$1 > /tmp/attach.out 2> /tmp/attach.err
  rc=$?
  echo "umpath-lab: $2 attach exit $rc in $(awk "BEGIN { print $(now) - $t0 }") s: $(tr '\n' ' ' < /tmp/attach.err)"
}
ctrls5() { for c in /sys/class/nvme/nvme*; do grep -q trsvcid=4424 $c/address 2>/dev/null && echo x; done | wc -l; }

nvmet_setup 64
echo "umpath-lab: kernel $(uname -r) multipath $(cat /sys/module/nvme_core/parameters/multipath)"
# The target's PSK, as nvme-cli on a Debian 13 target derives and inserts it.
trixie $T/usr/sbin/nvme check-tls-key -d "$(cat /lab/psk-good)" -n $NVMET_HOSTNQN -c $NVMET_NQN -I 1 --insert -k .nvme \
  2>&1 | sed 's/^/umpath-lab: target key: /'
# Port 5: TLS 1.3 only (the security type is set before the port is enabled).
p=$NVMET_CFG/ports/5
mkdir $p
echo tcp > $p/addr_trtype
echo ipv4 > $p/addr_adrfam
echo 127.0.0.1 > $p/addr_traddr
echo 4424 > $p/addr_trsvcid
echo tls1.3 > $p/addr_tsas || echo "umpath-lab: addr_tsas refused"
nvmet_ana 5 optimized
nvmet_port_up 5
echo "umpath-lab: tls port tsas=$(cat $p/addr_tsas) treq=$(cat $p/addr_treq)"
# Started directly (not through trixie()), so $tlshd is tlshd itself and t4 can stop it.
$T/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $T/usr/lib/x86_64-linux-gnu $T/usr/sbin/tlshd \
  -s -c /lab/tlshd.conf > /tmp/tlshd.log 2>&1 &
tlshd=$!
sleep 1
echo "umpath-lab: tlshd $(kill -0 $tlshd 2>/dev/null && echo running || echo exited)"
echo "umpath-lab: keys before: $(keys)"

( agent umpathd $U --workers=2 --export_all --kernel_controllers=$NVMET_NQN --kernel_poll_ms=500 \
    --ublk_user_recovery=false
  echo $pid > /tmp/umpathd.pid
  wait $pid
  rc=$?
  [ -e /tmp/stopping ] || { echo "umpath-lab: umpathd died, exit status $rc"; tail -40 /tmp/umpathd.err; }
  echo "umpath-lab: umpathd exit $rc" ) &
for i in $(seq 1 50); do [ -s /tmp/umpathd.pid ] && break; sleep 0.1; done
pid=$(cat /tmp/umpathd.pid)
for i in $(seq 1 100); do $C heads >/dev/null 2>&1 && break; sleep 0.1; done

begin t1
attach_tls /lab/psk-good t1
wait_paths 1
wait_dev
P=$(nvmet_ctrl 5)
k=/sys/class/nvme/$P
echo "umpath-lab: t1 ctrl $P state $(cat $k/state) tls_key=$(cat $k/tls_key 2>/dev/null || echo none) tls_configured_key=$(cat $k/tls_configured_key 2>/dev/null || echo none) tls_keyring=$(cat $k/tls_keyring 2>/dev/null || echo none)"
echo "umpath-lab: t1 keys: $(keys)"
jshow t1 head $H
verify t1 16M
echo "umpath-lab: t1 dmesg: $(dmesg | grep -iE 'tls|psk|handshake' | tail -5 | tr '\n' '|')"
$C detach $P; echo "umpath-lab: t1 detach exit $?"
wait_paths 0
sleep 1
echo "umpath-lab: t1 after detach: controllers on port 5 $(ctrls5), keys: $(keys)"
end t1

begin t2
attach_tls /lab/psk-wrong t2
sleep 1
echo "umpath-lab: t2 after: controllers on port 5 $(ctrls5), keys: $(keys)"
echo "umpath-lab: t2 dmesg: $(dmesg | grep -iE 'tls|psk|handshake|nvme' | tail -4 | tr '\n' '|')"
end t2

begin t3
attach_tls /lab/psk-damaged t3
end t3

begin t4
kill $tlshd; wait $tlshd 2>/dev/null
echo "umpath-lab: t4 tlshd $(kill -0 $tlshd 2>/dev/null && echo running || echo stopped)"
attach_tls /lab/psk-good t4
echo "umpath-lab: t4 after: controllers on port 5 $(ctrls5), keys: $(keys)"
end t4

touch /tmp/stopping
kill $pid
while kill -0 $pid 2>/dev/null; do sleep 0.1; done
echo "umpath-lab: tlshd log: $(grep -v '^$' /tmp/tlshd.log | tail -12 | tr '\n' '|')"
events /tmp/umpathd.err
logs /tmp/umpathd.err
AFTER
UMPATH_LAB_FILES="$files" lab_initramfs "$umpathd" "$ctl" "$fio"
lab_show="umpath|log:|fio|nvme|tls|error|Error"
lab_boot 900 0
grep -q "umpath-lab: umpathd died" "$log" && fail "umpathd died"

section t1
grep -q "umpath-lab: nvmet ready" "$log" || fail "the NVMe/TCP target is up"
grep -qE "umpath-lab: target key: .*[0-9a-f]{8}" "$log" || fail "nvme-cli put the target's PSK in .nvme"
grep -q "umpath-lab: tls port tsas=tls1.3" "$log" || fail "the target's port 5 takes TLS 1.3 only"
grep -q "umpath-lab: tlshd running" "$log" || fail "tlshd runs in the node"
chk t1 "t1 attach exit 0 " "umpathctl attach --tls-psk-file connects"
chk t1 "t1 ctrl nvme[0-9]+ state live tls_key=[0-9a-f]{8}" "the controller is live with a negotiated TLS key"
# The key the controller was given is the agent's, not the target's: another serial.
tkey="$(grep -oE 'target key: .*' "$log" | grep -oE '[0-9a-f]{8}' | head -1)"
ckey="$(grep -oE 'tls_configured_key=[0-9a-f]+' "$work/t1" | head -1 | cut -d= -f2)"
if [ -n "$ckey" ] && [ "$ckey" != none ]; then
  [ "$ckey" != "$tkey" ] || fail "t1: the controller's configured key is the agent's own, not the target's"
fi
n_t1="$(grep -oE 't1 keys: .*' "$work/t1" | sed 's/.*keys: //' | wc -w)"
[ "$n_t1" = 2 ] || fail "t1: while connected the agent's key is there beside the target's (saw $n_t1 keys)"
chk t1 "t1 fio exit 0 err= *0" "fio verified through the TLS path with zero errors"
chk t1 "t1 detach exit 0" "detach"
chk t1 "t1 after detach: controllers on port 5 0" "the TLS controller is gone after detach"
# Only the target's key stays: the agent's went with its controller.
n_after="$(grep -oE 't1 after detach: .*keys: .*' "$work/t1" | sed 's/.*keys: //' | wc -w)"
[ "$n_after" = 1 ] || fail "t1: after detach only the target's key is left (saw $n_after keys)"

section t2
chk t2 "t2 attach exit [1-9][0-9]* .*(TLS handshake failed|a failed TLS handshake).*CONNECT_FAILED" "a key the target does not know is refused, saying the handshake failed"
chk t2 "t2 after: controllers on port 5 0" "nothing stays connected after a failed handshake"
n_t2="$(grep -oE 't2 after: .*keys: .*' "$work/t2" | sed 's/.*keys: //' | wc -w)"
[ "$n_t2" = 1 ] || fail "t2: a failed connect leaves no key behind (saw $n_t2 keys)"

section t3
chk t3 "t3 attach exit [1-9][0-9]* .*CRC-32.*INVALID_VALUE" "a damaged key file is refused with its reason"

section t4
chk t4 "t4 attach exit [1-9][0-9]* .*no TLS handshake daemon.*TLS_UNSUPPORTED" "without tlshd the attach says so"
chk t4 "t4 after: controllers on port 5 0" "nothing connected without tlshd"
grep -E "umpath-lab: (t[1-4] (attach|ctrl|keys|after|fio|dmesg)|target key|tls port|kernel )" "$log" | sed 's/^umpath-lab: /lab: /'
echo "lab: tls passed"
