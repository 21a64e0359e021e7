#!/usr/bin/env python3
"""A lab check on what the node printed as structure, never on log prose.

Usage: check.py FILE EXPR [NAME=VALUE...]    exit 0 if EXPR holds, 1 if not
       check.py -p FILE EXPR [NAME=VALUE...] prints EXPR's value

FILE is a serial log (or a section of one, lib.sh `section`) or a JSON document. EXPR is
a Python expression over:
  J[TAG], JA[TAG]  the last / every JSON document the node printed as
                   "umpath-json TAG {...}" (guest_lib.sh jshow, watch_show); j is FILE
                   itself when it is one JSON document
  E                the agent's event lines ("event revision=N type=T head=\"...\" ...",
                   agent/core/event_journal.cc Event::ToString), as dicts
  W                the events of `umpathctl -o json watch` (JA["watch"]), as the same dicts
  NAME             each NAME=VALUE given, as a string
and these helpers:
  ev(TYPE, **FIELDS), wev(...)  the events of E (W) of that type whose fields match:
                   names and states in full (re.fullmatch), reason by re.search; from is
                   written frm
  types(EVENTS)    their types, in order
  head(DOC, ID)    the head of a GetHead answer, or head ID of a ListHeads answer (None)
  heads(DOC), paths(HEAD), ctrls(DOC)  ids: "nguid-...", "0000:01:00.0", "nvme1"
  path(HEAD, ID), ctrl(DOC, ID)  a path of a head, a controller of a ListControllers
                   answer (None when absent)
  done(HEAD, ID)   the path's completed counter; n(X) an int of a JSON uint64 string
  grew(DOC1, DOC2, ID)  the path's completed counter grew from one head document to
                   the next
Event dicts have rev, type ("path-removed"), head, path, controller (ids), from, to, reason.
"""
import json
import re
import sys

RECORD = re.compile(r"umpath-json (\S+) (\{.*)$")
EVENT = re.compile(
    r'(?:^|\s)event revision=(\d+) type=(\S+)(?: head="(.*?)")?(?: path="(.*?)")?'
    r'(?: controller="(.*?)")?(?: from="(.*?)")?(?: to="(.*?)")?(?: reason="(.*)")?'
    r'(?: deadline_wall_nanos=\d+)?$')
# A kernel message the console wrote into the middle of a line: "[  12.345678] ...".
KMSG = re.compile(r"^(.*?)\[\s*\d+\.\d+\] .*$")
FIELDS = ("head", "path", "controller", "from", "to", "reason")


def last(name):
    return name.rsplit("/", 1)[-1]


def records(lines):
    """(tag, document) for each umpath-json line; a line the console broke with a kernel
    message is put together again with the next one."""
    i = 0
    while i < len(lines):
        m = RECORD.search(lines[i])
        i += 1
        if not m:
            continue
        tag, text = m.groups()
        for _ in range(4):
            try:
                yield tag, json.loads(text)
                break
            except ValueError:
                k = KMSG.match(text)
                if not k or i >= len(lines):
                    sys.stderr.write(f"check.py: umpath-json {tag}: not JSON: {text[:200]}\n")
                    break
                text = k.group(1) + lines[i]
                i += 1


def event_of_line(m):
    d = {"rev": int(m.group(1)), "type": m.group(2)}
    for k, v in zip(FIELDS, m.groups()[2:]):
        d[k] = v or ""
    return d


def event_of_json(e):
    d = {"rev": int(e.get("revision", 0)),
         "type": e.get("type", "").removeprefix("EVENT_TYPE_").lower().replace("_", "-")}
    for k in FIELDS:
        v = e.get(k, "")
        d[k] = last(v) if k in ("head", "path", "controller") else v
    return d


def load(path):
    text = open(path, errors="replace").read()
    env = {"J": {}, "JA": {}, "E": [], "j": None}
    try:
        env["j"] = json.loads(text)
        return env
    except ValueError:
        pass
    lines = text.splitlines()
    for tag, doc in records(lines):
        env["J"][tag] = doc
        env["JA"].setdefault(tag, []).append(doc)
    for line in lines:
        m = EVENT.search(line)
        if m:
            env["E"].append(event_of_line(m))
    env["W"] = [event_of_json(d["event"]) for d in env["JA"].get("watch", []) if "event" in d]
    return env


def match(events, type_, fields):
    out = []
    for e in events:
        if e["type"] != type_:
            continue
        ok = True
        for k, want in fields.items():
            k = "from" if k == "frm" else k
            have = e[k]
            ok &= bool(re.search(want, have) if k == "reason" else re.fullmatch(want, have))
        if ok:
            out.append(e)
    return out


def head(doc, id_=None):
    if doc is None:
        return None
    if "head" in doc:
        return doc["head"]
    for h in doc.get("heads", []):
        if id_ is None or last(h["name"]) == id_:
            return h
    return None


def path(h, id_):
    for p in (h or {}).get("paths", []):
        if last(p["name"]) == id_:
            return p
    return None


def ctrl(doc, id_):
    for c in (doc or {}).get("controllers", []):
        if last(c["name"]) == id_:
            return c
    return None


def main(argv):
    show = argv[:1] == ["-p"]
    if show:
        argv = argv[1:]
    if len(argv) < 2:
        sys.exit(__doc__)
    env = load(argv[0])
    n = int
    env.update(
        ev=lambda t, **kw: match(env["E"], t, kw),
        wev=lambda t, **kw: match(env["W"], t, kw),
        types=lambda es: [e["type"] for e in es],
        head=head, path=path, ctrl=ctrl, n=n,
        heads=lambda d: [last(h["name"]) for h in (d or {}).get("heads", [])],
        paths=lambda h: [last(p["name"]) for p in (h or {}).get("paths", [])],
        ctrls=lambda d: [last(c["name"]) for c in (d or {}).get("controllers", [])],
        done=lambda h, p: n(path(h, p)["counters"]["completed"]),
        grew=lambda d1, d2, p: env["done"](head(d2), p) > env["done"](head(d1), p),
        re=re)
    for kv in argv[2:]:
        k, _, v = kv.partition("=")
        env[k] = v
    try:
        value = eval(argv[1], env)  # the expression is the test's own
    except Exception as e:  # a missing document or field is a failed check, said plainly
        sys.stderr.write(f"check.py: {argv[1]}: {type(e).__name__}: {e}\n")
        sys.exit(2)
    if show:
        print(value)
        return
    if not value:
        sys.stderr.write(f"check.py: does not hold: {argv[1]}\n")
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
