#!/usr/bin/env bash
# Tests the Prometheus side of umpath (issue 8), offline, with Debian's prometheus
# package unpacked by install_prometheus.sh:
#   - promtool check rules / test rules on umpath-rules.yaml (and that the tests fail
#     when a rule is broken);
#   - promtool check metrics on the fixture testdata/metrics.txt (and that a bad
#     exposition is flagged);
#   - check_exprs.py: the dashboard's shape, every dashboard and rule expr accepted by a
#     real Prometheus server, every alert's runbook_url a heading of docs/runbooks.md
#     (with its own self-checks: broken exprs are rejected), and that it fails on a
#     broken runbook anchor and on a runbook heading renamed;
#   - e2e_check.py against the fixture served by `python3 -m http.server` on 127.0.0.1
#     (a real scrape; every query evaluated on data; the per-head panels show the head),
#     with the scrape's node label and without one, and that it fails on a missing path,
#     a broken dashboard expr, a per-head panel that shows nothing and a target that is
#     down.
# Closes with `N passed, M failed`; exits non-zero on any failure.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
summary() { echo "$passed passed, $failed failed"; }
step() { printf '\n=== %s\n' "$1"; }

tmp="$(mktemp -d)"
http_pid=""
cleanup() {
  if [ -n "$http_pid" ]; then kill "$http_pid" 2>/dev/null; wait "$http_pid" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

step "install promtool and prometheus"
if bin="$(bash "$here/install_prometheus.sh")"; then
  bin="$(tail -n 1 <<<"$bin")"
  pass "prometheus unpacked in $bin ($("$bin/promtool" --version 2>&1 | head -n 1))"
else
  fail "install_prometheus.sh"
  summary
  exit 1
fi
promtool="$bin/promtool"

step "promtool check rules"
if "$promtool" check rules umpath-rules.yaml; then pass "promtool check rules umpath-rules.yaml"
else fail "promtool check rules umpath-rules.yaml"; fi

step "promtool test rules"
if "$promtool" test rules umpath-rules_test.yaml; then pass "promtool test rules umpath-rules_test.yaml"
else fail "promtool test rules umpath-rules_test.yaml"; fi

step "self-check: the rule tests fail when a rule is broken"
# Each mutation must make at least one test case fail.
mutations=(
  "UmpathHeadNoLivePath without its 1m wait|s/for: 1m/for: 0m/"
  "UmpathPathDown after 2 minutes|/alert: UmpathPathDown/,/for:/s/for: 5m/for: 2m/"
  "UmpathFailoverRate threshold 2/s|s/rate(umpath_head_failovers_total\[5m\]) > 1/rate(umpath_head_failovers_total[5m]) > 2/"
  "UmpathFailoverRate without the sum for agents older than the head counter|s/sum without (path) (rate(umpath_path_failovers_total\[5m\])) > 1/vector(0) > 1/"
  "UmpathHeadPathsDown also where path series say it|s/(umpath_path_selectable == 0)/(umpath_path_selectable == 2)/"
  "UmpathHeadPathsDown after 2 minutes|/alert: UmpathHeadPathsDown/,/for:/s/for: 5m/for: 2m/"
  "UmpathWatchersDropped on client_gone|s/reason=\"fell_behind\"/reason=\"client_gone\"/g"
  "UmpathHeadRemovalPending on head_paths|s/expr: umpath_head_removal_deadline_timestamp_seconds/expr: umpath_head_paths == 0/"
  "UmpathdDown on targets that are up|s/up{job=\"umpathd\"} == 0/up{job=\"umpathd\"} == 1/"
  "UmpathdDown without the storage-node branch|s/label_umpath_io_storage_node=\"true\"/label_umpath_io_storage_node=\"yes\"/"
  "UmpathdDown without absent()|s/absent(up{job=\"umpathd\"})/absent(vector(1))/"
  "UmpathdDown after 5 minutes|/alert: UmpathdDown/,/for:/s/for: 2m/for: 5m/"
  "UmpathHeadIoErrors from 5 errors on|s/increase(umpath_head_io_errors_total\[5m\]) > 0/increase(umpath_head_io_errors_total[5m]) > 5/"
  "UmpathHeadIoErrors on no_path only|s/increase(umpath_head_io_errors_total\[5m\])/increase(umpath_head_io_errors_total{reason=\"no_path\"}[5m])/"
  "UmpathHeadFailingFast inverted|s/umpath_head_failing_fast == 1/umpath_head_failing_fast == 0/"
  "UmpathHeadFailingFast on no selectable path|s/expr: umpath_head_failing_fast == 1/expr: umpath_head_selectable_paths == 0/"
  "UmpathPinnedMemoryNearBudget on pinned memory alone|s/^\( *\)umpath_exportable_heads$/\1umpath_exportable_heads >= 0 or umpath_exportable_heads/"
  "UmpathPinnedMemoryNearBudget at 99%|s/umpath_dma_pinned_budget_bytes > 0.9/umpath_dma_pinned_budget_bytes > 0.99/"
  "UmpathPinnedMemoryNearBudget without its 5m wait|/alert: UmpathPinnedMemoryNearBudget/,/for:/s/for: 5m/for: 0m/"
)
mkdir -p "$tmp/mut"
cp umpath-rules_test.yaml "$tmp/mut/"
for m in "${mutations[@]}"; do
  what="${m%%|*}"
  sed "${m#*|}" umpath-rules.yaml >"$tmp/mut/umpath-rules.yaml"
  if cmp -s umpath-rules.yaml "$tmp/mut/umpath-rules.yaml"; then
    fail "mutation '$what' changed nothing"
  elif out="$(cd "$tmp/mut" && "$promtool" test rules umpath-rules_test.yaml 2>&1)"; then
    fail "mutation '$what': the tests still pass"
  else
    pass "mutation '$what': $(grep -c 'alertname:' <<<"$out") failing case(s)"
  fi
done

step "self-check: check_exprs.py fails on a broken runbook anchor and a renamed runbook"
# A runbook_url whose anchor names no heading, and a heading renamed under its alert's
# URL: each must fail the runbook check for that alert (and nothing else).
mkdir -p "$tmp/rb"
sed 's|runbooks.md#umpathpathdown$|runbooks.md#umpath-path-down|' umpath-rules.yaml >"$tmp/rb/rules.yaml"
sed 's/^## UmpathHeadFailingFast$/## UmpathHeadFailsFast/' ../../docs/runbooks.md >"$tmp/rb/runbooks.md"
for m in "a broken anchor|--rules=$tmp/rb/rules.yaml|umpath-rules.yaml|runbook_url of UmpathPathDown .*#umpath-path-down: no heading" \
    "a renamed heading|--runbooks=$tmp/rb/runbooks.md|../../docs/runbooks.md|runbook_url of UmpathHeadFailingFast .*: no heading of the runbooks has the anchor #umpathheadfailingfast"; do
  IFS='|' read -r what arg orig want <<<"$m"
  copy="${arg#*=}"
  if cmp -s "$orig" "$copy"; then fail "runbook self-check '$what': the sed changed nothing"; continue; fi
  python3 "$here/check_exprs.py" "$arg" >"$tmp/rb.log" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ] && [ "$(grep -c '^FAIL ' "$tmp/rb.log")" = 1 ] && grep -Eq "^FAIL $want" "$tmp/rb.log"; then
    pass "runbook self-check '$what': $(grep -m 1 '^FAIL ' "$tmp/rb.log" | cut -c1-160)"
  else
    grep '^FAIL ' "$tmp/rb.log" | sed 's/^/    /'
    fail "runbook self-check '$what': check_exprs.py exited $rc without exactly the expected FAIL"
  fi
