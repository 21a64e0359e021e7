#!/usr/bin/env python3
"""Checks the Grafana dashboard and the PromQL of the dashboard and the alert rules.

usage: check_exprs.py [--dashboard FILE] [--rules FILE] [--runbooks FILE]

- the dashboard's shape: schemaVersion, the `datasource` variable, `node` listing the
  scrape's node label and `instance` its targets, every query of an umpath series
  selecting both, every panel and target on the ${datasource} variable, unique panel
  ids, a grid that fits;
- every expr (panel targets, variable selectors, with Grafana's variables substituted,
  and every rule of the rule file as the server loaded it) is accepted by a real
  Prometheus server (127.0.0.1, free port, temporary TSDB, no scrape target): promtool
  2.42 cannot parse a query offline, /api/v1/query answers a parse error with bad_data;
- every alert the server loaded has a runbook_url, RUNBOOK_BASE and the anchor of a
  heading of the runbooks file (GitHub's anchors), its own name's;
- self-checks that the check can fail: a broken expr, an expr with a variable left in,
  an unknown variable, and a copy of the dashboard with one expr broken must all be
  rejected.

Prints `ok ...` or `FAIL ...` per check and `RESULT passed=N failed=M` last; exit 1 on
any failure. Run by rules_test.sh.
"""

import argparse
import copy
import json
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import promlab  # noqa: E402


class Tally:
    def __init__(self, quiet=False):
        self.passed = 0
        self.failed = 0
        self.quiet = quiet  # a self-check's probe: counts, prints nothing
        self.last = ""

    def check(self, ok, what, detail=""):
        self.last = what + (": " + detail if detail else "")
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        if not self.quiet:
            print(("ok   " if ok else "FAIL ") + (what if ok else self.last))
        return ok


def shape_checks(t, d):
    t.check(isinstance(d.get("schemaVersion"), int) and 36 <= d["schemaVersion"] <= 39,
            "dashboard schemaVersion %s" % d.get("schemaVersion"))
    t.check(bool(d.get("uid")) and bool(d.get("title")), "dashboard has a uid and a title")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    t.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
            "variable $datasource is a Prometheus data source variable")
    def lists(v, label):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        return v.get("type") == "query" and re.fullmatch(r"\s*label_values\(.*,\s*%s\s*\)\s*" % label, q)

    t.check(lists(variables.get("node", {}), "node"),
            "variable $node lists the scrape's node label")
    t.check(lists(variables.get("instance", {}), "instance") and
            "$node" in json.dumps(variables.get("instance", {}).get("query")),
            "variable $instance lists the targets of the selected nodes")
    for name, v in variables.items():
        if v.get("type") == "query":
            t.check(v.get("datasource", {}).get("uid") == "${datasource}",
                    "variable $%s queries ${datasource}" % name)

    ids = set()
    bad = []
    panels = []

    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))

    walk(d.get("panels", []))
    for p in panels:
        where = "panel %s %r" % (p.get("id"), p.get("title"))
        if p.get("id") in ids:
            bad.append(where + ": duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not (g.get("w", 0) > 0 and g.get("h", 0) > 0 and g.get("x", -1) >= 0 and
                g.get("x", 0) + g.get("w", 0) <= 24):
            bad.append(where + ": gridPos %s" % g)
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            bad.append(where + ": panel datasource %s" % p.get("datasource"))
        targets = p.get("targets", [])
        if not targets or not all(x.get("expr") for x in targets):
            bad.append(where + ": a target without expr")
        for x in targets:
            if x.get("datasource", {}).get("uid") != "${datasource}":
                bad.append(where + " " + x.get("refId", "?") + ": target datasource")
        for x in targets:
            # Every query of the agent's series (or its target's up) picks the nodes and
            # instances selected; ALERTS is Prometheus' own.
            e = x.get("expr", "")
            if re.search(r"\b(umpath_\w+|process_\w+|up)\{", e) and (
                    len(re.findall(r'node=~"\$node"', e)) != len(re.findall(r'instance=~"\$instance"', e)) or
                    len(re.findall(r"\b(?:umpath_\w+|process_\w+|up)\{", e)) != len(re.findall(r'node=~"\$node"', e))):
                bad.append(where + " " + x.get("refId", "?") + ": a selector without node=~\"$node\" and instance=~\"$instance\"")
        refs = [x.get("refId") for x in targets]
        if len(set(refs)) != len(refs):
            bad.append(where + ": duplicate refId")
    t.check(not bad, "%d panels: ids, grid, datasource, targets" % len(panels), "; ".join(bad))


def runbook_checks(t, rules, runbooks):
    """Every alerting rule's runbook_url is RUNBOOK_BASE + the anchor of a heading of
    `runbooks`, the one of its own name."""
    anchors = set(promlab.github_anchors(runbooks))
    alerts = [r for r in rules if r.get("type") == "alerting"]
    for r in alerts:
        url = r.get("annotations", {}).get("runbook_url", "")
        anchor = url[len(promlab.RUNBOOK_BASE):] if url.startswith(promlab.RUNBOOK_BASE) else None
        t.check(anchor is not None and anchor in anchors and anchor == r["name"].lower(),
                "runbook_url of %s is a section of the runbooks: %s" % (r["name"], url or "(none)"),
                "no runbook_url" if not url else
                "not %s..." % promlab.RUNBOOK_BASE if anchor is None else
                "no heading of the runbooks has the anchor #%s" % anchor if anchor not in anchors else
                "the section is not the alert's own (#%s)" % r["name"].lower())
    return len(alerts)


