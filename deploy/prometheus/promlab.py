"""A real Prometheus server for checks, and the PromQL the rules and dashboard hold.

Used by e2e_check.py (scrapes a umpathd) and check_dashboard.py (no target: PromQL
syntax through the server, since promtool 2.42 has no offline "parse a query" command).
Standard library only (Debian's python3).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "umpath-rules.yaml")
DASHBOARD = os.path.join(HERE, "..", "grafana", "umpath-dashboard.json")
RUNBOOKS = os.path.join(HERE, "..", "..", "docs", "runbooks.md")
# Every alert's runbook_url: this, then the anchor of its section of docs/runbooks.md.
RUNBOOK_BASE = "https://github.com/umpath/umpath/blob/main/docs/runbooks.md#"
# The scrape job the rules and the dashboard name (the PodMonitor's jobLabel value).
JOB = "umpathd"


def exit_on_sigterm():
    """SIGTERM (a harness's timeout) ends the script through SystemExit, so the
    Prometheus context manager still stops the server and removes its directory."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def prometheus_bin_dir():
    """Runs install_prometheus.sh (idempotent) and returns the directory of the binaries."""
    out = subprocess.run(["bash", os.path.join(HERE, "install_prometheus.sh")],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A prometheus server on 127.0.0.1, its TSDB and config in a temporary directory.

    Use as a context manager; the process is ended (SIGTERM, then SIGKILL) and the
    directory removed on exit, also when the caller is interrupted.
    """

    def __init__(self, scrape_targets=(), rule_files=(), interval="1s", scrape_configs=(),
                 target_labels=None):
        self.scrape_targets = list(scrape_targets)
        # Labels the scrape adds to scrape_targets' series, as the PodMonitor adds node.
        self.target_labels = dict(target_labels or {})
        self.scrape_configs = list(scrape_configs)  # whole jobs, as prometheus.yml has them
        self.rule_files = [os.path.abspath(f) for f in rule_files]
        self.interval = interval
        self.proc = None
        self.dir = None
        self.url = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="umpath-prom-")
        config = {"global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                             "evaluation_interval": self.interval},
                  "rule_files": self.rule_files, "scrape_configs": []}
        if self.scrape_targets:
            config["scrape_configs"].append(
                {"job_name": JOB, "metrics_path": "/metrics",
                 "static_configs": [{"targets": self.scrape_targets, "labels": self.target_labels}]})
        config["scrape_configs"].extend(self.scrape_configs)
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            json.dump(config, f)  # JSON is YAML
        binary = os.path.join(prometheus_bin_dir(), "prometheus")
        for _ in range(5):  # the free port may be taken between the probe and the bind
            port = free_port()
            self.url = "http://127.0.0.1:%d" % port
            log = open(os.path.join(self.dir, "prometheus.log"), "w")
            self.proc = subprocess.Popen(
                [binary, "--config.file=" + cfg,
                 "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                 "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            log.close()
            if self._wait_ready(30):
                return self
            self._stop_process()
        self.__exit__(None, None, None)
        raise RuntimeError("prometheus did not become ready")

    def _wait_ready(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.stderr.write(self.log_tail())
                return False
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        return False

    def log_tail(self, lines=20):
        try:
            with open(os.path.join(self.dir, "prometheus.log")) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def _stop_process(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __exit__(self, *exc):
        self._stop_process()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return False

    def api(self, path, params=None):
        """GET /api/v1/PATH; returns (ok, data or error text)."""
        url = self.url + "/api/v1/" + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:  # 400 bad_data (parse errors), 422 execution
            try:
                body = json.load(e)
            except ValueError:
                return False, "HTTP %d" % e.code
        except (urllib.error.URLError, OSError, ValueError) as e:
            return False, str(e)
        if body.get("status") != "success":
            return False, "%s: %s" % (body.get("errorType"), body.get("error"))
        return True, body["data"]

    def query(self, expr):
        """Instant query; returns (ok, list of samples or error text)."""
        ok, data = self.api("query", {"query": expr})
        if ok:
            return True, data["result"] if isinstance(data["result"], list) else [data["result"]]
        return False, data


# --------------------------------------------------------------------------- dashboard

def dashboard_exprs(dashboard):
    """[(where, expr)] for every panel target (rows' nested panels too) and the metric
    selector of every query variable (label_values(SELECTOR, label), query_result(Q))."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append(("panel %d %r %s" % (p.get("id", 0), p.get("title", ""),
                                                    t.get("refId", "?")), t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q) or \
            re.fullmatch(r"\s*query_result\((.*)\)\s*", q)
        if m:
            out.append(("variable $%s" % v.get("name"), m.group(1)))
    return out


def grafana_regex_value(value):
    """A single variable value as Grafana's Prometheus data source puts it into a
    regex matcher: regex-escaped, then escaped for a PromQL string."""
    return re.escape(value).replace("\\", "\\\\")


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")


def substitute(expr, variables):
    """Replaces Grafana variables ($x, ${x}, ${x:fmt}, [[x]]). Names that start with a
    digit ($1 in label_replace) are left alone, as Grafana does for unknown names; any
    other unknown name raises KeyError."""

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name[0].isdigit():
            return m.group(0)
        if name not in variables:
            raise KeyError("unknown dashboard variable $" + name)
        return variables[name]

    return _VAR.sub(repl, expr)


def grafana_variables(rate_interval="5s", interval="1s", range_="1m", node=".*", instance=".*",
                      head=".*"):
    def seconds(d):
        units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
        m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", d)
        return int(m.group(1)) * units[m.group(2)]

    return {
        "__rate_interval": rate_interval, "__interval": interval,
        "__interval_ms": str(int(seconds(interval) * 1000)),
        "__range": range_, "__range_s": str(int(seconds(range_))),
        "__range_ms": str(int(seconds(range_) * 1000)),
        "node": node, "instance": instance, "head": head,
    }


def row_panels(dashboard, title):
    """The panels under the row titled `title`: nested in it when collapsed, else those
    that follow it up to the next row."""
    out = []
    inside = False
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            if p.get("title") == title:
                out.extend(p.get("panels", []))
            inside = p.get("title") == title
        elif inside:
            out.append(p)
    return out


# ------------------------------------------------------------------------- runbooks

def github_anchors(markdown):
    """The anchors GitHub gives the headings of a Markdown file: the heading's text
    (inline code, emphasis and links reduced to their text) lower-cased, every character
    but letters, digits, '_', '-' and spaces dropped, spaces made '-'; a repeated anchor
    gets -1, -2, ... Headings inside fenced code blocks are not headings."""
    anchors = []
    seen = {}
    fence = None
    for line in markdown.splitlines():
        m = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if m:
            if fence is None:
                fence = m.group(1)[0]
            elif m.group(1)[0] == fence:
                fence = None
            continue
        if fence is not None:
            continue
        m = re.match(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", line)
        if not m:
            continue
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # links, images
        text = re.sub(r"<[^>]+>", "", text)  # inline HTML
        slug = "".join(c for c in text.lower() if c.isalnum() or c in "_- ").replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.append(slug if n == 0 else "%s-%d" % (slug, n))
    return anchors


def load_dashboard(path=DASHBOARD):
    with open(path) as f:
        return json.load(f)
