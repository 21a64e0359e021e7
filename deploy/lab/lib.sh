# Sourced by the lab tests and benchmarks: the host side's common start, boot and checks.
# lab_init NAME [UMPATHD [UMPATHCTL]]: sets $here (deploy/lab), $umpathd, $perf
# (umpath-perf, built beside umpathd), $ctl (UMPATHCTL, else UMPATHD), $work (a fresh
# directory, kept with UMPATH_LAB_KEEP=1), a trap that stops QEMU (its pid in $qemu) and
# cleans up, and makes sure the guest kernel and QEMU are fetched.
lab_init() {
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if [ -n "${2:-}" ]; then
    umpathd="$(readlink -f "$2")"
    perf="$(dirname "$umpathd")/umpath-perf"
    [ -x "$perf" ] || { echo "no umpath-perf beside $umpathd (build the umpath-perf target)"; exit 1; }
    ctl="$(readlink -f "${3:-$2}")"
  fi
  work="$(mktemp -d "/tmp/umpath-lab-$1-XXXXXX")"
  qemu=""
  trap '[ -n "$qemu" ] && kill "$qemu" 2>/dev/null; [ -n "${UMPATH_LAB_KEEP:-}" ] && echo "lab: kept $work" || rm -rf "$work"' EXIT
  bash "$here/fetch.sh" >/dev/null
}
# The PCI addresses of boot.sh's controllers c0 and c1 in the node.
A=0000:01:00.0
B=0000:02:00.0
# lab_after: starts $work/after, the test's step in the node (the test appends to it):
# a busybox sh script with U (umpathd), P (umpath-perf), C (umpathctl), F (fio, when the
# test set $fio), H (the test's $H), A and B set and /lab/lib.sh sourced.
lab_after() {
  cat > "$work/after" <<AFTER
#!/bin/sh
U=${umpathd:-} P=${perf:-} C=${ctl:-} F=${fio:-} H=${H:-} A=$A B=$B
. /lab/lib.sh
AFTER
}
# lab_fio: prints fio's path, installing Debian's fio first if it is missing.
lab_fio() {
  command -v fio >/dev/null || {
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y -qq --no-install-recommends fio >/dev/null
  }
  command -v fio
}
# lab_initramfs [PROGRAM...]: $work/initramfs.gz, the lab's init with $work/after (when
# the test wrote one) as the test's step and the programs (with their libraries) in it.
lab_initramfs() {
  local after=""; [ -e "$work/after" ] && after="$work/after"
  UMPATH_LAB_AFTER="$after" bash "$here/mkinitramfs.sh" "$work/initramfs.gz" \
    "$here/smoke_init.sh" "$@"
}
# lab_start TIMEOUT CONTROLLERS [HOSTPORT]: boots $work/initramfs.gz in the background
# (boot.sh; one TCG thread unless UMPATH_LAB_TCG_THREAD says otherwise) with a QMP socket
# the guest's requests are relayed to; $log is its serial log. lab_wait: until the node
# powered off (or the timeout ended it: $lab_rc is 124); then $log is the log without
# carriage returns, and fail/section/chk/jchk check it.
lab_start() {
  log="$work/serial.log"
  UMPATH_LAB_TCG_THREAD="${UMPATH_LAB_TCG_THREAD:-single}" timeout "$1" \
    bash "$here/boot.sh" "$work/initramfs.gz" "$2" "$log" "${3:-0}" "$work/qmp.sock" &
  qemu=$!
  bash "$here/qmp_relay.sh" "$log" "$work/qmp.sock" "$qemu" "$work/qmp.log" &
  relay=$!
}
lab_wait() {
  lab_rc=0
  wait "$qemu" || lab_rc=$?
  qemu=""
  wait "$relay" || true
  tr -d '\r' < "$log" > "$work/s.log"
  log="$work/s.log"
}
# lab_boot TIMEOUT CONTROLLERS: lab_start, then lab_wait.
lab_boot() { lab_start "$@"; lab_wait; }

# fail WHAT: the log lines matching $lab_show, the QMP replies, and the failure.
fail() {
  { grep -E "${lab_show:-umpath}" "$log" || true; } | tail -120
  cat "$work/qmp.log" 2>/dev/null || true
  echo "FAIL: $*"
  exit 1
}
# section NAME: "== NAME" .. "umpath-lab: end NAME" of the log (guest_lib.sh begin, end)
# into $work/NAME.
section() { sed -En "/== $1( |\$)/,/umpath-lab: end $1\$/p" "$log" > "$work/$1"; }
# chk NAME REGEX WHAT: fails unless $work/NAME has a line matching REGEX (the test's own
# markers and the workload's result lines).
chk() { grep -qE -- "$2" "$work/$1" || fail "$1: $3"; }
# jchk NAME EXPR WHAT [VAR=VALUE...]: fails unless EXPR (deploy/lab/check.py: the
# node's umpathctl -o json documents and event lines) holds on $work/NAME.
jchk() {
  local f="$1" e="$2" what="$3"; shift 3
  python3 "$here/check.py" "$work/$f" "$e" "$@" || fail "$f: $what"
}