done

step "promtool check metrics"
if out="$("$promtool" check metrics <testdata/metrics.txt 2>&1)" && [ -z "$out" ]; then
  pass "promtool check metrics < testdata/metrics.txt: no problem"
else
  fail "promtool check metrics < testdata/metrics.txt: $out"
fi
printf '# HELP umpath_bad_bytes A counter without the suffix.\n# TYPE umpath_bad_bytes counter\numpath_bad_bytes 1\n' \
  >"$tmp/bad.txt"
if out="$("$promtool" check metrics <"$tmp/bad.txt" 2>&1)"; then
  fail "self-check: promtool check metrics accepted a counter without _total"
else
  pass "self-check: promtool check metrics flags a bad exposition ($out)"
fi

step "dashboard and PromQL through a real prometheus (check_exprs.py)"
python3 "$here/check_exprs.py" >"$tmp/exprs.log" 2>&1
rc=$?
grep -v '^RESULT ' "$tmp/exprs.log"
n_ok="$(grep -c '^ok ' "$tmp/exprs.log")"
n_fail="$(grep -c '^FAIL ' "$tmp/exprs.log")"
passed=$((passed + n_ok))
failed=$((failed + n_fail))
if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then fail "check_exprs.py exited $rc"; fi
if ! grep -q "^RESULT passed=$n_ok failed=$n_fail\$" "$tmp/exprs.log"; then
  fail "check_exprs.py did not finish (no RESULT line)"
