# Sourced by the lab tests and benchmarks: the host side's common start.
# lab_init NAME UMPATHD [UMPATHCTL]: sets $here (deploy/lab), $umpathd, $perf (umpath-perf,
# built beside umpathd), $ctl, $work (a
# fresh directory, kept with UMPATH_LAB_KEEP=1), a trap that stops QEMU (its pid in
# $qemu) and cleans up, and makes sure the guest kernel and QEMU are fetched.
lab_init() {
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  umpathd="$(readlink -f "$2")"
  perf="$(dirname "$umpathd")/umpath-perf"
  [ -x "$perf" ] || { echo "no umpath-perf beside $umpathd (build the umpath-perf target)"; exit 1; }
  ctl="$(readlink -f "${3:-$2}")"
  work="$(mktemp -d "/tmp/umpath-lab-$1-XXXXXX")"
  qemu=""
  trap '[ -n "$qemu" ] && kill "$qemu" 2>/dev/null; [ -n "${UMPATH_LAB_KEEP:-}" ] || rm -rf "$work"' EXIT
  bash "$here/fetch.sh" >/dev/null
}
# lab_fio: prints fio's path, installing Debian's fio first if it is missing.
lab_fio() {
  command -v fio >/dev/null || {
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y -qq --no-install-recommends fio >/dev/null
  }
  command -v fio
}
# lab_boot_qmp TIMEOUT: boots $work/initramfs.gz (two controllers, one TCG thread, a QMP
# socket the guest's requests are relayed to) and waits until the node powers off; then
# $log is its serial log without carriage returns, and fail/section/chk check it:
# section NAME cuts "== NAME" .. "umpath-lab: end NAME" into $work/NAME; chk NAME REGEX
# WHAT fails unless it matches; fail shows the log lines matching $lab_show.
lab_boot_qmp() {
  log="$work/serial.log"
  UMPATH_LAB_TCG_THREAD=single timeout "$1" bash "$here/boot.sh" "$work/initramfs.gz" 2 "$log" 0 "$work/qmp.sock" &
  qemu=$!
  bash "$here/qmp_relay.sh" "$log" "$work/qmp.sock" "$qemu" "$work/qmp.log"
  wait "$qemu" || true
  qemu=""
  tr -d '\r' < "$log" > "$work/s.log"
  log="$work/s.log"
}
fail() { grep -E "${lab_show:-umpath}" "$log" | tail -120; cat "$work/qmp.log" 2>/dev/null || true; echo "FAIL: $*"; exit 1; }
section() { sed -En "/== $1( |\$)/,/umpath-lab: end $1\$/p" "$log" > "$work/$1"; }
chk() { grep -qE -- "$2" "$work/$1" || fail "$1: $3"; }
