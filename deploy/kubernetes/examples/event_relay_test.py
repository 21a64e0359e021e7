#!/usr/bin/env python3
"""The event relay (examples/event-relay.py) between the real umpathd on its simulator and
a fake Kubernetes API server (HTTPS, a service account token): the Events it posts.

  python3 event_relay_test.py UMPATHD UMPATHCTL [--relay=PATH] [--modules=NODE_MODULES]

Scenario, each step asserting the Events the fake API server holds:
  1. head 1 has the volume label pv-1: its path fails and recovers three times: one
     PathDown and one PathRecovered Event about PersistentVolume pv-1 (its uid), count 3;
  2. head 2 (no volume): a path fails while the API server answers the POST 500, then
     201: one PathDown about the Node, count 1 (retried, not lost);
  3. head 2's other path fails while the API server answers every POST 500; the relay,
     stopped as it retries, exits at once; started again, it resumes from its state file
     (--since, --incarnation) at the document it had not finished: PathDown and
     NoUsablePath once each, and no second Event for what it had already posted;
  4. head 2's paths come back, one fails again, and umpathd restarts (a fresh simulator,
     every path up): the relay follows the new agent's snapshot and posts the recovery
     it saw there, once; nothing posted before is posted again; a resume point the
     agent no longer retains (REVISION_NOT_RETAINED) makes the watch start again from a
     snapshot, and the relay posts what it shows changed;
  5. head 1 (delayed removal 30 s) loses its paths: PathRemoved, NoUsablePath,
     RemovalPending; one returns: PathAdded, RemovalCancelled; it goes again and the
     delay is set to 0: HeadRemoved, all about pv-1;
  6. a flood, head 2's path failing and returning 30 times: at most a bucket's worth of
     requests (--burst 20, one more per --refill-secs 2), the repeats over it held and
     their counts sent as tokens come back (PathDown and PathRecovered count 31: none
     lost);
  7. a line that is not JSON, a JSON document that is no watch message and one cut
     short, put in front of the watch's output: skipped (stats.skipped 3), the relay
     keeps going;
  8. every Event the fake API server holds (after its PATCHes) validates against
     kubernetes-models' v1 Event schema (validate.mjs --events), every request carried
     the token, no two Events say the same about the same object.
Prints the Events with their counts and the relay's counters; "event_relay_test: N passed,
M failed"; exits 1 on a failure. --relay runs another copy of the relay (a mutant).
"""

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
H1 = "nguid-756d7073010000000000000000000001"
H2 = "nguid-756d7073010000000000000000000002"
NODE = "test-node"
# The relay's rate limit here: 20 Events per object at once, one more every 2 s. The
# Node gets 8 before step 6's flood and PersistentVolume pv-1 19 in all: none is held back.
BURST, REFILL_SECS = 20, 2
FLOOD = 30
TOKEN = "relay-test-token-" + os.urandom(6).hex()

passed = failed = 0
# A mutant's run ends at its first failure, and waits less for what will not come.
FAIL_FAST = False
WAIT_SECS = 30


class FailedFast(Exception):
    pass


def check(name, ok, why=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}{': ' + why if why else ''}", flush=True)
        if FAIL_FAST:
            raise FailedFast()
    return ok


