#!/usr/bin/env python3
"""Pub/sub clients for the gateway tests.

usage: subscribers.py PORT PATH CLIENTS TOPICS PER_TOPIC [--expect-close CODE] [--compress]
                      [--ca FILE]

Client i subscribes to topics t{i % TOPICS} and t{(i + 1) % TOPICS}, prints `ready`
once every client is subscribed, then expects PER_TOPIC messages on each of its topics
with data `{topic}:{k}` for k = 0, 1, ... in order. With --expect-close, each client then
waits for the server's close and checks its code. With --ca, the clients connect with
wss:// (TLS), trusting only the CA in FILE, and verify the server as `sluice.test` (SNI).
Prints `ok ...` and exits 0 on success.
"""
import asyncio
import json
import os
import ssl
import sys

import websockets


# The gateway's address (the AF_XDP lab sets SLUICE_HOST).
HOST = os.environ.get("SLUICE_HOST", "127.0.0.1")
# Every read gives up after this long (the publishers may be slow on a loaded machine, but
# not this slow): a hung gateway fails the client, not the CI budget.
READ_TIMEOUT = 90


async def recv(ws, what):
    try:
        return await asyncio.wait_for(ws.recv(), READ_TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError(f"timeout: no {what} within {READ_TIMEOUT} s") from None


async def client(i, args, ready, go):
    port, path, _, topics, per_topic = args["pos"]
    mine = sorted({f"t{i % topics}", f"t{(i + 1) % topics}"})
    compression = "deflate" if args["compress"] else None
    tls = {}
    scheme = "ws"
    if args["ca"]:
        ctx = ssl.create_default_context(cafile=args["ca"])
        tls = {"ssl": ctx, "server_hostname": "sluice.test"}
        scheme = "wss"
    async with websockets.connect(
        f"{scheme}://{HOST}:{port}{path}", compression=compression, max_size=None,
        ping_interval=None, open_timeout=READ_TIMEOUT, close_timeout=READ_TIMEOUT, **tls,
    ) as ws:
        for t in mine:
            await ws.send(json.dumps({"op": "subscribe", "topic": t}))
            reply = json.loads(await recv(ws, f"client {i}: subscribe reply for {t}"))
            assert reply == {"op": "subscribed", "topic": t}, reply
        ready.append(i)
        if len(ready) == args["pos"][2]:
            print("ready", flush=True)
        next_k = {t: 0 for t in mine}
        want = per_topic * len(mine)
        got = 0
        while got < want:
            msg = json.loads(await recv(ws, f"client {i}: message {got + 1} of {want}"))
            assert msg["op"] == "message", msg
            t = msg["topic"]
            assert t in next_k, f"client {i} got foreign topic {t}"
            expected = f"{t}:{next_k[t]}"
            assert msg["data"].startswith(expected + "|") or msg["data"] == expected, (
                f"client {i} topic {t}: expected {expected}, got {msg['data'][:40]}"
            )
            next_k[t] += 1
            got += 1
        code = None
        if args["expect_close"] is not None:
            try:
                extra = await asyncio.wait_for(ws.recv(), 20)
                raise AssertionError(f"client {i}: unexpected message {extra[:60]}")
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
            assert code == args["expect_close"], f"client {i}: close code {code}"
        return got


async def main():
    argv = sys.argv[1:]
    expect_close = None
    compress = False
    if "--expect-close" in argv:
        j = argv.index("--expect-close")
        expect_close = int(argv[j + 1])
        del argv[j : j + 2]
    if "--compress" in argv:
        argv.remove("--compress")
        compress = True
    ca = None
    if "--ca" in argv:
        j = argv.index("--ca")
        ca = argv[j + 1]
        del argv[j : j + 2]
    port, path, clients, topics, per_topic = argv
    args = {
        "pos": (int(port), path, int(clients), int(topics), int(per_topic)),
        "expect_close": expect_close,
        "compress": compress,
        "ca": ca,
    }
    ready = []
    results = await asyncio.gather(
        *(client(i, args, ready, None) for i in range(int(clients)))
    )
    print(f"ok clients={len(results)} received={sum(results)}", flush=True)


asyncio.run(main())
