#!/usr/bin/env python3
"""umpath-event-relay: what umpathd's WatchEvents says, as Kubernetes Events.

Follows `umpathctl -o json watch` (umpathctl resumes after a dropped stream, and starts
again from a snapshot when the agent restarted or no longer has the revision) and posts
core/v1 Events to the API server with the pod's service account:

  Warning  PathDown, PathRemoved, NoUsablePath, RemovalPending, RemovalRescheduled,
           HeadRemoved, FailingFast, PathRejected, AnaLogRejected, ControllerResetRequested
  Normal   PathRecovered, PathAdded, UsablePathRestored, RemovalCancelled,
           FailingFastEnded

about the head's PersistentVolume when the head has a volume label (HeadSettings.volume,
which the CSI sidecar sets), else about the Node. Events are derived from a model of the
heads (paths, their states, removal, fast fail) that every event and every snapshot
updates: a snapshot after an agent restart yields only what changed while the relay was
not watching, never the same Event twice. A repeat of an Event (same object, reason and
message) within --aggregate-secs PATCHes its count; each object has a token bucket
(--burst, one token per --refill-secs); a repeat over the limit is counted, and the count
PATCHed when the bucket has a token again (looked at every --flush-secs); a new Event
over it is dropped with a log line. The API server's 5xx, 429 and connection errors are
retried with backoff; any other refusal drops that one Event with a log line. A line of
the watch that is not a document the relay knows is skipped with a log line, and so is an
Event the relay fails to build.

The state file (--state-file) keeps the resume point (incarnation, revision), the model,
the aggregated Events and counters (the "stats" a test reads), so a restarted relay
resumes where it stopped (at least once: an Event being posted as it died is posted
again).

  python3 event-relay.py --node=NODE [--socket=/run/umpath/umpathd.sock]
      [--umpathctl=umpathctl] [--state-file=PATH] [--api-server=URL]
      [--token-file=...] [--ca-file=...]

Standard library only. Defaults read the in-cluster configuration:
KUBERNETES_SERVICE_HOST/PORT and /var/run/secrets/kubernetes.io/serviceaccount.
"""

import argparse
import copy
import datetime
import http.client
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
COMPONENT = "umpath-event-relay"
# A pretty-printed document longer than this is no watch message of ours.
MAX_DOCUMENT_BYTES = 16 << 20
# core/v1 Event limits the API server enforces (message: 1 KiB in events.k8s.io).
MAX_MESSAGE = 1024


def log(msg):
    print(f"event-relay: {msg}", file=sys.stderr, flush=True)


