#!/usr/bin/env python3
"""Echo check with Python `websockets` against a sluice ws-echo endpoint.

usage: py_client.py PORT on|off
Sends text and binary messages of 1 B .. 1 MiB, whole and fragmented, with
permessage-deflate on or off, and asserts each echo is byte-exact. Exit 0 on success.
"""
import asyncio
import os
import random
import ssl
import sys

from websockets.asyncio.client import connect

# The server's address (the AF_XDP lab sets SLUICE_HOST).
HOST = os.environ.get("SLUICE_HOST", "127.0.0.1")
SIZES = [1, 125, 126, 65535, 65536, 1 << 20]
# Every read gives up after this long: a hung server fails the client, not the CI budget.
READ_TIMEOUT = 30


async def recv(ws, what):
    try:
        return await asyncio.wait_for(ws.recv(), READ_TIMEOUT)
    except asyncio.TimeoutError:
        raise SystemExit(f"timeout: no {what} within {READ_TIMEOUT} s") from None


def text_of(rng, n):
    # n bytes of UTF-8 including a multi-byte character when there is room.
    s = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(n))
    if n >= 4:
        s = "\u20ac" + s[3:]
    assert len(s.encode()) == n
    return s


def fragments(data, parts=4):
    step = max(1, len(data) // parts)
    return [data[i:i + step] for i in range(0, len(data), step)]


async def main(port, compression):
    rng = random.Random(6455)
    count = 0
    tls = {}
    scheme = "ws"
    if os.environ.get("SLUICE_CA"):
        # wss://, trusting only the test CA, the server verified as `sluice.test` (SNI).
        tls = {
            "ssl": ssl.create_default_context(cafile=os.environ["SLUICE_CA"]),
            "server_hostname": "sluice.test",
        }
        scheme = "wss"
    async with connect(
        f"{scheme}://{HOST}:{port}/",
        **tls,
        compression="deflate" if compression else None,
        max_size=None,
        open_timeout=READ_TIMEOUT,
        close_timeout=READ_TIMEOUT,
    ) as ws:
        negotiated = ws.response.headers.get("Sec-WebSocket-Extensions")
        if compression != bool(negotiated):
            raise SystemExit(f"compression negotiated: {negotiated!r}, wanted {compression}")
        for n in SIZES:
            for kind in ("text", "binary"):
                for fragmented in (False, True):
                    data = text_of(rng, n) if kind == "text" else rng.randbytes(n)
                    await ws.send(fragments(data) if fragmented else data)
                    echo = await recv(ws, f"echo of {kind} {n} B fragmented={fragmented}")
                    if echo != data:
                        raise SystemExit(f"mismatch: {kind} {n} B fragmented={fragmented}")
                    count += 1
        ssl_object = ws.transport.get_extra_info("ssl_object")
        version = f", tls={ssl_object.version()}" if ssl_object else ""
        await ws.close()
    print(f"python websockets: {count} messages echoed, compression={compression}{version}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] == "on"))
