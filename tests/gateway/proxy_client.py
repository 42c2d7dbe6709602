#!/usr/bin/env python3
"""Proxy-route client: usage proxy_client.py PORT PATH COUNT.

Sends COUNT text and binary messages of growing size through the gateway and checks that
every answer (from the upstream echo server) comes back unchanged and in order; then closes
normally. Prints `ok N`."""
import asyncio
import os
import sys

import websockets


# The gateway's address (the AF_XDP lab sets SLUICE_HOST).
HOST = os.environ.get("SLUICE_HOST", "127.0.0.1")
# Every read gives up after this long: a hung gateway fails the client, not the CI budget.
READ_TIMEOUT = 60


async def main():
    port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    async with websockets.connect(
        f"ws://{HOST}:{port}{path}",
        max_size=None,
        ping_interval=None,
        open_timeout=READ_TIMEOUT,
        close_timeout=READ_TIMEOUT,
    ) as ws:
        for i in range(count):
            msg = f"m{i}:" + "y" * (i * 37 % 5000)
            out = msg if i % 2 == 0 else msg.encode()
            await ws.send(out)
        for i in range(count):
            msg = f"m{i}:" + "y" * (i * 37 % 5000)
            want = msg if i % 2 == 0 else msg.encode()
            try:
                got = await asyncio.wait_for(ws.recv(), READ_TIMEOUT)
            except asyncio.TimeoutError:
                sys.exit(f"timeout: answer {i} not received within {READ_TIMEOUT} s")
            assert got == want, f"message {i}: {str(got)[:40]!r} != {str(want)[:40]!r}"
    print(f"ok {count}", flush=True)


try:
    asyncio.run(main())
except websockets.ConnectionClosed as e:
    print(f"closed {e.rcvd.code if e.rcvd else None}", flush=True)
    sys.exit(2)