fi

step "end to end: prometheus scrapes the fixture (e2e_check.py)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p "$tmp/www"
cp testdata/metrics.txt "$tmp/www/metrics"
port="$(free_port)"
python3 -m http.server --bind 127.0.0.1 --directory "$tmp/www" "$port" >"$tmp/http.log" 2>&1 &
http_pid=$!
for _ in $(seq 50); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/metrics', timeout=1)" \
    2>/dev/null && break
  sleep 0.1
done
head_ok="nguid-9d6e1f0a2b3c4d5e8f7a6b5c4d3e2f10"
if python3 "$here/e2e_check.py" "127.0.0.1:$port" --expect-head "$head_ok" \
    --expect-path nvme3 --expect-path nvme4=non_optimized \
    --expect-path 0000:01:00.0=inaccessible >"$tmp/e2e.log" 2>&1; then
  sed 's/^/    /' "$tmp/e2e.log"
  pass "e2e_check.py 127.0.0.1:$port: $(tail -n 1 "$tmp/e2e.log")"
else
  sed 's/^/    /' "$tmp/e2e.log"
  fail "e2e_check.py 127.0.0.1:$port"
fi
# A scrape that sets no node label (a static config): the dashboard still answers, $node
# at All and $instance picking the target.
if python3 "$here/e2e_check.py" "127.0.0.1:$port" --node '' --expect-head "$head_ok" \
    >"$tmp/e2e-nonode.log" 2>&1; then
  pass "e2e_check.py 127.0.0.1:$port without a node label: $(tail -n 1 "$tmp/e2e-nonode.log")"
else
  sed 's/^/    /' "$tmp/e2e-nonode.log"
  fail "e2e_check.py 127.0.0.1:$port --node ''"
fi

step "self-check: e2e_check.py fails on a missing path and a broken dashboard expr"
python3 - "$here/../grafana/umpath-dashboard.json" "$tmp/broken.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
t = next(p for p in d["panels"] if p.get("targets"))["targets"][0]
t["expr"] = t["expr"].replace(")", "", 1)
json.dump(d, open(sys.argv[2], "w"))
EOF
if python3 "$here/e2e_check.py" "127.0.0.1:$port" --expect-path nvme9 --expect-path 0000:01:00.0 \
    --dashboard "$tmp/broken.json" >"$tmp/neg.log" 2>&1; then
  fail "e2e_check.py passed with --expect-path nvme9 and a broken dashboard"
else
  for pattern in '^FAIL path nvme9 ANA optimized' '^FAIL controller nvme9 live' \
      '^FAIL path 0000:01:00.0 ANA optimized' '^FAIL error .*parse error'; do
    if grep -q "$pattern" "$tmp/neg.log"; then pass "e2e self-check: $(grep -m 1 "$pattern" "$tmp/neg.log" | cut -c1-150)"
    else fail "e2e self-check: no line matching '$pattern'"; fi
  done
fi

