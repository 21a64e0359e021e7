#!/usr/bin/env python3
"""One QMP command to the lab node's QEMU: qmp.py SOCKET COMMAND [JSON-ARGUMENTS].

Prints the reply; exits 1 on an error reply. Used by lab tests for fault injection
(device_del / device_add of a controller behind its root port, LAB.md)."""
import json
import socket
import sys


def main():
    path, command = sys.argv[1], sys.argv[2]
    arguments = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    f = s.makefile("rw")
    json.loads(f.readline())  # the greeting
    for cmd in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
        f.write(json.dumps(cmd) + "\n")
        f.flush()
        while True:  # skip asynchronous events until the reply
            reply = json.loads(f.readline())
            if "return" in reply or "error" in reply:
                break
        if "error" in reply:
            print(json.dumps(reply))
            return 1
    print(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
