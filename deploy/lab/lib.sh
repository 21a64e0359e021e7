# Sourced by the lab tests and benchmarks: the host side's common start.
# lab_init NAME UMPATHD [UMPATHCTL]: sets $here (deploy/lab), $umpathd, $ctl, $work (a
# fresh directory, kept with UMPATH_LAB_KEEP=1), a trap that stops QEMU (its pid in
# $qemu) and cleans up, and makes sure the guest kernel and QEMU are fetched.
lab_init() {
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  umpathd="$(readlink -f "$2")"
  ctl="$(readlink -f "${3:-$2}")"
  work="$(mktemp -d "/tmp/umpath-lab-$1-XXXXXX")"
  qemu=""
  trap '[ -n "$qemu" ] && kill "$qemu" 2>/dev/null; [ -n "${UMPATH_LAB_KEEP:-}" ] || rm -rf "$work"' EXIT
  bash "$here/fetch.sh" >/dev/null
}