step "self-check: e2e_check.py fails when a per-head panel shows nothing"
python3 - "$here/../grafana/umpath-dashboard.json" "$tmp/nohead.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
t = next(p for p in d["panels"] if p.get("title") == "Requeues per head")["targets"][0]
t["expr"] = t["expr"].replace("umpath_head_requeued_total", "umpath_head_requeues_total")
json.dump(d, open(sys.argv[2], "w"))
EOF
if python3 "$here/e2e_check.py" "127.0.0.1:$port" --expect-head "$head_ok" --dashboard "$tmp/nohead.json" \
    >"$tmp/nohead.log" 2>&1; then
  fail "e2e_check.py passed with a per-head panel on a metric the agent does not have"
elif [ "$(grep -c '^FAIL ' "$tmp/nohead.log")" = 1 ] &&
    grep -q "^FAIL head $head_ok panel [0-9]* 'Requeues per head' A shows the head (0 series)" "$tmp/nohead.log"; then
  pass "e2e self-check: $(grep -m 1 '^FAIL ' "$tmp/nohead.log" | cut -c1-150)"
else
  grep '^FAIL ' "$tmp/nohead.log" | sed 's/^/    /'
  fail "e2e self-check: a per-head panel showing nothing failed otherwise than once, on that panel"
fi

step "self-check: e2e_check.py fails on metrics that break their contract"
# The same server now serves a fixture with two ANA states at 1 for nvme3, a head that
# counts a path too many, a controller missing a state, a node label from the agent and
# a head that counts fewer failovers than its path.
sed -e 's/^\(umpath_path_ana_state{head="nguid-[0-9a-f]*",path="nvme3",state="change"}\) 0$/\1 1/' \
    -e 's/^\(umpath_head_paths{head="eui64-0025388b91c2a3f4"}\) 1$/\1 2/' \
    -e '/^umpath_controller_state{controller="nvme4",state="dead"}/d' \
    -e 's/^umpath_watchers 1$/umpath_watchers{node="worker-1"} 1/' \
    -e 's/^\(umpath_head_failovers_total{head="eui64-0025388b91c2a3f4"}\) 7$/\1 6/' \
    testdata/metrics.txt >"$tmp/www/metrics"
if python3 "$here/e2e_check.py" "127.0.0.1:$port" >"$tmp/inv.log" 2>&1; then
  fail "e2e_check.py passed on metrics that break their contract"
else
  for pattern in '^FAIL invariant: a path has exactly one ANA state at 1: .*path=nvme3' \
      '^FAIL invariant: a controller has exactly one state at 1, of six: .*controller=nvme4' \
      "^FAIL invariant: umpath_head_paths counts the head's paths: .*eui64-0025388b91c2a3f4" \
      '^FAIL invariant: the agent adds no node label' \
      "^FAIL invariant: umpath_head_failovers_total is at least its paths' failovers: .*eui64-0025388b91c2a3f4" \
      '^FAIL error .*many-to-many matching not allowed'; do
    if grep -q "$pattern" "$tmp/inv.log"; then pass "e2e self-check: $(grep -m 1 "$pattern" "$tmp/inv.log" | cut -c1-150)"
    else fail "e2e self-check: no line matching '$pattern'"; fi
  done
fi
kill "$http_pid" 2>/dev/null
wait "$http_pid" 2>/dev/null
http_pid=""

step "self-check: e2e_check.py fails when the target is down"
if python3 "$here/e2e_check.py" "127.0.0.1:$port" --timeout 15 >"$tmp/down.log" 2>&1; then
  fail "e2e_check.py passed against a closed port"
elif grep -q '^FAIL target .*(down' "$tmp/down.log"; then
  pass "e2e self-check: $(grep -m 1 '^FAIL target' "$tmp/down.log")"
  # The real server's up == 0 for the target makes UmpathdDown pending.
  if grep -q '^ok   UmpathdDown for the target: pending$' "$tmp/down.log"; then
    pass "e2e: a real Prometheus raises UmpathdDown (pending) for the target that is down"
  else
    grep 'UmpathdDown' "$tmp/down.log" | sed 's/^/    /'
    fail "e2e: UmpathdDown not pending for the target that is down"
  fi
else
  sed 's/^/    /' "$tmp/down.log"
  fail "e2e_check.py against a closed port failed without saying the target is down"
fi

echo
summary
[ "$failed" -eq 0 ]
