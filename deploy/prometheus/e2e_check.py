#!/usr/bin/env python3
"""End-to-end check of umpathd's metrics with a real Prometheus.

usage: e2e_check.py TARGET_HOST:PORT [--expect-head HEAD ...] [--expect-path PATH[=STATE] ...]
                    [--node NAME]

Starts prometheus (from install_prometheus.sh) on 127.0.0.1 with umpath-rules.yaml
loaded and one scrape job, umpathd, for TARGET (http://TARGET/metrics, every 1 s) that
adds node="NAME" to its series as the PodMonitor does (--node e2e-node by default;
--node '' adds none, a static scrape config's case), waits until the target is up and
has been scraped a few times, then
- evaluates every alert expr (as the server loaded it) and every expr of the Grafana
  dashboard through /api/v1/query (Grafana's variables substituted: $node is NAME, or
  All without one, $instance the target's instance, each escaped as Grafana escapes a
  single value, $head all heads, $__rate_interval 5 s, $__range 1 m) and fails if any
  query errors;
- for each --expect-head, every query of the dashboard's "Head I/O" row with $head that
  head must return series (the per-head panels show the head), and UmpathdDown must not
  be pending or firing for the target;
- fails if a rule's own evaluation reports an error;
- checks that umpath_build_info is 1; for each --expect-head that umpath_head_paths has
  the head; for each --expect-path that its umpath_path_ana_state is 1 for STATE
  (default optimized) in every head it serves and, for optimized/non_optimized, that it
  is selectable and its controller live;
- checks the metrics' invariants (one ANA state at 1 per path, head counts match their
  paths (at least, with --path-detail errors or none), at most 15 series per path, no
  node label from the agent, ...; see INVARIANTS; --no-invariants skips them) and runs `promtool check metrics` on the
  target's exposition;
- prints one line per query with the number of series it returned, and the alerts the
  rules raised (for information), then stops prometheus.
Exit status 0 if every check passed, 1 otherwise (2: usage).
"""

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import promlab  # noqa: E402

# The dashboard's row of per-head panels (what the application saw).
HEAD_IO_ROW = "Head I/O (what the application saw)"
ANA_STATES = ("optimized", "non_optimized", "inaccessible", "persistent_loss", "change")


