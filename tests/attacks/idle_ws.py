#!/usr/bin/env python3
"""Holds idle WebSocket connections open for the memory test (bin/tests/attacks_afxdp.rs).

    idle_ws.py HOST PORT[,PORT...] N

Opens N TCP connections to HOST (round-robin over the ports), sends each an upgrade
request and reads the 101 answer, then prints `ready N` and holds them, idle, until its
standard input closes (one process holds at most what its file limit allows; the test
starts several). Any failure prints `error ...` and exits 1.
"""
import socket
import sys

REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def main() -> None:
    host, ports, n = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], int(sys.argv[3])
    held = []
    for i in range(n):
        try:
            s = socket.create_connection((host, ports[i % len(ports)]), timeout=30)
            s.sendall(REQUEST)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(512)
                if not chunk:
                    raise OSError("closed during the upgrade")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise OSError(head[:80])
        except OSError as e:
            print(f"error connection {i}: {e}", flush=True)
            sys.exit(1)
        held.append(s)
    print(f"ready {len(held)}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
