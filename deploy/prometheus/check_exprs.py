#!/usr/bin/env python3
"""Checks the Grafana dashboard and the PromQL of the dashboard and the alert rules.

usage: check_exprs.py [--dashboard FILE] [--rules FILE]

- the dashboard's shape: schemaVersion, the `datasource` and `node` variables, every
  panel and target on the ${datasource} variable, unique panel ids, a grid that fits;
- every expr (panel targets, variable selectors, with Grafana's variables substituted,
  and every rule of the rule file as the server loaded it) is accepted by a real
  Prometheus server (127.0.0.1, free port, temporary TSDB, no scrape target): promtool
  2.42 cannot parse a query offline, /api/v1/query answers a parse error with bad_data;
- self-checks that the check can fail: a broken expr, an expr with a variable left in,
  an unknown variable, and a copy of the dashboard with one expr broken must all be
  rejected.

Prints `ok ...` or `FAIL ...` per check and `RESULT passed=N failed=M` last; exit 1 on
any failure. Run by rules_test.sh.
"""

import argparse
import copy
import json
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import promlab  # noqa: E402


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print("ok   " + what)
        else:
            self.failed += 1
            print("FAIL " + what + (": " + detail if detail else ""))
        return ok


def shape_checks(t, d):
    t.check(isinstance(d.get("schemaVersion"), int) and 36 <= d["schemaVersion"] <= 39,
            "dashboard schemaVersion %s" % d.get("schemaVersion"))
    t.check(bool(d.get("uid")) and bool(d.get("title")), "dashboard has a uid and a title")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    t.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
            "variable $datasource is a Prometheus data source variable")
    node = variables.get("node", {})
    t.check(node.get("type") == "query" and "instance" in json.dumps(node.get("query")),
            "variable $node lists the scrape's instance label")
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
        refs = [x.get("refId") for x in targets]
        if len(set(refs)) != len(refs):
            bad.append(where + ": duplicate refId")
    t.check(not bad, "%d panels: ids, grid, datasource, targets" % len(panels), "; ".join(bad))


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
    args = ap.parse_args()
    promlab.exit_on_sigterm()

    t = Tally()
    dashboard = promlab.load_dashboard(args.dashboard)
    t.check(True, "dashboard JSON parses: " + args.dashboard)
    shape_checks(t, dashboard)
    variables = promlab.grafana_variables(node=promlab.grafana_regex_value("127.0.0.1:9400"))

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
