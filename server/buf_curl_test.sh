#!/usr/bin/env bash
# A client that is not ours: buf curl, through server reflection, against a real umpathd
# on a Unix socket. Usage: buf_curl_test.sh UMPATHD BUF
set -euo pipefail
umpathd="$1"
buf="$2"
dir="$(mktemp -d /tmp/umpath-buf-test-XXXXXX)"
sock="$dir/umpathd.sock"
# Bad configuration is refused with a clear message, before anything starts.
if "$umpathd" --socket="$sock" --default_delayed_removal_secs=90000 2>"$dir/bad.log"; then
  echo "FAIL: an out-of-range default was accepted"; exit 1
fi
grep -q "0..86400" "$dir/bad.log" || { cat "$dir/bad.log"; echo "FAIL: no range in the error"; exit 1; }
[ ! -e "$sock" ] || { echo "FAIL: a refused configuration left a socket"; exit 1; }

# The configuration file is a file of flags.
cat >"$dir/umpathd.flags" <<FLAGS
--socket=$sock
--state_file=$dir/state/heads
--admin_uids=$(id -u)
--node=buf-test
FLAGS
"$umpathd" --flagfile="$dir/umpathd.flags" 2>"$dir/log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$dir/log"; echo "umpathd did not create $sock"; exit 1; }

call() {  # call METHOD JSON: prints the response, returns buf's exit code (gRPC code << 3)
  "$buf" curl --protocol grpc --unix-socket "$sock" -d "$2" "http://localhost/$1"
}
fail() { echo "FAIL: $*"; cat "$dir/log"; exit 1; }

services="$("$buf" curl --protocol grpc --unix-socket "$sock" --list-services http://localhost)"
for s in umpath.v1.MultipathControl grpc.health.v1.Health grpc.reflection.v1alpha.ServerReflection; do
  grep -qx "$s" <<<"$services" || fail "service $s not listed: $services"
done
"$buf" curl --protocol grpc --unix-socket "$sock" --list-methods http://localhost \
  | grep -qx umpath.v1.MultipathControl/WatchEvents || fail "WatchEvents not described"

call umpath.v1.MultipathControl/GetAgentInfo '{}' | tr -d "\n " | grep -q '"node":"buf-test".*"callerRole":"admin"' \
  || fail "GetAgentInfo"
call grpc.health.v1.Health/Check '{}' | grep -q SERVING || fail "health"
call umpath.v1.MultipathControl/SetDefaultDelayedRemoval '{"delayed_removal_secs": 45}' \
  | grep -q '"delayedRemovalSecs": 45' || fail "SetDefaultDelayedRemoval 45"

set +e
out="$(call umpath.v1.MultipathControl/SetDefaultDelayedRemoval '{"delayed_removal_secs": 86401}' 2>&1)"
rc=$?
set -e
[ "$rc" -eq $((3 << 3)) ] || fail "out of range gave exit $rc, want INVALID_ARGUMENT (24): $out"
grep -q "0..86400" <<<"$out" || fail "no range in: $out"
call umpath.v1.MultipathControl/GetDefaults '{}' | grep -q '"delayedRemovalSecs": 45' \
  || fail "the old value did not stay"

set +e
out="$(call umpath.v1.MultipathControl/GetHead '{"name": "heads/none"}' 2>&1)"
rc=$?
set -e
[ "$rc" -eq $((5 << 3)) ] || fail "unknown head gave exit $rc, want NOT_FOUND (40): $out"

kill -TERM "$pid"
wait "$pid" || fail "umpathd exited with $?"
[ ! -e "$sock" ] || fail "the socket was left behind"
grep -q "event .*type=defaults-changed" "$dir/log" || fail "no event line in the log"
echo "buf curl: every check passed"
