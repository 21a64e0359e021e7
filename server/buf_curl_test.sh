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
health_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$dir/umpathd.flags" <<FLAGS
--socket=$sock
--health_address=127.0.0.1:$health_port
--state_file=$dir/state/heads
--admin_uids=$(id -u)
--node=buf-test
--sim=1:2:2
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
# Read whole, then searched: grep -q leaving early would end buf with SIGPIPE (pipefail).
methods="$("$buf" curl --protocol grpc --unix-socket "$sock" --list-methods http://localhost)"
grep -qx umpath.v1.MultipathControl/WatchEvents <<<"$methods" || fail "WatchEvents not described"

call umpath.v1.MultipathControl/GetAgentInfo '{}' | tr -d "\n " | grep -q '"node":"buf-test".*"callerRole":"admin"' \
  || fail "GetAgentInfo"
# The commit built from (cmake/revision.cmake), as --version says it.
revision="$("$umpathd" --version | sed -n 's/^umpathd .* (revision \(.*\))$/\1/p')"
[[ "$revision" =~ ^([0-9a-f]{12}|unknown)$ ]] || fail "umpathd --version: no revision: $("$umpathd" --version)"
call umpath.v1.MultipathControl/GetAgentInfo '{}' | grep -q "\"revision\": \"$revision\"" \
  || fail "GetAgentInfo: no revision $revision"
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

# The plaintext health port serves grpc.health.v1 alone: no reflection (issue 17: it
# listed grpc.reflection.v1alpha.ServerReflection), so buf needs the schema from us.
health_url="http://127.0.0.1:$health_port"
set +e
out="$("$buf" curl --protocol grpc --http2-prior-knowledge --list-services "$health_url" 2>&1)"
rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "unimplemented" <<<"$out" \
  || fail "reflection on the health port gave exit $rc, want unimplemented: $out"
proto="$(cd "$(dirname "$0")/../proto" && pwd)"
"$buf" curl --protocol grpc --http2-prior-knowledge --schema "$proto/grpc/health/v1/health.proto" \
  -d '{}' "$health_url/grpc.health.v1.Health/Check" | grep -q SERVING || fail "health port Check"

set +e
out="$(call umpath.v1.MultipathControl/GetHead '{"name": "heads/none"}' 2>&1)"
rc=$?
set -e
[ "$rc" -eq $((5 << 3)) ] || fail "unknown head gave exit $rc, want NOT_FOUND (40): $out"
# Its google.rpc.ErrorInfo (AIP-193) as a client not ours receives it: the detail's
# type, and its bytes holding the reason, the domain and the head (issue 19 item 5).
grep -q '"type": "google.rpc.ErrorInfo"' <<<"$out" || fail "no ErrorInfo detail: $out"
value="$(grep -o '"value": "[^"]*"' <<<"$out" | head -n 1 | cut -d'"' -f4 | tr -- '-_' '+/')"
while [ $(( ${#value} % 4 )) -ne 0 ]; do value="$value="; done
info="$(base64 -d <<<"$value" | tr -c '[:print:]' ' ')"
grep -q "HEAD_NOT_FOUND.*umpath.io.*head.*none" <<<"$info" || fail "ErrorInfo holds: $info"
# Removing what is gone succeeds (CSI's idempotency).
call umpath.v1.MultipathControl/DetachController '{"name": "controllers/never-attached"}' >/dev/null \
  || fail "detaching what is not attached"
call umpath.v1.MultipathControl/UnexportHead '{"name": "heads/none"}' >/dev/null || fail "unexporting what is gone"

# A volume's head by its identity (AIP-160), a wait on it, and settings kept ahead of a
# head (issue 19), through reflection alone.
out="$(call umpath.v1.MultipathControl/ListHeads '{"filter_expression": "nsid = 2 AND selectable_paths = 2"}')"
[ "$(grep -Ec '"name": "heads/[^/"]*"' <<<"$out")" -eq 1 ] || fail "ListHeads by filter: $out"
head="$(grep -Eo '"name": "heads/[^/"]*"' <<<"$out" | cut -d'"' -f4)"
call umpath.v1.MultipathControl/WaitHead \
  "{\"filter_expression\": \"nsid = 2\", \"condition\": \"HEAD_CONDITION_SELECTABLE\", \"timeout_secs\": 30}" \
  | grep -q "\"name\": \"$head\"" || fail "WaitHead by filter"
set +e
out="$(call umpath.v1.MultipathControl/ListHeads '{"filter_expression": "colour = red"}' 2>&1)"
rc=$?
set -e
[ "$rc" -eq $((3 << 3)) ] && grep -q 'no field' <<<"$out" || fail "a bad filter gave exit $rc: $out"
call umpath.v1.MultipathControl/UpdateHeadSettings \
  '{"settings": {"name": "heads/uuid-1b4e28ba-2fa1-11d2-883f-0016d3cca427/settings", "delayed_removal_secs": 30, "export": false}, "allow_missing": true}' \
  | grep -q '"headPresent": false\|"delayedRemovalSecs": 30' || fail "UpdateHeadSettings allow_missing"
call umpath.v1.MultipathControl/ListHeadSettings '{}' | grep -q 'uuid-1b4e28ba-2fa1-11d2-883f-0016d3cca427/settings' \
  || fail "ListHeadSettings"

kill -TERM "$pid"
wait "$pid" || fail "umpathd exited with $?"
grep -q "uuid-1b4e28ba-2fa1-11d2-883f-0016d3cca427 delayed_removal_secs=30" "$dir/state/heads" \
  || fail "the kept settings are not in the settings file: $(cat "$dir/state/heads")"
[ ! -e "$sock" ] || fail "the socket was left behind"
grep -q "event .*type=defaults-changed" "$dir/log" || fail "no event line in the log"
echo "buf curl: every check passed"