def now_rfc3339(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- The watch: umpathctl's JSON, one pretty-printed document after another. ----------

class Skipped:
    """What documents() yields for what does not parse: why."""

    def __init__(self, why):
        self.why = why


def documents(stream):
    """Yields each document of the stream, and a Skipped for what does not parse.

    umpathctl indents everything inside a document, so a line starting with "{" begins
    one and a line "}" ends it: a broken document costs only itself.
    """
    buf, size = [], 0
    for raw in stream:
        line = raw.decode("utf-8", "replace")
        if line.startswith("{") and buf:
            yield Skipped(f"an unfinished document of {len(buf)} lines")
            buf, size = [], 0
        if not buf and not line.startswith("{"):
            if line.strip():
                yield Skipped(f"not a JSON document: {line.strip()[:120]!r}")
            continue
        buf.append(line)
        size += len(line)
        if size > MAX_DOCUMENT_BYTES:
            yield Skipped(f"a document over {MAX_DOCUMENT_BYTES} bytes")
            buf, size = [], 0
            continue
        end = line.rstrip("\r\n")
        if end != "}" and not (len(buf) == 1 and end.endswith("}")):
            continue
        text = "".join(buf)
        buf, size = [], 0
        try:
            doc = json.loads(text)
        except ValueError as e:
            yield Skipped(f"a document that is not JSON ({e})")
        else:
            yield doc
    if buf:
        yield Skipped("a document cut short by the end of the stream")


def skip(stats, why):
    stats["skipped"] = stats.get("skipped", 0) + 1
    log(f"skipped {why}")


# --- The model: heads, their paths and controllers, as the agent last told. -----------

SELECTABLE_ANA = ("optimized", "non-optimized")
# SEMANTICS.md: a path is usable while its controller is LIVE (or DELETING).
USABLE_CONTROLLER = ("live", "deleting")


def enum_name(value, prefix):
    return str(value).removeprefix(prefix).lower().replace("_", "-")


def path_text(p):
    """A snapshot path's state as events write it ("optimized,failed")."""
    return (enum_name(p.get("ana_state", ""), "ANA_STATE_") +
            (",ana-pending" if p.get("ana_pending") else "") +
            ("" if p.get("ready", True) else ",not-ready") +
            (",failed" if p.get("admin_failed") else ""))


def model_from_snapshot(snap):
    heads, controllers = {}, {}
    for c in snap.get("controllers", []):
        controllers[c["name"]] = enum_name(c.get("state", ""), "CONTROLLER_STATE_")
    for h in snap.get("heads", []):
        paths = {}
        for p in h.get("paths", []):
            paths[p["name"]] = {"state": path_text(p), "controller": p.get("controller", "")}
            controllers.setdefault(p.get("controller", ""),
                                   enum_name(p.get("controller_state", ""), "CONTROLLER_STATE_"))
        heads[h["name"]] = {
            "volume": h.get("volume", ""), "paths": paths,
            "removal_pending": bool(h.get("removal_pending")),
            "deadline": h.get("removal_deadline", "") or "",
            "failing_fast": bool(h.get("failing_fast")), "had_usable": True, "looked": time.time(),
        }
    return {"heads": heads, "controllers": controllers}


def healthy(model):
    """The model with nothing wrong: what the first snapshot is compared with."""
    m = copy.deepcopy(model)
    for c in m["controllers"]:
        m["controllers"][c] = "live"
    for h in m["heads"].values():
        h.update(removal_pending=False, failing_fast=False, had_usable=True)
        for p in h["paths"].values():
            p["state"] = "optimized"
    return m


def usable(model, p):
    return (p["state"] in SELECTABLE_ANA and
            model["controllers"].get(p["controller"], "live") in USABLE_CONTROLLER)


def short(name):
    return name.rsplit("/", 1)[-1]


def describe(model, p):
    c = model["controllers"].get(p["controller"], "live")
    return p["state"] + ("" if c in USABLE_CONTROLLER else f" (controller {c})")


def apply_event(m, e):
    """Moves the model past one event; returns the notes only the event itself says."""
    t = e["type"].removeprefix("EVENT_TYPE_")
    head, path, ctrl = e.get("head", ""), e.get("path", ""), e.get("controller", "")
    h = m["heads"].get(head)
    why = e.get("reason", "")
    if t == "HEAD_CREATED":
        m["heads"][head] = {"volume": "", "paths": {}, "removal_pending": False, "deadline": "",
                            "failing_fast": False, "had_usable": False, "lookup": True}
    elif t == "HEAD_REMOVED":
        m["heads"].pop(head, None)
    elif t == "PATH_ADDED" and h is not None:
        h["paths"][path] = {"state": e.get("to", ""), "controller": ctrl}
    elif t == "PATH_STATE_CHANGED" and h is not None and path in h["paths"]:
        h["paths"][path]["state"] = e.get("to", "")
    elif t == "PATH_REMOVED" and h is not None:
        h["paths"].pop(path, None)
    elif t == "CONTROLLER_ADDED":
        m["controllers"][ctrl] = e.get("to", "") or "live"
    elif t == "CONTROLLER_STATE_CHANGED":
        if e.get("to") == "reset-requested":
            return [(None, "Warning", "ControllerResetRequested", f"controller {short(ctrl)}: {why}")]
        m["controllers"][ctrl] = e.get("to", "")
    elif t == "CONTROLLER_REMOVED":
        m["controllers"].pop(ctrl, None)
    elif t in ("REMOVAL_SCHEDULED", "REMOVAL_RESCHEDULED") and h is not None:
        h["removal_pending"] = True
        was, h["deadline"] = h["deadline"], e.get("removal_deadline", "")
        if t == "REMOVAL_RESCHEDULED" and was:
            return [(head, "Warning", "RemovalRescheduled",
                     f"head {short(head)}: removal at {h['deadline']} (was {was}): {why}")]
    elif t == "REMOVAL_CANCELLED" and h is not None:
        h["removal_pending"], h["deadline"] = False, ""
    elif t in ("FAST_FAIL_STARTED", "FAST_FAIL_ENDED") and h is not None:
        h["failing_fast"] = t == "FAST_FAIL_STARTED"
    elif t == "PATH_REJECTED":
        return [(head or None, "Warning", "PathRejected",
                 f"path {short(path or ctrl)} of head {short(head) or '?'} rejected: {why}")]
    elif t == "ANA_LOG_REJECTED":
        return [(head or None, "Warning", "AnaLogRejected", f"controller {short(ctrl)}: {why}")]
    return []


def diff(old, new, cause):
    """Notes (head, type, reason, message) for what changed from `old` to `new`."""
    notes = []
    for hname, oh in old["heads"].items():
        hid = short(hname)
        nh = new["heads"].get(hname)
        if nh is None:
            notes.append((hname, "Warning", "HeadRemoved", f"head {hid} removed: {cause}"))
            continue
        for pname, op in oh["paths"].items():
            np = nh["paths"].get(pname)
            what = f"head {hid} path {short(pname)}"
            if np is None:
                notes.append((hname, "Warning", "PathRemoved", f"{what} removed: {cause}"))
            elif usable(old, op) != usable(new, np):
                change = f"{describe(old, op)} -> {describe(new, np)}: {cause}"
                notes.append((hname, "Normal", "PathRecovered", f"{what}: {change}") if usable(new, np)
                             else (hname, "Warning", "PathDown", f"{what}: {change}"))
        for pname in nh["paths"].keys() - oh["paths"].keys():
            if oh.get("had_usable"):
                notes.append((hname, "Normal", "PathAdded",
                              f"head {hid} path {short(pname)} added: {describe(new, nh['paths'][pname])}"))
        was = sum(usable(old, p) for p in oh["paths"].values())
        now = sum(usable(new, p) for p in nh["paths"].values())
        if was and not now:
            notes.append((hname, "Warning", "NoUsablePath", f"head {hid} has no usable path: {cause}"))
        elif now and not was and oh.get("had_usable"):
            notes.append((hname, "Normal", "UsablePathRestored",
                          f"head {hid} has a usable path again ({now})"))
        if nh["removal_pending"] and not oh["removal_pending"]:
            notes.append((hname, "Warning", "RemovalPending",
                          f"head {hid} will be removed at {nh['deadline'] or '?'} unless a path returns"))
        elif oh["removal_pending"] and not nh["removal_pending"]:
            notes.append((hname, "Normal", "RemovalCancelled", f"head {hid} stays: {cause}"))
        if nh["failing_fast"] != oh["failing_fast"]:
            notes.append((hname, "Warning", "FailingFast", f"head {hid} fails I/O at once: {cause}")
                         if nh["failing_fast"] else
                         (hname, "Normal", "FailingFastEnded", f"head {hid} serves I/O again: {cause}"))
    for h in new["heads"].values():
        h["had_usable"] = h.get("had_usable") or any(usable(new, p) for p in h["paths"].values())
    return notes


# --- The API server. -------------------------------------------------------------------

class Kube:
    """core/v1 calls with the service account's token (read afresh: it is rotated)."""

    def __init__(self, server, token_file, ca_file, timeout=10):
        u = urllib.parse.urlsplit(server)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.token_file, self.timeout = token_file, timeout
        self.ctx = ssl.create_default_context(cafile=ca_file) if self.https else None

    def request(self, method, path, body=None, content_type="application/json"):
        with open(self.token_file, encoding="utf-8") as f:
            token = f.read().strip()
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                   "User-Agent": COMPONENT}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            text = r.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(text) if text else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):  # a proxy's page, say
            parsed = {"message": text[:200].decode("utf-8", "replace")}
        return r.status, parsed


