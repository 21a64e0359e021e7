#!/usr/bin/env bash
# The lab tests that matter for the kernel comparison (issue 21) on the second guest
# kernel, Linux 6.18 (UMPATH_LAB_KERNEL=6.18, deploy/lab/kernel.sh): multipath, hotplug,
# ublk, ublk_zc (zero-copy ublk on kernel NVMe/TCP paths, issue 21 item 3: 6.18 only) and
# NVMe/TCP with TLS (tls_test.sh, issue 19 item 7), one boot each, one after the other.
# Prints each test's "lab:" result lines,
# then a summary: the kernel, and per test passed or FAILED with its wall time. Not in
# CI, whose 90 minutes already hold the 6.12 lab twice (ASan and release builds); these
# three took 121-166, 209-218 and 295-351 s on the lab machine.
# Usage: bench/lab_on_618.sh [UMPATHD UMPATHCTL]  (default: build/release's; umpath-perf
# is taken from beside UMPATHD). UMPATH_LAB_TESTS="ublk ..." runs fewer. The logs are
# kept in the directory the summary names. Exit status 0 when every test passed.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
umpathd="${1:-$root/build/release/umpathd}"
ctl="${2:-$root/build/release/client/umpathctl}"
export UMPATH_LAB_KERNEL=6.18
bash "$root/deploy/lab/fetch.sh" > /dev/null || { echo "lab_on_618: fetch failed"; exit 1; }
. "$root/deploy/lab/kernel.sh"
out="$(mktemp -d /tmp/umpath-lab-on-618-XXXXXX)"
summary=()
failed=0
for t in ${UMPATH_LAB_TESTS:-multipath hotplug ublk ublk_zc tls}; do
  start=$(date +%s)
  if bash "$root/deploy/lab/${t}_test.sh" "$umpathd" "$ctl" > "$out/$t.log" 2>&1; then
    result=passed
  else
    result=FAILED
    failed=1
  fi
  echo "== $t on 6.18: $result"
  grep -E '^(lab|FAIL):' "$out/$t.log"
  summary+=("$(printf '%-10s %-7s %5d s' "$t" "$result" $(($(date +%s) - start)))")
done
echo "== summary: kernel $(basename "$(ls "$kernel_dir"/boot/vmlinuz-*)" | sed 's/^vmlinuz-//'), logs in $out"
printf '%s\n' "${summary[@]}"
exit $failed
