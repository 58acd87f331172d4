#!/usr/bin/env python3
"""Server CPU per request of uvicorn's HTTP/1.1 protocols, with and without a head bound.

    .venv/bin/python scripts/bench_header_bound.py [--requests 20000] [--connections 4] [--header-bytes 1500]

Why: the BFF bounds the request head (MAX_HEADER_BYTES) in a subclass of uvicorn's httptools
protocol (bff/serving.py) rather than switching to h11, whose `h11_max_incomplete_event_size`
is uvicorn's only built-in bound. This prints what each choice costs per request:

    httptools   uvicorn's own (no head bound at all)
    bounded     bff.serving.BoundedHttpToolsProtocol (what python -m bff runs)
    h11         uvicorn's h11 protocol with h11_max_incomplete_event_size

Each server is a separate process serving a trivial ASGI app (so the protocol is most of the
work) on a free loopback port; keep-alive client connections send GETs carrying
--header-bytes of headers (a bearer token and a few forwarded headers, as behind Kong). The
figure is the server process's user+system CPU time (/proc/<pid>/stat) over the requests,
in microseconds per request: the least and the median of --rounds (interleaved). Linux only.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = {
    "httptools": "httptools",
    "bounded": "bff.serving:BoundedHttpToolsProtocol",
    "h11": "h11",
}
SERVER = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http=sys.argv[2], log_level="warning",
            h11_max_incomplete_event_size=65536, lifespan="off")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def request_bytes(header_bytes: int) -> bytes:
    token = "e" * max(header_bytes - 300, 16)
    lines = [
        "GET /v1/models HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {token}", "Accept: application/json",
        "User-Agent: OpenAI/Python 1.99.0", "X-Forwarded-For: 10.0.0.7", "X-Forwarded-Proto: https",
        "X-Request-Id: 0f4c3a2b9d8e4f0a", "Connection: keep-alive",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def drive(port: int, request: bytes, count: int) -> None:
    """`count` requests, one after another on one keep-alive connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(count):
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b"ok"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                answer += chunk


def measure(protocol: str, requests: int, connections: int, request: bytes) -> tuple[float, float]:
    """(server CPU µs per request, requests per second) for one protocol."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "backend")}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), protocol], env=env)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                drive(port, request, 50)  # started, and warmed up
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{protocol} server did not start") from None
                time.sleep(0.1)
        per_connection = requests // connections
        threads = [threading.Thread(target=drive, args=(port, request, per_connection)) for _ in range(connections)]
        cpu, started = cpu_seconds(server.pid), time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, used = time.monotonic() - started, cpu_seconds(server.pid) - cpu
        done = per_connection * connections
        return used / done * 1e6, done / elapsed
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--header-bytes", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    request = request_bytes(args.header_bytes)
    print(f"{args.requests} requests per round, {args.connections} keep-alive connections, head {len(request)} bytes")
    # Rounds interleave the protocols, so a noisy moment on a shared machine hits them alike.
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in PROTOCOLS}
    for _ in range(args.rounds):
        for name, protocol in PROTOCOLS.items():
            results[name].append(measure(protocol, args.requests, args.connections, request))
    print(f"{'protocol':<10} {'CPU µs/request min':>19} {'median':>7} {'requests/s median':>18}")
    for name, rounds in results.items():
        cpu = [r[0] for r in rounds]
        print(f"{name:<10} {min(cpu):>19.1f} {statistics.median(cpu):>7.1f} {statistics.median(r[1] for r in rounds):>18.0f}")

if __name__ == "__main__":
    main()