class Stopping(Exception):
    """SIGTERM came while a call waited to be retried: the document is not done."""


class Recorder:
    """Aggregates, rate-limits and delivers Events (core/v1, namespace `namespace`)."""

    def __init__(self, kube, args, state, pause):
        self.kube, self.args = kube, args
        self.pause = pause  # waits so many seconds; raises Stopping on SIGTERM
        self.aggregates = state.setdefault("aggregates", {})
        self.stats = state.setdefault("stats", {})
        self.buckets = {}
        self.uids = {}

    def count(self, key, n=1):
        self.stats[key] = self.stats.get(key, 0) + n

    def uid(self, kind, name):
        """The object's uid (kubectl describe matches Events on it); "" if unknown."""
        hit = self.uids.get((kind, name))
        if hit and hit[1] > time.monotonic():
            return hit[0]
        plural = "persistentvolumes" if kind == "PersistentVolume" else "nodes"
        path = f"/api/v1/{plural}/{urllib.parse.quote(name)}"
        uid = ""
        try:
            status, obj = self.kube.request("GET", path)
            if status == 200:
                uid = obj.get("metadata", {}).get("uid", "")
            else:
                log(f"GET {path}: {status}; the Event goes without the object's uid")
        except (OSError, http.client.HTTPException) as e:
            log(f"GET {path}: {e}; the Event goes without the object's uid")
        self.uids[(kind, name)] = (uid, time.monotonic() + (600 if uid else 60))
        return uid

    def allow(self, objkey):
        rate, burst = 1.0 / self.args.refill_secs, self.args.burst
        tokens, at = self.buckets.get(objkey, (burst, time.monotonic()))
        now = time.monotonic()
        tokens = min(burst, tokens + (now - at) * rate)
        ok = tokens >= 1
        self.buckets[objkey] = (tokens - 1 if ok else tokens, now)
        return ok

    def flush(self):
        """PATCHes the counts of repeats held back by the rate limit, as tokens allow, and
        forgets the Events no repeat can join any more (the state file stays small)."""
        now = time.time()
        for key, agg in list(self.aggregates.items()):
            if now - agg["last"] >= self.args.aggregate_secs:
                del self.aggregates[key]
                continue
            kind, name = json.loads(key)[:2]
            if not agg.get("unsent") or not self.allow(f"{kind}/{name}"):
                continue
            patch = {"count": agg["count"], "lastTimestamp": now_rfc3339(agg["last"])}
            status, _ = self.send("PATCH", f"{self.events_path()}/{agg['name']}", patch,
                                  "application/strategic-merge-patch+json")
            if status in (200, 201):
                agg.pop("unsent")
                self.count("flushed")
            elif status is not None:
                agg.pop("unsent")  # gone or refused: the count goes with it
                self.fail(status, "PATCH", agg["name"], json.loads(key)[3])

    def record(self, kind, name, etype, reason, message):
        message = message[:MAX_MESSAGE]
        objkey = f"{kind}/{name}"
        key = json.dumps([kind, name, etype, reason, message])
        now = time.time()
        agg = self.aggregates.get(key)
        fresh = agg is not None and now - agg["last"] < self.args.aggregate_secs
        if not self.allow(objkey):
            if fresh:
                agg["count"] += 1
                agg["last"] = now
                agg["unsent"] = True
                self.count("held")
                log(f"rate limit for {objkey}: {reason} counted ({agg['count']}), sent later")
            else:
                self.count("rate_limited")
                log(f"rate limit for {objkey}: {etype} {reason} dropped: {message}")
            return
        if fresh:
            agg["count"] += 1
            agg["last"] = now
            patch = {"count": agg["count"], "lastTimestamp": now_rfc3339(now)}
            status, _ = self.send("PATCH", f"{self.events_path()}/{agg['name']}", patch,
                                  "application/strategic-merge-patch+json")
            if status in (200, 201):
                agg.pop("unsent", None)
                self.count("patched")
                return
            if status != 404:
                self.fail(status, "PATCH", agg["name"], reason)
                return
            # Expired (the API server keeps Events an hour by default): a new one.
        self.post(kind, name, etype, reason, message, now, key)

    def post(self, kind, name, etype, reason, message, now, key):
        obj = {"kind": kind, "apiVersion": "v1", "name": name}
        uid = self.uid(kind, name)
        if uid:
            obj["uid"] = uid
        for _ in range(2):
            ev_name = f"{name[:200]}.{time.time_ns():x}"
            body = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": ev_name, "namespace": self.args.namespace},
                "involvedObject": obj, "type": etype, "reason": reason, "message": message,
                "source": {"component": COMPONENT, "host": self.args.node},
                "reportingComponent": f"umpath.io/{COMPONENT}", "reportingInstance": self.args.node,
                "firstTimestamp": now_rfc3339(now), "lastTimestamp": now_rfc3339(now), "count": 1,
            }
            status, _ = self.send("POST", self.events_path(), body)
            if status != 409:  # a name taken (two relays' clocks): another name
                break
        if status in (200, 201):
            self.aggregates[key] = {"name": ev_name, "count": 1, "first": now, "last": now}
            self.count("posted")
            log(f"posted {etype} {reason} about {kind} {name}: {message}")
        else:
            self.fail(status, "POST", ev_name, reason)

    def events_path(self):
        return f"/api/v1/namespaces/{self.args.namespace}/events"

    def fail(self, status, method, ev_name, reason):
        if status is None:
            self.count("lost")
            log(f"{method} Event {ev_name} ({reason}): gave up after {self.args.attempts} attempts")
        else:
            self.count("rejected")
            log(f"{method} Event {ev_name} ({reason}): refused with {status}; dropped")

    def send(self, method, path, body, content_type="application/json"):
        """The status of the call; None when every attempt failed on a retryable error."""
        delay = self.args.backoff_secs
        for attempt in range(1, self.args.attempts + 1):
            try:
                status, reply = self.kube.request(method, path, body, content_type)
                if status < 500 and status != 429:
                    return status, reply
                why = f"{status} {reply.get('message', '')}".strip()
            except (OSError, http.client.HTTPException) as e:
                why = str(e) or type(e).__name__
            self.count("retries")
            if attempt == self.args.attempts:
                break
            log(f"{method} {path}: {why}; retrying in {delay:g} s")
            self.pause(delay)
            delay = min(delay * 2, 30)
        return None, {}


