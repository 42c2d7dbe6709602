#!/usr/bin/env python3
"""A subscriber that never reads: usage slow_client.py PORT PATH TOPIC.

Shrinks its receive buffer, upgrades, subscribes to TOPIC, prints `ready`, then sleeps
without reading until its stdin closes (the test ends it)."""
import base64
import os
import socket
import struct
import sys

# The gateway's address (the AF_XDP lab sets SLUICE_HOST).
HOST = os.environ.get("SLUICE_HOST", "127.0.0.1")
port, path, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
# Connect and handshake reads give up after 30 s (it never reads after subscribing).
s.settimeout(30)
s.connect((HOST, port))
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(
    (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
)
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        sys.exit("closed during handshake")
    head += chunk
assert head.startswith(b"HTTP/1.1 101"), head
payload = ('{"op":"subscribe","topic":"%s"}' % topic).encode()
mask = os.urandom(4)
masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
s.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
print("ready", flush=True)
sys.stdin.read()