def expr_checks(prom, dashboard, variables):
    """[(where, ok, detail)] for every expr of the dashboard."""
    out = []
    for where, expr in promlab.dashboard_exprs(dashboard):
        try:
            q = promlab.substitute(expr, variables)
        except KeyError as e:
            out.append((where, False, str(e), expr))
            continue
        ok, res = prom.query(q)
        out.append((where, ok, "" if ok else res, q))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--dashboard", default=promlab.DASHBOARD)
    ap.add_argument("--rules", default=promlab.RULES)
    ap.add_argument("--runbooks", default=promlab.RUNBOOKS)
    args = ap.parse_args()
    promlab.exit_on_sigterm()

    t = Tally()
    dashboard = promlab.load_dashboard(args.dashboard)
    t.check(True, "dashboard JSON parses: " + args.dashboard)
    shape_checks(t, dashboard)
    variables = promlab.grafana_variables(node=promlab.grafana_regex_value("worker-1"),
                                          instance=promlab.grafana_regex_value("127.0.0.1:9400"))

    with promlab.Prometheus(rule_files=[args.rules]) as prom:
        for where, ok, detail, q in expr_checks(prom, dashboard, variables):
            t.check(ok, "PromQL accepted: %s: %s" % (where, q), detail)

        ok, data = prom.api("rules")
        rules = [r for g in data.get("groups", []) for r in g.get("rules", [])] if ok else []
        t.check(ok and len(rules) > 0, "server loaded %d rules from %s" % (len(rules), args.rules),
                "" if ok else data)
        for r in rules:
            ok, res = prom.query(r["query"])
            t.check(ok, "PromQL accepted: rule %s: %s" % (r["name"], r["query"]),
                    "" if ok else res)
        with open(args.runbooks) as f:
            runbooks = f.read()
        n = runbook_checks(t, rules, runbooks)
        t.check(n > 0, "%d alerts checked against %s" % (n, args.runbooks))

        # Self-checks: each of these must be rejected, or the checks above prove nothing.
        for what, expr in [
                ("a broken expr", "sum by (instance (rate(umpath_path_bytes_total[5m]))"),
                ("a variable left in", "rate(umpath_path_bytes_total[$__rate_interval])"),
                ("a bad matcher", 'umpath_path_selectable{head=~"("}')]:
            ok, res = prom.query(expr)
            t.check(not ok and "bad_data" in str(res),
                    "self-check: %s is rejected (%s)" % (what, res if not ok else "accepted!"))
        try:
            promlab.substitute('umpath_watchers{instance=~"$nod"}', variables)
            t.check(False, "self-check: an unknown variable is rejected", "accepted")
        except KeyError as e:
            t.check(True, "self-check: an unknown variable is rejected (%s)" % e)
        # The anchors GitHub makes, and a runbook_url whose section is missing.
        sample = "# A `b` [c](d) x.y\n```\n# in code\n```\n## A b c xy\n## Foo: bar_baz - q\n"
        got = promlab.github_anchors(sample)
        t.check(got == ["a-b-c-xy", "a-b-c-xy-1", "foo-bar_baz---q"],
                "self-check: GitHub anchors of headings (%s)" % got)
        probe = Tally(quiet=True)
        runbook_checks(probe, [{"type": "alerting", "name": "UmpathNoSuchAlert",
                                "annotations": {"runbook_url": promlab.RUNBOOK_BASE + "umpathnosuchalert"}}],
                       runbooks)
        t.check(probe.failed == 1, "self-check: a runbook_url without its section is refused (%s)" % probe.last)
        # A panel that selects by instance alone (as the dashboard did before node):
        # the shape check refuses it.
        by_instance = copy.deepcopy(dashboard)
        first = next(p for p in by_instance["panels"] if p.get("targets"))
        first["targets"][0]["expr"] = first["targets"][0]["expr"].replace('node=~"$node", ', "")
        probe = Tally(quiet=True)
        shape_checks(probe, by_instance)
        t.check(probe.failed == 1 and "without node" in probe.last,
                "self-check: a query without the node selector is refused (%s)" % probe.last)
        broken = copy.deepcopy(dashboard)
        first = next(p for p in broken["panels"] if p.get("targets"))
        first["targets"][0]["expr"] = first["targets"][0]["expr"].replace(")", "", 1)
        fails = [c for c in expr_checks(prom, broken, variables) if not c[1]]
        t.check(len(fails) == 1,
                "self-check: a dashboard with one broken expr fails exactly once (%s)" %
                (fails[0][2] if fails else "no failure"))

    print("RESULT passed=%d failed=%d" % (t.passed, t.failed))
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
