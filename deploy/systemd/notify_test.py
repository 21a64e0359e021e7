#!/usr/bin/env python3
"""umpathd's sd_notify messages, received as systemd would (issue 20 item 6).

A Unix datagram socket stands in for systemd's notification socket (NOTIFY_SOCKET), with
SO_PASSCRED, so each message carries its sender's pid as systemd sees it: with
NotifyAccess=main only the main pid's count. The real umpathd (simulator backend) runs
behind `sh -c 'exec umpathd'`, which keeps the pid (WATCHDOG_PID can name it):

  n1. WATCHDOG_USEC=2000000, WATCHDOG_PID=its pid: READY=1 comes once the control socket
      accepts connections, with a STATUS naming the heads; WATCHDOG=1 every second (half
      of WatchdogSec), from a timer (an idle agent uses next to no CPU); every message
      from the main pid; on SIGTERM STOPPING=1, then exit 0.
  n2. WATCHDOG_PID of another process: READY and STOPPING, and no WATCHDOG=1 (the
      watchdog is not this process's).
  n3. No NOTIFY_SOCKET: the agent serves and stops as usual, and nothing is sent.

Usage: notify_test.py UMPATHD. Closes with "N passed, M failed"; exits 1 on a failure.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

UMPATHD = sys.argv[1]
passed = failed = 0


def check(name, ok, why=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   " + name, flush=True)
    else:
        failed += 1
        print("FAIL " + name + (": " + why if why else ""), flush=True)


class NotifySocket:
    """What systemd's end of NOTIFY_SOCKET sees: (time, sender pid, fields)."""

    def __init__(self, path):
        self.path = path
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.s.bind(path)

    def receive(self, timeout):
        self.s.settimeout(max(timeout, 0.001))
        try:
            data, anc, _, _ = self.s.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        except socket.timeout:
            return None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
        return time.monotonic(), pid, fields

    def until(self, seconds, enough=lambda msgs: False):
        """Every message in the next `seconds`, or until `enough` of them came."""
        end = time.monotonic() + seconds
        out = []
        while (left := end - time.monotonic()) > 0 and not enough(out):
            m = self.receive(left)
            if m:
                out.append(m)
        return out


def accepts(sock_path):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        c.connect(sock_path)
        return True
    except OSError:
        return False
    finally:
        c.close()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(work, name, env_extra, watchdog_pid_self):
    d = os.path.join(work, name)
    os.makedirs(d)
    sock = os.path.join(d, "umpathd.sock")
    args = [UMPATHD, "--sim=1:2:2", "--kernel=false", "--ublk=false", "--handover_socket=",
            "--socket=" + sock, "--state_file=" + os.path.join(d, "heads"),
            "--admin_uids=%d" % os.getuid()]
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(env_extra)
    # exec keeps the shell's pid, so $$ is umpathd's pid.
    script = ('WATCHDOG_PID=$$; export WATCHDOG_PID; ' if watchdog_pid_self else '') + 'exec "$@"'
    log = open(os.path.join(d, "log"), "w")
    p = subprocess.Popen(["sh", "-c", script, "sh"] + args, env=env, stdout=log, stderr=subprocess.STDOUT)
    return p, sock, os.path.join(d, "log")


def wait_exit(p):
    """After the one SIGTERM: the exit status (a second signal would be another stop)."""
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    return rc


def show_log(log):
    with open(log) as f:
        sys.stdout.write("".join("    " + l for l in f.readlines()[-20:]))


def first_ready(ns, p, sock, seconds=30):
    """Messages up to READY=1, and whether the socket accepted a connection at once."""
    before = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0 and p.poll() is None:
        m = ns.receive(min(left, 0.5))
        if m is None:
            continue
        if m[2].get("READY") == "1":
            return before, m, accepts(sock)
        before.append(m)
    return before, None, False


