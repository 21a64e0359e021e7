#!/usr/bin/env bash
# Runs watchers_test.js (grpc-js, 200 watchers) against a real umpathd.
# Usage: watchers_test.sh UMPATHD NODE_MODULES PROTO_DIR
set -euo pipefail
umpathd="$1"; modules="$2"; protos="$3"
dir="$(mktemp -d /tmp/umpath-watchers-test-XXXXXX)"
sock="$dir/umpathd.sock"
"$umpathd" --socket="$sock" --state_file="$dir/heads" --admin_uids="$(id -u)" \
  --max_watchers_per_caller=256 2>"$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
NODE_PATH="$modules" node "$(dirname "$0")/watchers_test.js" "$sock" "$protos" \
  || { tail -20 "$dir/log"; exit 1; }
