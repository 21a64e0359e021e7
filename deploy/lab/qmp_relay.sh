#!/usr/bin/env bash
# Carries out, once each and in order, the QMP requests a lab guest prints on its serial
# console ("umpath-lab: qmp COMMAND JSON"), until process PID (QEMU) ends. Each reply is
# appended to REPLIES. Usage: qmp_relay.sh SERIAL_LOG QMP_SOCKET PID REPLIES
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="$1"; sock="$2"; pid="$3"; replies="$4"
done_n=0
while kill -0 "$pid" 2>/dev/null; do
  # Whole requests only (every one ends its JSON with "}"): the console may be caught
  # in the middle of writing a line.
  mapfile -t reqs < <(grep -a "umpath-lab: qmp " "$log" 2>/dev/null | tr -d '\r' | grep '}$')
  while [ "$done_n" -lt "${#reqs[@]}" ]; do
    req="${reqs[$done_n]#*umpath-lab: qmp }"
    cmd="${req%% *}"; args="${req#* }"
    out=""
    for _ in $(seq 1 50); do  # a removed id is free only once QEMU finalized the device
      out="$(python3 "$here/qmp.py" "$sock" "$cmd" "$args")" && break
      sleep 0.2
    done
    echo "qmp $cmd $args: $out" >> "$replies"
    done_n=$((done_n + 1))
  done
  sleep 0.1
done