def n1(work):
    print("\n=== n1: watchdog on (WATCHDOG_USEC=2000000, WATCHDOG_PID=its pid)", flush=True)
    ns = NotifySocket(os.path.join(work, "n1.notify"))
    p, sock, log = start(work, "n1", {"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "2000000"}, True)
    t0 = time.monotonic()
    before, ready, accepted = first_ready(ns, p, sock)
    check("READY=1 arrives", ready is not None)
    if ready is None:
        show_log(log)
        p.kill()
        p.wait()
        return
    print("    READY=1 %.0f ms after the start; STATUS=%s" % ((ready[0] - t0) * 1000, ready[2].get("STATUS")))
    check("READY=1 only once the control socket accepts connections", accepted)
    check("READY's STATUS names the heads (--sim=1:2:2: 2)", ready[2].get("STATUS", "").startswith("2 head(s)"),
          ready[2].get("STATUS", ""))
    check("nothing but WATCHDOG=1 before READY=1", all(set(m[2]) <= {"WATCHDOG", "STATUS"} for m in before),
          str([m[2] for m in before]))
    # Waited for as events, not for a time: three pings, however busy the machine. How
    # often they came and what the agent spent meanwhile are figures, not assertions.
    cpu0 = cpu_seconds(p.pid)
    t1 = time.monotonic()
    msgs = ns.until(120, lambda got: sum(m[2].get("WATCHDOG") == "1" for m in got) >= 3)
    window = time.monotonic() - t1
    cpu = cpu_seconds(p.pid) - cpu0
    dogs = [m for m in msgs if m[2].get("WATCHDOG") == "1"]
    gaps = [b[0] - a[0] for a, b in zip(dogs, dogs[1:])]
    print("    %d WATCHDOG=1 in %.1f s, gaps %s s; umpathd's CPU meanwhile %.3f s" %
          (len(dogs), window, ", ".join("%.2f" % g for g in gaps[:8]) + (", ..." if len(gaps) > 8 else ""), cpu))
    check("WATCHDOG=1 repeatedly (every second here, half of WATCHDOG_USEC)", len(dogs) >= 3, "%d" % len(dogs))
    stopped_at = time.monotonic()
    p.send_signal(signal.SIGTERM)
    stopping = None
    rest = []
    while time.monotonic() - stopped_at < 60:
        m = ns.receive(0.5)
        if m is None:
            if p.poll() is not None:
                break
            continue
        rest.append(m)
        if m[2].get("STOPPING") == "1" and stopping is None:
            stopping = m
    rc = wait_exit(p)
    check("STOPPING=1 on SIGTERM", stopping is not None)
    if stopping:
        print("    STOPPING=1 %.0f ms after SIGTERM; STATUS=%s" % ((stopping[0] - stopped_at) * 1000,
                                                                   stopping[2].get("STATUS")))
        check("STOPPING's STATUS says why", "signal 15" in stopping[2].get("STATUS", ""), stopping[2].get("STATUS"))
    check("exit status 0 after SIGTERM", rc == 0, "%s" % rc)
    everything = before + [ready] + msgs + rest
    check("every message from umpathd's own pid %d (NotifyAccess=main)" % p.pid,
          all(m[1] == p.pid for m in everything), str(sorted({m[1] for m in everything})))
    if failed:
        show_log(log)


def n2(work):
    print("\n=== n2: WATCHDOG_USEC set, WATCHDOG_PID another process's", flush=True)
    ns = NotifySocket(os.path.join(work, "n2.notify"))
    p, sock, log = start(work, "n2", {"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "2000000",
                                      "WATCHDOG_PID": str(os.getpid())}, False)
    before, ready, accepted = first_ready(ns, p, sock)
    check("READY=1 arrives, the socket accepting", ready is not None and accepted)
    msgs = before + ns.until(2.5)
    dogs = [m for m in msgs if "WATCHDOG" in m[2]]
    check("no WATCHDOG=1 when the watchdog is another process's", not dogs, str([m[2] for m in dogs]))
    p.send_signal(signal.SIGTERM)
    msgs = ns.until(3)
    rc = wait_exit(p)
    check("STOPPING=1 on SIGTERM", any(m[2].get("STOPPING") == "1" for m in msgs))
    check("exit status 0", rc == 0, "%s" % rc)


def n3(work):
    print("\n=== n3: no NOTIFY_SOCKET", flush=True)
    ns = NotifySocket(os.path.join(work, "n3.notify"))
    p, sock, log = start(work, "n3", {"WATCHDOG_USEC": "2000000"}, True)
    end = time.monotonic() + 30
    while time.monotonic() < end and p.poll() is None and not accepts(sock):
        time.sleep(0.05)
    check("umpathd serves without NOTIFY_SOCKET", accepts(sock))
    got = ns.until(2.5)
    p.send_signal(signal.SIGTERM)
    got += ns.until(1)
    rc = wait_exit(p)
    check("nothing sent without NOTIFY_SOCKET", not got, str([m[2] for m in got]))
    check("exit status 0", rc == 0, "%s" % rc)


def main():
    with tempfile.TemporaryDirectory(prefix="umpath-notify-") as work:
        n1(work)
        n2(work)
        n3(work)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
