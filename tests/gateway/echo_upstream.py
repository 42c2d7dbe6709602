#!/usr/bin/env python3
"""A Python websockets echo server for proxy tests: usage echo_upstream.py; prints the port."""
import asyncio

import websockets


async def echo(ws):
    async for msg in ws:
        await ws.send(msg)


async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"port={port}", flush=True)
        await asyncio.Future()


asyncio.run(main())