# Mutants of the relay: (name, text of event-relay.py, its replacement). Each must fail
# the scenario (--mutants); the name says which behaviour the test then lacks.
MUTANTS = [
    ("no-aggregation", 'fresh = agg is not None and now - agg["last"] < self.args.aggregate_secs',
     "fresh = False"),
    ("no-retry-on-500", "if status < 500 and status != 429:", "if True:"),
    ("volume-ignored", 'volume = self.volume(head) if head else ""', 'volume = ""'),
    ("state-not-kept", "            if isinstance(state, dict):\n                return state",
     "            if isinstance(state, dict):\n                return {}"),
    ("crash-on-bad-document", "except (KeyError, TypeError, ValueError, AttributeError) as e:",
     "except ZeroDivisionError as e:"),
    ("snapshot-not-compared", "notes = diff(old if old is not None else healthy(new), new, cause)",
     "notes = []"),
    ("recovered-as-warning", '(hname, "Normal", "PathRecovered"', '(hname, "Warning", "PathRecovered"'),
    ("source-not-an-object", '"source": {"component": COMPONENT, "host": self.args.node},',
     '"source": COMPONENT,'),
    ("no-token", 'headers = {"Authorization": f"Bearer {token}"', 'headers = {"Authorization": "Bearer"'),
    ("no-rate-limit", "ok = tokens >= 1", "ok = True"),
    ("reply-not-checked", "if not isinstance(parsed, dict):  # a proxy's page, say", "if parsed is None:"),
    ("removed-head-on-node",
     'return ((self.before or {}).get("heads", {}).get(head) or {}).get("volume", "")', 'return ""'),
    ("removal-not-reported", 'if nh["removal_pending"] and not oh["removal_pending"]:', "if False:"),
    ("stop-waits-for-retries", "if self.wake.wait(secs):\n            raise Stopping()", "time.sleep(secs)"),
    ("no-flush", "                self.recorder.flush()\n", "                pass\n"),
    ("held-repeats-lost",
     '                agg["count"] += 1\n                agg["last"] = now\n                agg["unsent"]',
     '                agg["last"] = now\n                agg["unsent"]'),
]


def run_mutants(a):
    """Runs the scenario once per mutant; each run must fail. Returns the failures."""
    with open(a.relay, encoding="utf-8") as f:
        source = f.read()
    bad = 0
    for name, old, new in MUTANTS:
        print(f"=== mutant {name}", flush=True)
        if source.count(old) != 1:
            print(f"FAIL mutant {name}: its text is not once in {a.relay} (the mutant is stale)")
            bad += 1
            continue
        with tempfile.TemporaryDirectory(prefix="event-relay-mutant.") as d:
            copy = os.path.join(d, "event-relay.py")
            with open(copy, "w", encoding="utf-8") as f:
                f.write(source.replace(old, new))
            r = subprocess.run([sys.executable, __file__, a.umpathd, a.umpathctl, f"--relay={copy}",
                                f"--modules={a.modules}", "--fail-fast"], capture_output=True, text=True)
        fails = [line for line in r.stdout.splitlines() if line.startswith("FAIL")]
        for line in fails:
            print(f"    {line}")
        if r.returncode == 1 and fails:
            print(f"ok   mutant {name}: the scenario fails")
        else:
            print(f"FAIL mutant {name}: the scenario passed (exit {r.returncode})")
            bad += 1
    return bad


