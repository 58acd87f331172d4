#!/usr/bin/env python3
"""CPU per request of the HTTP clients the BFF could use for its LiteLLM hop, side by side.

    .venv/bin/python scripts/bench_http_clients.py [--requests 3000] [--rounds 2]

A loopback server in its own process (uvicorn + httptools + uvloop, as LiteLLM runs)
answers like LiteLLM: a chat completion JSON with LiteLLM's headers, or an SSE stream
of 20 chunks. This process drives it with each client in turn (rounds interleave the
clients so machine noise hits all alike), on uvloop as the BFF runs, and reports the
CPU this process spent per request (getrusage: user + system), at concurrency 1 and 32:

    httpx     httpx.AsyncClient.send(stream=True) + aread / aiter_raw (the BFF until issue 13)
    httpcore  httpcore.AsyncConnectionPool.request / stream (httpx without its client layer)
    aiohttp   aiohttp.ClientSession.request + read / content.iter_any (the BFF now)

Only the client's CPU is counted: the server's is the same for all three.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpcore
import httpx
import uvloop
from bench_processes import Child, free_port, wait_ready

BODY = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {
    "Authorization": "Bearer sk-bench",
    "Content-Type": "application/json",
    "x-request-id": "0123456789abcdef",
    "Accept-Encoding": "identity",
}
STREAM_CHUNKS = 20
CLIENTS = ("httpx", "httpcore", "aiohttp")

SERVER = r"""
import sys, uvicorn
REPLY = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,'
         b'"message":{"role":"assistant","content":"Hello from the fake provider."},"finish_reason":"stop"}],'
         b'"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}')
HEADERS = [(b"content-type", b"application/json"), (b"x-litellm-model-group", b"bench-model"),
           (b"x-litellm-response-cost", b"1.32e-05"), (b"x-litellm-call-id", b"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")]
CHUNK = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tick "}}]}\n\n'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for _ in range(int(sys.argv[2])):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": REPLY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, loop="uvloop", http="httptools")
"""

Send = Callable[[str], Awaitable[int]]  # path -> bytes received


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def make_client(kind: str, base: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    if kind == "httpx":
        client = httpx.AsyncClient(
            base_url=base,
            headers=HEADERS,
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=3),
        )

        async def send_httpx(path: str) -> int:
            response = await client.send(client.build_request("POST", path, content=BODY), stream=True)
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
            await response.aclose()
            return size

        return send_httpx, client.aclose
    if kind == "httpcore":
        pool = httpcore.AsyncConnectionPool(max_connections=512, max_keepalive_connections=128, keepalive_expiry=3)
        raw_headers = [(name.encode(), value.encode()) for name, value in HEADERS.items()]

        async def send_httpcore(path: str) -> int:
            size = 0
            async with pool.stream("POST", base + path, headers=raw_headers, content=BODY) as response:
                async for chunk in response.aiter_stream():
                    size += len(chunk)
            return size

        return send_httpcore, pool.aclose
    session = aiohttp.ClientSession(
        headers=HEADERS, connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=3), auto_decompress=False
    )

    async def send_aiohttp(path: str) -> int:
        size = 0
        async with session.request("POST", base + path, data=BODY) as response:
            async for chunk in response.content.iter_any():
                size += len(chunk)
        return size

    return send_aiohttp, session.close


async def measure(kind: str, base: str, path: str, requests: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per request (after a warm-up that opens the connections)."""
    send, close = await make_client(kind, base)
    remaining = 0

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            if await send(path) == 0:
                raise RuntimeError(f"{kind}: empty answer")

    try:
        remaining = max(concurrency * 4, requests // 10)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        remaining = requests
        started = cpu_seconds()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return (cpu_seconds() - started) / requests * 1e6
    finally:
        await close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per client per case per round (3000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; each round runs every client once per case (2)")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        server = Child("server", [sys.executable, "-c", SERVER, str(port), str(STREAM_CHUNKS)], {}, Path(tmp))
        try:
            wait_ready(server, base + "/", 20)
            report(base, args)
        finally:
            server.stop()
    return 0


CASES = [
    ("answer", "/v1/chat/completions", 1),
    ("answer", "/v1/chat/completions", 32),
    (f"stream of {STREAM_CHUNKS}", "/stream", 1),
    (f"stream of {STREAM_CHUNKS}", "/stream", 32),
]


def report(base: str, args: argparse.Namespace) -> None:
    figures: dict[tuple[str, int, str], list[float]] = {}
    for round_no in range(1, args.rounds + 1):
        for name, path, concurrency in CASES:
            for kind in CLIENTS:
                us = uvloop.run(measure(kind, base, path, args.requests, concurrency))
                figures.setdefault((name, concurrency, kind), []).append(us)
                print(f"round {round_no} {name:<13} c={concurrency:<3} {kind:<9} {us:8.0f} us CPU/request", flush=True)
    print(f"\nclient CPU per request, median of {args.rounds} rounds (lower is better)")
    print(f"{'case':<22}" + "".join(f"{kind:>12}" for kind in CLIENTS) + "   httpx/aiohttp")
    for name, _, concurrency in CASES:
        row = {kind: statistics.median(figures[(name, concurrency, kind)]) for kind in CLIENTS}
        cells = "".join(f"{row[kind]:>9.0f} us" for kind in CLIENTS)
        print(f"{name + f' c={concurrency}':<22}{cells}   {row['httpx'] / row['aiohttp']:10.1f}x")


if __name__ == "__main__":
    sys.exit(main())