# --- The relay. -------------------------------------------------------------------------

class Relay:
    def __init__(self, args):
        self.args = args
        self.state = self.load()
        self.stats = self.state.setdefault("stats", {})
        self.wake = threading.Event()  # set by SIGTERM: no more waiting
        self.recorder = Recorder(Kube(args.api_server, args.token_file, args.ca_file), args, self.state,
                                 self.pause)
        self.proc = None
        # The models before and after the document being handled.
        self.before = self.after = None
        self.stopping = False

    def load(self):
        try:
            with open(self.args.state_file, encoding="utf-8") as f:
                state = json.load(f)
            if isinstance(state, dict):
                return state
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log(f"state file {self.args.state_file} unreadable ({e}): starting afresh")
        return {}

    def save(self):
        tmp = f"{self.args.state_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f)
        os.replace(tmp, self.args.state_file)

    def stop(self, *_):
        self.stopping = True
        self.wake.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()

    def pause(self, secs):
        if self.wake.wait(secs):
            raise Stopping()

    def run(self):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        backoff = 1
        while not self.stopping:
            cmd = [self.args.umpathctl, f"--socket={self.args.socket}", "-o", "json", "watch"]
            if self.state.get("incarnation") and self.state.get("revision"):
                cmd += [f"--since={self.state['revision']}", f"--incarnation={self.state['incarnation']}"]
            log(f"watching: {' '.join(cmd)}")
            served = False
            try:
                self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
            except OSError as e:
                log(f"cannot run {self.args.umpathctl}: {e}")
            else:
                try:
                    served = self.follow(self.proc.stdout)
                except Stopping:
                    # Saved without that document: the next run sees it again (at least
                    # once; what it had posted then counts one more).
                    self.proc.terminate()
                rc = self.proc.wait()
                log(f"umpathctl watch exited with {rc}")
                if rc == 2 and self.state.get("incarnation"):
                    # A usage error: an umpathctl older than --incarnation. The resume
                    # point goes; the next snapshot is compared with the model.
                    log("umpathctl refused its arguments: watching from a snapshot")
                    self.state.pop("incarnation", None)
            if self.stopping:
                break
            backoff = 1 if served else min(backoff * 2, 30)
            self.wake.wait(backoff)
        self.save()

    def follow(self, stream):
        """Handles the stream's documents until it ends; between them, every
        --flush-secs, sends the repeats the rate limit held. True if one came."""
        docs = queue.Queue(maxsize=64)
        end = object()

        def read():
            for item in documents(stream):
                docs.put(item)
            docs.put(end)

        threading.Thread(target=read, daemon=True).start()
        served = False
        flush_at = time.monotonic() + self.args.flush_secs
        while True:
            try:
                item = docs.get(timeout=max(0, flush_at - time.monotonic()))
            except queue.Empty:
                item = None
            if item is end:
                return served
            if isinstance(item, Skipped):
                skip(self.stats, item.why)
            elif item is not None:
                served = True
                self.handle(item)
            if time.monotonic() >= flush_at:
                self.recorder.flush()
                flush_at = time.monotonic() + self.args.flush_secs
            self.save()

    def handle(self, doc):
        self.stats["documents"] = self.stats.get("documents", 0) + 1
        try:
            notes, done = self.advance(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            skip(self.stats, f"a document the relay cannot read ({type(e).__name__}: {e}): "
                             f"{json.dumps(doc)[:200]}")
            return
        for head, etype, reason, message in notes:
            try:
                self.emit(head, etype, reason, message)
            except Stopping:
                raise
            except Exception as e:  # pylint: disable=broad-except
                # A fault of this relay with one Event must not stop the others (a crash
                # would meet the same document again after the restart, and loop).
                self.stats["errors"] = self.stats.get("errors", 0) + 1
                log(f"{reason} not sent: {type(e).__name__}: {e}")
        # Past the document only once its Events are out.
        self.state.update(done)

    def advance(self, doc):
        """The notes of one document, and the model and resume point after it."""
        incarnation = doc["incarnation"]
        if not isinstance(incarnation, str):
            raise TypeError("incarnation is not a string")
        old = self.before = self.state.get("model")
        if "snapshot" in doc:
            snap = doc["snapshot"]
            revision = int(snap["revision"])
            new = model_from_snapshot(snap)
            cause = "seen in the agent's snapshot"
            notes = diff(old if old is not None else healthy(new), new, cause)
            self.stats["snapshots"] = self.stats.get("snapshots", 0) + 1
        elif "event" in doc:
            e = doc["event"]
            revision = int(e["revision"])
            fields = ("type", "head", "path", "controller", "reason")
            if not all(isinstance(e.get(k, ""), str) for k in fields) or "type" not in e:
                raise TypeError("an event field is not a string")
            if old is None:
                raise ValueError("an event before any snapshot")
            new = copy.deepcopy(old)
            notes = apply_event(new, e)
            notes += diff(old, new, e.get("reason") or e["type"].removeprefix("EVENT_TYPE_").lower())
            self.stats["events"] = self.stats.get("events", 0) + 1
        else:
            raise ValueError("neither a snapshot nor an event")
        self.after = new
        return notes, {"model": new, "incarnation": incarnation, "revision": revision}

    def volume(self, head):
        """The head's volume label, looked up again when older than --volume-ttl-secs."""
        h = self.after["heads"].get(head)
        if h is None:  # removed: what it was labelled
            return ((self.before or {}).get("heads", {}).get(head) or {}).get("volume", "")
        if h.get("lookup") or time.time() - h.get("looked", 0) > self.args.volume_ttl_secs:
            try:
                out = subprocess.run([self.args.umpathctl, f"--socket={self.args.socket}", "-o", "json",
                                      "--timeout=5s", "head", head],
                                     capture_output=True, timeout=10, check=False)
                if out.returncode == 0:
                    h["volume"] = json.loads(out.stdout).get("head", {}).get("volume", "")
            except (OSError, ValueError, subprocess.TimeoutExpired) as e:
                log(f"head {short(head)}: volume not looked up ({e})")
            h.pop("lookup", None)
            h["looked"] = time.time()
        return h["volume"]

    def emit(self, head, etype, reason, message):
        self.stats["notes"] = self.stats.get("notes", 0) + 1
        volume = self.volume(head) if head else ""
        if volume:
            self.recorder.record("PersistentVolume", volume, etype, reason,
                                 f"{message} (node {self.args.node})")
        else:
            self.recorder.record("Node", self.args.node, etype, reason, message)


def parse_args(argv):
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    p = argparse.ArgumentParser(description="umpathd's events as Kubernetes Events")
    p.add_argument("--node", default=os.environ.get("NODE_NAME", ""), help="this node's name (NODE_NAME)")
    p.add_argument("--socket", default="/run/umpath/umpathd.sock")
    p.add_argument("--umpathctl", default=os.environ.get("UMPATHCTL", "umpathctl"))
    p.add_argument("--state-file", default="/var/lib/umpath-event-relay/state.json")
    p.add_argument("--api-server", default=f"https://{host}:{port}" if host else "",
                   help="default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT")
    p.add_argument("--token-file", default=f"{SA_DIR}/token")
    p.add_argument("--ca-file", default=f"{SA_DIR}/ca.crt")
    p.add_argument("--namespace", default="default",
                   help="where Events about cluster-scoped objects (Node, PersistentVolume) go")
    p.add_argument("--aggregate-secs", type=float, default=600, help="a repeat within this PATCHes the count")
    p.add_argument("--burst", type=int, default=25, help="Events per object at once")
    p.add_argument("--refill-secs", type=float, default=10, help="one more Event per object after this")
    p.add_argument("--attempts", type=int, default=8, help="tries of one call on 5xx, 429 or no answer")
    p.add_argument("--backoff-secs", type=float, default=0.5,
                   help="the first retry's delay (doubling to 30 s)")
    p.add_argument("--flush-secs", type=float, default=10,
                   help="how often repeats held back by the rate limit are sent")
    p.add_argument("--volume-ttl-secs", type=float, default=60,
                   help="a head's volume label is read again after")
    args = p.parse_args(argv)
    if not args.node or not args.api_server:
        p.error("--node (or NODE_NAME) and --api-server (or KUBERNETES_SERVICE_HOST) are needed")
    return args


if __name__ == "__main__":
    Relay(parse_args(sys.argv[1:])).run()