class FakeApi:
    """The Kubernetes API as far as the relay uses it: GET a PV or a Node, POST and PATCH
    core/v1 Events in namespace default. Records every request."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = {}  # name -> the Event as stored
        self.requests = []  # (method, path, status, token ok)
        self.fail_posts = 0  # the next POSTs answered 500

    def handle(self, method, path, headers, body):
        token_ok = headers.get("Authorization") == f"Bearer {TOKEN}"
        with self.lock:
            status, reply = self.answer(method, path, headers, body, token_ok)
            self.requests.append((method, path, status, token_ok))
        return status, reply

    def answer(self, method, path, headers, body, token_ok):
        if not token_ok:
            return 401, {"kind": "Status", "message": "Unauthorized"}
        objects = {"/api/v1/persistentvolumes/pv-1": "uid-pv-1", f"/api/v1/nodes/{NODE}": "uid-node"}
        if method == "GET":
            uid = objects.get(path)
            return (200, {"metadata": {"name": path.rsplit("/", 1)[1], "uid": uid}}) if uid else (404, {})
        prefix = "/api/v1/namespaces/default/events"
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, {"message": "not JSON"}
        if method == "POST" and path == prefix:
            if self.fail_posts > 0:
                self.fail_posts -= 1
                # JSON, but not the Status object the relay could expect.
                return 500, ["etcdserver: request timed out"]
            name = doc.get("metadata", {}).get("name", "")
            if name in self.events:
                return 409, {"message": "AlreadyExists"}
            self.events[name] = doc
            return 201, doc
        if method == "PATCH" and path.startswith(prefix + "/"):
            if headers.get("Content-Type") != "application/strategic-merge-patch+json":
                return 415, {"message": "patch type"}
            ev = self.events.get(path[len(prefix) + 1:])
            if ev is None:
                return 404, {}
            ev.update(doc)
            return 200, ev
        return 404, {}

    def summary(self):
        with self.lock:
            return [dict(e) for e in self.events.values()]

    def serve(self, cert, key):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                status, reply = api.handle(self.command, self.path, self.headers, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do

            def log_message(self, *a):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def wait_for(what, cond, timeout=None):
    timeout = timeout or WAIT_SECS
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    check(what, False, f"not within {timeout} s")
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("umpathd")
    ap.add_argument("umpathctl")
    ap.add_argument("--relay", default=os.path.join(HERE, "event-relay.py"))
    ap.add_argument("--modules", default=os.path.join(REPO, "build", "tools", "node_modules"))
    ap.add_argument("--fail-fast", action="store_true", help="stop at the first failure (a mutant's run)")
    ap.add_argument("--mutants", action="store_true", help="also run the scenario against each mutant")
    a = ap.parse_args()
    global FAIL_FAST, WAIT_SECS, failed
    if a.fail_fast:
        FAIL_FAST, WAIT_SECS = True, 8
    tmp = tempfile.mkdtemp(prefix="event-relay-test.")
    procs = []  # every process started, each the leader of its own group
    try:
        run(a, tmp, procs)
    except FailedFast:
        pass
    finally:
        # Each process group: a relay's umpathctl goes with it (SIGKILL leaves the relay
        # no time to end its child, which would reconnect to a gone agent for minutes).
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if a.mutants and not a.fail_fast:
        mutant_failures = run_mutants(a)
        failed += mutant_failures
        print(f"mutants: {len(MUTANTS) - mutant_failures} of {len(MUTANTS)} fail the scenario")
    print(f"event_relay_test: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


class Scenario:
    """umpathd, the relay and the fake API server, and the steps of the module's docstring."""

    def __init__(self, a, tmp, procs):
        self.a, self.tmp, self.procs = a, tmp, procs
        self.sock, self.state = f"{tmp}/umpathd.sock", f"{tmp}/relay-state.json"
        self.cert, key, self.token = f"{tmp}/api.crt", f"{tmp}/api.key", f"{tmp}/token"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", self.cert,
                        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        with open(self.token, "w", encoding="utf-8") as f:
            f.write(TOKEN + "\n")
        self.api = FakeApi()
        self.port = self.api.serve(self.cert, key).server_address[1]
        # The watch, with what a broken stream could carry in front of it (once).
        self.wrapper = f"{tmp}/umpathctl"
        with open(self.wrapper, "w", encoding="utf-8") as f:
            f.write(f"""#!/bin/sh
case " $* " in *" watch "*)
  if [ ! -e {tmp}/injected ]; then
    touch {tmp}/injected
    printf 'umpathctl: not JSON at all\\n'
    printf '{{\\n "event": {{\\n  "revision": "x",\\n  "type": 5\\n }}\\n}}\\n'
    printf '{{\\n "event": {{\\n  "revision": "1",\\n'
  fi ;;
esac
exec {a.umpathctl} "$@"
""")
        os.chmod(self.wrapper, 0o755)

    def start_agent(self):
        with open(f"{self.tmp}/umpathd.log", "a", encoding="utf-8") as log:
            self.agent = subprocess.Popen(
                [self.a.umpathd, f"--socket={self.sock}", f"--state_file={self.tmp}/heads",
                 f"--admin_uids={os.getuid()}", "--sim=1:2:2", "--kernel=false", "--ublk=false",
                 "--handover_socket=", f"--node={NODE}"], stdout=log, stderr=log, start_new_session=True)
        self.procs.append(self.agent)
        wait_for("umpathd answers", lambda: self.ctl("heads", quiet=True) == 0)

    def ctl(self, *args, quiet=False):
        r = subprocess.run([self.a.umpathctl, f"--socket={self.sock}", *args], capture_output=True, text=True)
        if r.returncode != 0 and not quiet:
            print(f"umpathctl {' '.join(args)}: {r.returncode} {r.stderr.strip()}")
        return r.returncode

    def start_relay(self):
        with open(f"{self.tmp}/relay.log", "a", encoding="utf-8") as log:
            self.relay = subprocess.Popen(
                [sys.executable, self.a.relay, f"--node={NODE}", f"--socket={self.sock}",
                 f"--umpathctl={self.wrapper}", f"--state-file={self.state}",
                 f"--api-server=https://127.0.0.1:{self.port}", f"--token-file={self.token}",
                 f"--ca-file={self.cert}", "--backoff-secs=0.2", f"--burst={BURST}",
                 f"--refill-secs={REFILL_SECS}", "--flush-secs=1"], stdout=log, stderr=log,
                start_new_session=True)
        self.procs.append(self.relay)

    def stats(self):
        try:
            with open(self.state, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def events(self, reason=None, kind=None, name=None, contains=""):
        return [e for e in self.api.summary() if (reason is None or e["reason"] == reason) and
                (kind is None or e["involvedObject"]["kind"] == kind) and
                (name is None or e["involvedObject"]["name"] == name) and contains in e["message"]]

    def one(self, what, reason, kind, name, contains, count, etype):
        """The one Event about that with that count (waited for), of that type."""
        got = wait_for(what, lambda: [e for e in self.events(reason, kind, name, contains)
                                      if e.get("count") == count])
        if not got:
            print("    events now: " + "; ".join(
                f"{e['reason']}/{e['involvedObject']['name']} x{e.get('count')}: {e['message']}"
                for e in self.api.summary()))
            return None
        all_of = self.events(reason, kind, name, contains)
        check(f"{what}: one Event", len(all_of) == 1, f"{len(all_of)}")
        check(f"{what}: type {etype}", got[0]["type"] == etype, got[0]["type"])
        return got[0]

    def on_pv(self, what, reason, contains, count, etype):
        return self.one(what, reason, "PersistentVolume", "pv-1", contains, count, etype)

    def on_node(self, what, reason, contains, count, etype):
        return self.one(what, reason, "Node", NODE, contains, count, etype)

    def volume_head(self):
        # 1. A volume-labelled head: its path fails and recovers, three times.
        for i in range(1, 4):
            self.ctl("fail-path", H1, "sim-0-0")
            down = self.on_pv(f"1.{i} head 1 path down", "PathDown", "path sim-0-0", i, "Warning")
            self.ctl("reinstate-path", H1, "sim-0-0")
            up = self.on_pv(f"1.{i} head 1 path recovered", "PathRecovered", "path sim-0-0", i, "Normal")
        if down and up:
            check("1 the PV's uid in involvedObject", down["involvedObject"].get("uid") == "uid-pv-1",
                  json.dumps(down["involvedObject"]))
            want = (f"head {H1} path sim-0-0: optimized -> optimized,failed: failed by an administrator"
                    f" (node {NODE})")
            check("1 PathDown's message", down["message"] == want, down["message"])
            check("1 PathRecovered's message says reinstated", "optimized,failed -> optimized: reinstated"
                  in up["message"], up["message"])
            check("1 lastTimestamp set by the PATCHes, not before firstTimestamp",
                  down["lastTimestamp"] >= down["firstTimestamp"],
                  f"{down['firstTimestamp']} {down['lastTimestamp']}")

    def api_answers_500(self):
        # 2. A head without volume, while the API server answers 500 once.
        self.api.fail_posts = 1
        self.ctl("fail-path", H2, "sim-0-1")
        node_down = self.on_node("2 head 2 path down (after a 500)", "PathDown", f"head {H2} path sim-0-1", 1,
                                 "Warning")
        with self.api.lock:
            posts = [r[2] for r in self.api.requests if r[0] == "POST"]
        check("2 the POST answered 500 was retried and then created", posts[-2:] == [500, 201],
              str(posts[-4:]))
        if node_down:
            check("2 the Node's uid in involvedObject", node_down["involvedObject"].get("uid") == "uid-node")

    def relay_stopped_while_retrying(self):
        # 3. The API server fails every POST, and the relay is stopped while it retries: it
        # stops at once, and what it was posting comes once it is back.
        before = len(self.api.summary())
        with self.api.lock:
            self.api.fail_posts, answered = 10**6, len(self.api.requests)
        self.ctl("fail-path", H2, "sim-0-0")
        wait_for("3 the relay retries a POST",
                 lambda: any(r[0] == "POST" and r[2] == 500 for r in self.api.requests[answered:]))
        self.relay.send_signal(signal.SIGTERM)
        # The API server never recovers here: a relay that let its retries run would never
        # end, so the wait's bound is a deadline for a hang, not a measure of "at once".
        try:
            rc = self.relay.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = "still running 60 s later"
        check("3 the relay stops on SIGTERM though retrying, with exit 0", rc == 0, str(rc))
        with self.api.lock:
            self.api.fail_posts = 0
        snapshots = self.stats().get("stats", {}).get("snapshots")
        self.start_relay()
        self.on_node("3 head 2's other path down, after the relay resumed", "PathDown",
                     f"head {H2} path sim-0-0", 1, "Warning")
        self.on_node("3 head 2 has no usable path", "NoUsablePath", H2, 1, "Warning")
        check("3 resumed from the state file (no new snapshot)",
              self.stats().get("stats", {}).get("snapshots") == snapshots,
              f"{snapshots} -> {self.stats().get('stats', {})}")
        check("3 nothing posted twice: two more Events", len(self.api.summary()) == before + 2,
              f"{before} -> {len(self.api.summary())}")

    def agent_restarts(self):
        # 4. umpathd restarts: its fresh simulator has every path up.
        self.ctl("reinstate-path", H2, "sim-0-0")
        self.on_node("4 head 2 usable again", "UsablePathRestored", H2, 1, "Normal")
        self.ctl("reinstate-path", H2, "sim-0-1")
        self.on_node("4 head 2 path sim-0-1 recovered", "PathRecovered", f"head {H2} path sim-0-1", 1,
                     "Normal")
        self.ctl("fail-path", H2, "sim-0-1")
        self.on_node("4 head 2 path sim-0-1 down again (PATCHed)", "PathDown", f"head {H2} path sim-0-1", 2,
                     "Warning")
        before = {e["metadata"]["name"]: e.get("count") for e in self.api.summary()}
        self.agent.send_signal(signal.SIGTERM)
        check("4 umpathd stops", self.agent.wait(timeout=60) == 0)
        self.start_agent()
        seen = self.on_node("4 the recovery the new agent's snapshot shows", "PathRecovered",
                            f"head {H2} path sim-0-1: optimized,failed -> optimized: "
                            "seen in the agent's snapshot", 1, "Normal")
        time.sleep(1)  # anything else the relay would post about the restart
        after = {e["metadata"]["name"]: e.get("count") for e in self.api.summary()}
        new = sorted(set(after) - set(before))
        check("4 one new Event across the restart", len(new) == 1 and seen is not None and
              new[0] == seen["metadata"]["name"], str(new))
        check("4 no Event's count moved across the restart", all(after[n] == c for n, c in before.items()),
              str({n: (c, after[n]) for n, c in before.items() if after[n] != c}))
        # The new agent is followed: head 1 (its volume label kept by umpathd) fails again.
        self.ctl("fail-path", H1, "sim-0-1")
        self.on_pv("4 head 1 path sim-0-1 down, from the new agent", "PathDown", "path sim-0-1", 1, "Warning")
        # A resume point the agent no longer has (REVISION_NOT_RETAINED: revision 1 is far
        # older than this journal's first): the watch starts again from a snapshot, which
        # shows what changed while the relay was stopped.
        self.relay.send_signal(signal.SIGTERM)
        self.relay.wait(timeout=10)
        kept = self.stats()
        kept["revision"] = 1
        with open(self.state, "w", encoding="utf-8") as f:
            json.dump(kept, f)
        self.ctl("reinstate-path", H1, "sim-0-1")
        self.start_relay()
        self.on_pv("4 head 1 path sim-0-1 recovered, seen in a snapshot after REVISION_NOT_RETAINED",
                   "PathRecovered",
                   "path sim-0-1: optimized,failed -> optimized: seen in the agent's snapshot", 1, "Normal")
        # Saved once the Event is out: waited for.
        wait_for("4 that snapshot is the relay's third",
                 lambda: self.stats().get("stats", {}).get("snapshots") == 3)

    def head_removed(self):
        # 5. Head 1 loses its paths (the namespace detached from each controller) with a
        # delayed removal of 30 s: its removal is pending, cancelled when one returns, pending
        # again, and done at once when the delay is set to 0: all about pv-1, the head's
        # volume label kept from before the head was removed.
        self.ctl("set-delayed-removal", H1, "30")
        self.ctl("sim", "lose-ns", "sim-0-1", "1")
        self.ctl("sim", "lose-ns", "sim-0-0", "1")
        self.on_pv("5 head 1 path sim-0-0 removed", "PathRemoved", "path sim-0-0", 1, "Warning")
        self.on_pv("5 head 1 has no usable path", "NoUsablePath", H1, 1, "Warning")
        self.on_pv("5 head 1's removal pending", "RemovalPending", f"head {H1} will be removed at", 1,
                   "Warning")
        self.ctl("sim", "return-ns", "sim-0-0", "1")
        self.on_pv("5 head 1's removal cancelled", "RemovalCancelled", H1, 1, "Normal")
        self.on_pv("5 head 1 path sim-0-0 back", "PathAdded", "path sim-0-0", 1, "Normal")
        self.ctl("sim", "lose-ns", "sim-0-0", "1")
        self.on_pv("5 head 1 path sim-0-0 removed again", "PathRemoved", "path sim-0-0", 2, "Warning")
        wait_for("5 head 1's removal pending again",
                 lambda: len(self.events("RemovalPending", "PersistentVolume")) == 2)
        # The head goes with the call, which answers OK with the head as it went.
        check("5 set-delayed-removal 0 removes head 1 and exits 0",
              self.ctl("set-delayed-removal", H1, "0") == 0)
        self.on_pv("5 head 1 removed", "HeadRemoved", H1, 1, "Warning")

    def flood(self):
        # 6. A flood: head 2's path fails and returns FLOOD times in a row. Both Events exist
        # already (steps 3 and 4): each note is a repeat, sent while the Node's bucket has
        # tokens and otherwise counted, and the count sent as tokens come back (--flush-secs).
        with self.api.lock:
            sent_before = len(self.api.requests)
        events_before = self.stats().get("stats", {}).get("events", 0)
        t0 = time.monotonic()
        for _ in range(FLOOD):
            self.ctl("fail-path", H2, "sim-0-0")
            self.ctl("reinstate-path", H2, "sim-0-0")
        # One event each (path-state-changed).
        wait_for("6 the relay read the flood",
                 lambda: self.stats().get("stats", {}).get("events", 0) >= events_before + 2 * FLOOD)
        flood_secs = time.monotonic() - t0
        with self.api.lock:
            flood_requests = len(self.api.requests) - sent_before
        # At most a full bucket and what it refilled meanwhile.
        limit = BURST + int(flood_secs / REFILL_SECS) + 1
        check(f"6 {2 * FLOOD} repeats in {flood_secs:.1f} s: at most {limit} requests",
              flood_requests <= limit, f"{flood_requests}")
        st = self.stats().get("stats", {})
        check("6 the repeats over the limit are held, not dropped", st.get("held", 0) > 0 and
              st.get("rate_limited", 0) == 0, str(st))
        self.on_node("6 PathDown's count, every repeat held back sent", "PathDown", f"head {H2} path sim-0-0",
                     FLOOD + 1, "Warning")
        self.on_node("6 PathRecovered's count, every repeat held back sent", "PathRecovered",
                     f"head {H2} path sim-0-0: optimized,failed -> optimized: reinstated",
                     FLOOD + 1, "Normal")

    def what_was_sent(self):
        # 7, 8. What was skipped, what was sent, what the API server holds.
        st = self.stats().get("stats", {})
        check("7 the three broken documents skipped", st.get("skipped") == 3, str(st))
        check("7 the relay is still running", self.relay.poll() is None)
        check("8 nothing lost or refused", st.get("lost", 0) == 0 and st.get("rejected", 0) == 0, str(st))
        with self.api.lock:
            bad_token = sum(1 for r in self.api.requests if not r[3])
            methods = {}
            for r in self.api.requests:
                methods[f"{r[0]} {r[2]}"] = methods.get(f"{r[0]} {r[2]}", 0) + 1
        check("8 every request carried the service account's token", bad_token == 0, f"{bad_token} without")
        held = self.api.summary()
        keys = [(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"], e["message"])
                for e in held]
        check("8 no two Events say the same about the same object", len(keys) == len(set(keys)),
              str([k for k in keys if keys.count(k) > 1]))
        events_file = f"{self.tmp}/events.json"
        with open(events_file, "w", encoding="utf-8") as f:
            json.dump(held, f)
        v = subprocess.run(["node", os.path.join(REPO, "deploy", "kubernetes", "validate.mjs"),
                            f"--events={events_file}", f"--modules={self.a.modules}", f"--repo={REPO}"],
                           capture_output=True, text=True)
        for line in v.stdout.splitlines():
            if line.startswith("FAIL"):
                print(f"    {line}")
        check(f"8 the {len(held)} Events validate against kubernetes-models' v1 Event", v.returncode == 0 and
              f"{len(held)} passed, 0 failed" in v.stdout,
              v.stdout.strip().splitlines()[-1] if v.stdout else v.stderr)

        print("figures:")
        for e in sorted(held, key=lambda e: e["firstTimestamp"] + e["metadata"]["name"]):
            obj = f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}"
            print(f"  {e['type']:7} {e['reason']:18} {obj} count={e.get('count')}: {e['message']}")
        print(f"  requests: {json.dumps(methods, sort_keys=True)}")
        print(f"  relay stats: {json.dumps(st, sort_keys=True)}")
        if failed:
            with open(f"{self.tmp}/relay.log", encoding="utf-8") as f:
                print("relay log (last 40 lines):\n" + "".join(f.readlines()[-40:]))


def run(a, tmp, procs):
    sc = Scenario(a, tmp, procs)
    sc.start_agent()
    check("umpathctl settings set HEAD --volume=pv-1", sc.ctl("settings", "set", H1, "--volume=pv-1") == 0)
    sc.start_relay()
    wait_for("the relay read the first snapshot", lambda: sc.stats().get("stats", {}).get("snapshots") == 1)
    for step in (sc.volume_head, sc.api_answers_500, sc.relay_stopped_while_retrying, sc.agent_restarts,
                 sc.head_removed, sc.flood, sc.what_was_sent):
        step()


if __name__ == "__main__":
    sys.exit(main())