def q(s):
    """A PromQL string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Run:
    def __init__(self):
        self.failures = 0
        self.queries = 0

    def line(self, ok, text):
        if not ok:
            self.failures += 1
        print(("ok   " if ok else "FAIL ") + text, flush=True)

    def query(self, prom, where, expr):
        self.queries += 1
        ok, res = prom.query(expr)
        if ok:
            self.line(True, "%3d series  %s: %s" % (len(res), where, expr))
            return res
        self.line(False, "error       %s: %s: %s" % (where, expr, res))
        return None


def wait_up(prom, instance, timeout, scrapes):
    """Waits until the target is up and has `scrapes` samples of up in the last minute."""
    deadline = time.monotonic() + timeout
    # The scrape manager takes up to 5 s to pick up a new target.
    last = "not scraped yet"
    while time.monotonic() < deadline:
        ok, data = prom.api("targets", {"state": "active"})
        if ok:
            for t in data.get("activeTargets", []):
                if t.get("labels", {}).get("instance") == instance:
                    last = "%s%s" % (t.get("health"),
                                     ": " + t["lastError"] if t.get("lastError") else "")
        ok, res = prom.query('count_over_time(up{job="%s", instance=%s}[1m]) >= %d'
                             ' and on () (up{job="%s", instance=%s} == 1)'
                             % (promlab.JOB, q(instance), scrapes, promlab.JOB, q(instance)))
        if ok and res:
            return True, last
        time.sleep(0.5)
    return False, last


# The metrics' contract, each as a query that must return no series (one scrape is one
# snapshot of the agent, so these hold exactly). {i} is the instance matcher.
INVARIANTS = [
    ("a path has one umpath_path_ana_state series per state",
     'count without (state) (umpath_path_ana_state{{{i}}}) != 5'),
    ("a path has exactly one ANA state at 1",
     'sum without (state) (umpath_path_ana_state{{{i}}}) != 1'),
    ("a controller has exactly one state at 1, of six",
     'sum without (state) (umpath_controller_state{{{i}}}) != 1'
     ' or count without (state) (umpath_controller_state{{{i}}}) != 6'),
    ("a path has at most 15 series",
     'count by (instance, job, head, path) ({{__name__=~"umpath_path_.*", {i}}}) > 15'),
    ("a selectable path is ANA optimized or non-optimized",
     'umpath_path_selectable{{{i}}} == 1 and on (instance, job, head, path)'
     ' (sum without (state) (umpath_path_ana_state{{{i}, state=~"optimized|non_optimized"}}) == 0)'),
    ("every path's controller has umpath_controller_state",
     'count by (instance, job, path) (umpath_path_selectable{{{i}}}) unless on (instance, job, path)'
     ' label_replace(umpath_controller_state{{{i}}}, "path", "$1", "controller", "(.*)")'),
    ("every path's head has umpath_head_paths",
     'count by (instance, job, head) (umpath_path_selectable{{{i}}})'
     ' unless on (instance, job, head) umpath_head_paths{{{i}}}'),
    # With every path's series (--metrics_path_detail=full; the others: at least).
    ("umpath_head_paths counts the head's paths",
     'umpath_head_paths{{{i}}} {cmp} on (instance, job, head)'
     ' count by (instance, job, head) (umpath_path_selectable{{{i}}})'),
    ("umpath_head_selectable_paths counts the head's selectable paths",
     'umpath_head_selectable_paths{{{i}}} {cmp} on (instance, job, head)'
     ' sum by (instance, job, head) (umpath_path_selectable{{{i}}})'),
    ("umpath_head_failovers_total is at least its paths' failovers",
     'umpath_head_failovers_total{{{i}}} < on (instance, job, head)'
     ' sum by (instance, job, head) (umpath_path_failovers_total{{{i}}})'),
    ("umpath_head_live_paths is at most umpath_head_paths",
     'umpath_head_live_paths{{{i}}} > on (instance, job, head) umpath_head_paths{{{i}}}'),
    # The scrape's node label, when it sets one, moves the agent's own to exported_node.
    ("the agent adds no node label (the scrape does)",
     '{{__name__=~"umpath_.*", {i}, {own_node}!=""}}'),
    ("a head has its four operations and five error reasons",
     'count without (op) (umpath_head_io_total{{{i}}}) != 4'
     ' or count without (reason) (umpath_head_io_errors_total{{{i}}}) != 5'),
    ("a head has one umpath_head_info",
     'count by (instance, job, head) (umpath_head_info{{{i}}}) != 1'
     ' or count by (instance, job, head) (umpath_head_paths{{{i}}})'
     ' unless on (instance, job, head) umpath_head_info{{{i}}}'),
    ("umpath_head_failing_fast is 0 or 1, and 1 only with a fast-fail timeout",
     'umpath_head_failing_fast{{{i}}} != 0 and umpath_head_failing_fast{{{i}}} != 1'
     ' or (umpath_head_failing_fast{{{i}}} == 1 and on (instance, job, head)'
     ' umpath_head_io_fail_timeout_seconds{{{i}}} == 0)'),
]


def _what(metric):
    """What tells one series of a per-head panel from the others."""
    for k in ("op", "reason", "volume"):
        if k in metric:
            return "%s=%s" % (k, metric[k])
    return "value"


def check_invariants(run, prom, inst, path_detail, node):
    cmp = "!=" if path_detail == "full" else "<"
    own_node = "exported_node" if node else "node"
    for what, expr in INVARIANTS:
        res = run.query(prom, "invariant", expr.format(i=inst, cmp=cmp, own_node=own_node))
        if res is not None:
            run.line(not res, "invariant: %s%s" % (
                what, "" if not res else ": violated by " + "; ".join(
                    "{%s} %s" % (", ".join("%s=%s" % kv for kv in sorted(s["metric"].items())),
                                 s["value"][1]) for s in res[:5])))


def check_exposition(run, target):
    """promtool check metrics on the target's exposition, fetched directly."""
    try:
        with urllib.request.urlopen("http://%s/metrics" % target, timeout=10) as r:
            body = r.read()
    except (urllib.error.URLError, OSError) as e:
        run.line(False, "GET http://%s/metrics: %s" % (target, e))
        return
    promtool = os.path.join(promlab.prometheus_bin_dir(), "promtool")
    p = subprocess.run([promtool, "check", "metrics"], input=body, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    problems = p.stdout.decode(errors="replace").strip()
    families = len({l.split()[2] for l in body.decode(errors="replace").splitlines()
                    if l.startswith("# TYPE ")})
    run.line(p.returncode == 0 and not problems,
             "promtool check metrics on http://%s/metrics (%d bytes, %d families)%s" % (
                 target, len(body), families, ": " + problems.replace("\n", "; ") if problems else ""))


def main():
    ap = argparse.ArgumentParser(description="End-to-end check of umpathd's metrics with a real Prometheus.")
    ap.add_argument("target", metavar="TARGET_HOST:PORT")
    ap.add_argument("--expect-head", action="append", default=[], metavar="HEAD")
    ap.add_argument("--expect-path", action="append", default=[], metavar="PATH[=STATE]",
                    help="STATE: " + ", ".join(ANA_STATES) + " (default optimized)")
    ap.add_argument("--no-invariants", action="store_true",
                    help="skip the consistency checks between the metrics")
    ap.add_argument("--path-detail", choices=("full", "errors", "none"), default="full",
                    help="the agent's --metrics_path_detail: with full, the heads' path counts "
                         "must equal their path series")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for the target")
    ap.add_argument("--node", default="e2e-node",
                    help="the node label the scrape adds (as the PodMonitor does); '' for none")
    ap.add_argument("--rules", default=promlab.RULES)
    ap.add_argument("--dashboard", default=promlab.DASHBOARD)
    args = ap.parse_args()
    promlab.exit_on_sigterm()
    expect_paths = []
    for p in args.expect_path:
        path, _, state = p.partition("=")
        state = state or "optimized"
        if state not in ANA_STATES:
            ap.error("--expect-path %s: unknown ANA state %s" % (p, state))
        expect_paths.append((path, state))

    run = Run()
    instance = args.target
    dashboard = promlab.load_dashboard(args.dashboard)
    variables = promlab.grafana_variables(
        node=promlab.grafana_regex_value(args.node) if args.node else ".*",
        instance=promlab.grafana_regex_value(instance))
    with promlab.Prometheus(scrape_targets=[args.target], rule_files=[args.rules],
                            target_labels={"node": args.node} if args.node else {}) as prom:
        print("prometheus %s scraping http://%s/metrics every 1s%s" % (
            prom.url, args.target, ", node=%s" % args.node if args.node else ", no node label"),
              flush=True)
        up, health = wait_up(prom, instance, args.timeout, scrapes=6)
        run.line(up, "target %s up (%s)" % (instance, health))
        if not up:
            print(prom.log_tail(), file=sys.stderr)
            # What the rules make of it: UmpathdDown pending (its 2 minutes running).
            state = "none"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and state == "none":
                ok, data = prom.api("alerts")
                state = next((a.get("state") for a in data.get("alerts", []) if ok and
                              a.get("labels", {}).get("alertname") == "UmpathdDown" and
                              a.get("labels", {}).get("instance") == instance), "none")
                time.sleep(0.5)
            print("%s UmpathdDown for the target: %s" % ("ok  " if state in ("pending", "firing") else "FAIL", state))
            print("e2e: %d queries, 1 failure: target never up" % run.queries)
            return 1

        ok, data = prom.api("rules")
        rules = [r for g in data.get("groups", []) for r in g.get("rules", [])] if ok else []
        run.line(ok and len(rules) > 0, "%d rules loaded from %s" % (len(rules), args.rules))
        # Each rule has been evaluated by the server itself (every 1 s) by now.
        for r in rules:
            run.query(prom, "rule " + r["name"], r["query"])
            run.line(r.get("health") != "err",
                     "rule %s evaluates (health %s%s)" % (r["name"], r.get("health"),
                                                          ", " + r["lastError"] if r.get("lastError") else ""))

        for where, expr in promlab.dashboard_exprs(dashboard):
            try:
                expr = promlab.substitute(expr, variables)
            except KeyError as e:
                run.line(False, "%s: %s" % (where, e))
                continue
            run.query(prom, where, expr)

        inst = "instance=%s" % q(instance)
        res = run.query(prom, "expect build_info", "umpath_build_info{%s} == 1" % inst)
        run.line(bool(res), "umpath_build_info is 1 (version %s)" %
                 (res[0]["metric"].get("version") if res else "-"))
        for head in args.expect_head:
            res = run.query(prom, "expect head", "umpath_head_paths{%s, head=%s}" % (inst, q(head)))
            run.line(bool(res), "head %s present (%s paths)" %
                     (head, res[0]["value"][1] if res else "-"))
        for path, state in expect_paths:
            sel = "%s, path=%s" % (inst, q(path))
            res = run.query(prom, "expect path", "umpath_path_ana_state{%s, state=%s}" % (sel, q(state)))
            run.line(bool(res) and all(s["value"][1] == "1" for s in res),
                     "path %s ANA %s == 1 in %d head(s)%s" % (
                         path, state, len(res or []),
                         "".join(" %s=%s" % (s["metric"].get("head"), s["value"][1]) for s in res or [])))
            if state in ("optimized", "non_optimized"):
                res = run.query(prom, "expect path", "umpath_path_selectable{%s}" % sel)
                run.line(bool(res) and all(s["value"][1] == "1" for s in res),
                         "path %s selectable in %d head(s)" % (path, len(res or [])))
                res = run.query(prom, "expect path", 'umpath_controller_state{%s, controller=%s, state="live"}'
                                % (inst, q(path)))
                run.line(bool(res) and res[0]["value"][1] == "1",
                         "controller %s live" % path)

        # The per-head panels show each expected head.
        head_io = [(t, p) for p in promlab.row_panels(dashboard, HEAD_IO_ROW)
                   for t in p.get("targets", [])]
        if args.expect_head:
            run.line(len(head_io) > 0, "%d queries in the dashboard's %r row" % (len(head_io), HEAD_IO_ROW))
        for head in args.expect_head:
            hv = dict(variables, head=promlab.grafana_regex_value(head))
            for t, p in head_io:
                where = "head %s panel %d %r %s" % (head, p.get("id", 0), p.get("title", ""), t.get("refId", "?"))
                try:
                    expr = promlab.substitute(t["expr"], hv)
                except KeyError as e:
                    run.line(False, "%s: %s" % (where, e))
                    continue
                res = run.query(prom, where, expr)
                if res is not None:
                    run.line(bool(res), "%s shows the head (%d series%s)" % (
                        where, len(res), "".join(", %s %s" % (_what(s["metric"]), s["value"][1])
                                                 for s in res[:5])))

        if not args.no_invariants:
            check_invariants(run, prom, inst, args.path_detail, args.node)
        check_exposition(run, args.target)

        ok, data = prom.api("alerts")
        if ok and args.expect_head:
            down = [a for a in data.get("alerts", []) if a.get("labels", {}).get("alertname") == "UmpathdDown"]
            run.line(not down, "UmpathdDown neither pending nor firing for a target that is up%s" % (
                "" if not down else ": " + "; ".join(str(a.get("labels")) for a in down)))
        for a in data.get("alerts", []) if ok else []:
            labels = a.get("labels", {})
            print("     alert %s %s {%s}: %s" % (
                labels.get("alertname"), a.get("state"),
                ", ".join("%s=%s" % kv for kv in sorted(labels.items()) if kv[0] != "alertname"),
                a.get("annotations", {}).get("summary", "")))

    print("e2e: %d queries, %d failure(s)" % (run.queries, run.failures))
    return 1 if run.failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
