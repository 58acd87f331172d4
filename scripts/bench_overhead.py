#!/usr/bin/env python3
"""Measures the latency the BFF adds on top of LiteLLM for non-streaming chat completions.

    .venv/bin/python scripts/bench_overhead.py [--concurrency 32] [--requests 2000]
        [--rounds 3] [--warmup 500] [--serial-requests 150] [--client raw|httpx]
        [--max-seconds 280] [--json PATH]

With the defaults a run takes about 3 minutes on 2 cores (LiteLLM serves ~100 req/s).

It starts three servers, each in its own process on 127.0.0.1:

    fake provider   tests/support/fake_openai.py under uvicorn (answers at once)
    LiteLLM         .venv-litellm/bin/litellm with a one-model config (bench-model)
    BFF             `python -m bff`, static dev roles, pointing at that LiteLLM

and drives them from this process (the load generator: a minimal asyncio HTTP/1.1
client by default, since httpx.AsyncClient costs ~7x more CPU per request and
would take CPU from the servers; --client httpx to compare) with the same chat
body along two paths:

    (a) straight to LiteLLM     client -> LiteLLM -> provider
    (b) through the BFF         client -> BFF -> LiteLLM -> provider

Rounds alternate a, b, a, b, ... so machine noise hits both paths alike. Each
round is a closed loop of --concurrency workers sending --requests requests in
all. The BFF's added latency is (b) minus (a) at p50 and p99, each the median of
the per-round figures, judged against the targets (< 2 ms at p50, < 5 ms at p99).
A short concurrency-1 pass per round shows the added latency without queueing,
and the CPU time each process spends per request shows where the time goes and
what the BFF's own throughput ceiling would be. At concurrency 32 LiteLLM is
saturated, so latency there is mostly queueing inside LiteLLM: the script prints
the round-to-round spread of the straight path so a difference can be judged
against the noise.

Exit status: 0 when the run completed without errors (whether targets PASS or
MISS), 1 when a server failed to start, a request failed, or the time budget ran out.
Linux only (CPU accounting reads /proc). Needs the standard library and httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from bench_processes import CLK_TCK, ROOT, BenchError, Child, free_port, session_token, wait_ready

LITELLM_BIN = Path(os.environ.get("LITELLM_BIN", ROOT / ".venv-litellm" / "bin" / "litellm"))
MASTER_KEY = "sk-bench-master-key-0123456789"
WEBUI_SECRET = "bench-webui-secret-key"
USER_ID = "dev-admin"  # role admin in config/dev-users.yaml
MODEL = "bench-model"
CHAT_PATH = "/v1/chat/completions"
CHAT_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
TARGET_P50_MS = 2.0
TARGET_P99_MS = 5.0

# The fake provider runs in its own interpreter: argv[1] is tests/, argv[2] the port.
FAKE_PROVIDER_CODE = """
import sys
import uvicorn
sys.path.insert(0, sys.argv[1])
from support.fake_openai import FakeProviderState, create_fake_provider
uvicorn.run(create_fake_provider(FakeProviderState()), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", access_log=False)
"""


def litellm_config(provider_url: str) -> dict[str, Any]:
    """One deployment on the fake provider; no retries, cooldowns or verbose logging."""
    return {
        "model_list": [
            {
                "model_name": MODEL,
                # a catalog model name, so LiteLLM treats it like a real OpenAI model
                "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": f"{provider_url}/v1", "api_key": "fake"},
                "model_info": {"gateway_tier": "mini"},
            }
        ],
        "router_settings": {"num_retries": 0, "disable_cooldowns": True},
        "litellm_settings": {"num_retries": 0, "set_verbose": False, "request_timeout": 60},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }


@dataclass
class Stack:
    provider: Child
    litellm: Child
    bff: Child
    provider_url: str
    litellm_url: str
    bff_url: str

    def children(self) -> dict[str, Child]:
        return {"provider": self.provider, "litellm": self.litellm, "bff": self.bff}


@contextlib.contextmanager
def running_stack(work_dir: Path) -> Iterator[Stack]:
    """Starts provider, LiteLLM and BFF; stops every one of them on the way out, whatever happens."""
    started: list[Child] = []
    try:
        provider_port, litellm_port, bff_port = free_port(), free_port(), free_port()
        provider_url = f"http://127.0.0.1:{provider_port}"
        litellm_url = f"http://127.0.0.1:{litellm_port}"
        bff_url = f"http://127.0.0.1:{bff_port}"

        provider = Child(
            "provider", [sys.executable, "-c", FAKE_PROVIDER_CODE, str(ROOT / "tests"), str(provider_port)], {}, work_dir
        )
        started.append(provider)

        config_path = work_dir / "litellm.bench.yaml"
        config_path.write_text(json.dumps(litellm_config(provider_url), indent=2))  # JSON is valid YAML
        litellm = Child(
            "litellm",
            [str(LITELLM_BIN), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(litellm_port)],
            {
                "LITELLM_MASTER_KEY": MASTER_KEY,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",  # also lowers uvicorn's level: no access-log line per request
            },
            work_dir,
        )
        started.append(litellm)

        bff = Child(
            "bff",
            [sys.executable, "-m", "bff"],
            {
                "BFF_HOST": "127.0.0.1",
                "BFF_PORT": str(bff_port),
                "LITELLM_URL": litellm_url,
                "LITELLM_MASTER_KEY": MASTER_KEY,
                "WEBUI_SECRET_KEY": WEBUI_SECRET,
                "ROLE_SOURCE": "static",
                "BFF_DEV_MODE": "true",
                "STATIC_ROLES_FILE": str(ROOT / "config" / "dev-users.yaml"),
                "POLICY_FILE": str(ROOT / "config" / "policy.yaml"),
                "CLICKHOUSE_URL": f"chdb://{work_dir / 'clickhouse'}",  # spans recorded as in production
                "CLICKHOUSE_SCHEMA_DIR": str(ROOT / "config" / "clickhouse"),
                "LOG_LEVEL": "WARNING",
            },
            work_dir,
        )
        started.append(bff)

        wait_ready(provider, f"{provider_url}/v1/models", 30)
        wait_ready(litellm, f"{litellm_url}/health/readiness", 120)
        wait_ready(bff, f"{bff_url}/health/ready", 30)  # also checks that the BFF reaches LiteLLM
        yield Stack(provider, litellm, bff, provider_url, litellm_url, bff_url)
    finally:
        for child in reversed(started):
            child.stop()


# --------------------------------------------------------------------------- credentials


# --------------------------------------------------------------------------- load generator

class PathClient(Protocol):
    """Sends the chat request along one path: None means a good answer, else what was wrong (or it raises)."""

    async def prepare(self, connections: int) -> None: ...

    async def send(self) -> str | None: ...

    async def aclose(self) -> None: ...


def check_answer(status: int, body: bytes) -> str | None:
    if status == 200 and b'"choices"' in body:
        return None
    return f"HTTP {status}: {body[:200]!r}"



class HttpxPath:
    """httpx.AsyncClient with one keep-alive connection per worker."""

    def __init__(self, base_url: str, token: str, concurrency: int):
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(60.0),
        )

    async def send(self) -> str | None:
        response = await self._client.post(CHAT_PATH, content=CHAT_BODY)
        return check_answer(response.status_code, response.content)

    async def prepare(self, connections: int) -> None:
        """httpx reconnects stale pooled connections by itself."""

    async def aclose(self) -> None:
        await self._client.aclose()


class RawPath:
    """Minimal HTTP/1.1 keep-alive client on asyncio streams: far less CPU per request than httpx.

    Enough for these two servers: one fixed request; answers framed by Content-Length
    (chunked bodies are read too). Workers share a pool of idle connections. uvicorn
    closes a connection idle for 5 s, so older idle ones are dropped, and a reused
    connection that closes before answering is retried once on a new one (as httpx does).
    """

    MAX_IDLE_SECONDS = 3.0

    def __init__(self, base_url: str, token: str, concurrency: int):
        host_port = base_url.removeprefix("http://")
        host, port = host_port.split(":")
        self._host, self._port = host, int(port)
        self._request = (
            f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {host_port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(CHAT_BODY)}\r\n\r\n"
        ).encode() + CHAT_BODY
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def prepare(self, connections: int) -> None:
        """Before the clock starts: drop idle connections the server may have closed, open fresh ones."""
        await self.aclose()
        opened = await asyncio.gather(*(asyncio.open_connection(self._host, self._port) for _ in range(connections)))
        now = time.monotonic()
        self._idle = [(reader, writer, now) for reader, writer in opened]

    async def send(self) -> str | None:
        while self._idle:
            reader, writer, idle_since = self._idle.pop()
            if time.monotonic() - idle_since < self.MAX_IDLE_SECONDS and not reader.at_eof():
                try:
                    return await self._exchange(reader, writer)
                except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        raise
                    break  # closed by the server before any answer: retry once on a new connection
            writer.close()
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return await self._exchange(reader, writer)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        try:
            writer.write(self._request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
            }
            if b"content-length" in headers:
                body = await reader.readexactly(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = await self._read_chunked(reader)
            else:
                raise httpx.RemoteProtocolError("answer without a length")
        except BaseException:
            writer.close()
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return check_answer(status, body)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def aclose(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


@dataclass
class Phase:
    """One pass of one path: latencies of good answers, and what it cost each process in CPU."""

    path: str  # "litellm" (a) or "bff" (b)
    round: int
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    cpu_s: dict[str, float]  # per process, including "loadgen"
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "path": self.path,
            "round": self.round,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": round(percentile(ordered, 50), 3),
            "p90_ms": round(percentile(ordered, 90), 3),
            "p99_ms": round(percentile(ordered, 99), 3),
            "max_ms": round(ordered[-1], 3) if ordered else math.nan,
            "rps": round(self.rps, 1),
            "wall_s": round(self.wall_s, 3),
            "cpu_ms_per_request": {k: round(v * 1000 / self.requests, 3) for k, v in self.cpu_s.items()},
            "cpu_percent_of_one_core": {k: round(100 * v / self.wall_s, 1) for k, v in self.cpu_s.items()},
            "error_samples": self.error_samples,
        }


def percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolation percentile of an already sorted list."""
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


async def drive(
    path: str, client: PathClient, total: int, concurrency: int, stack: Stack, round_no: int, deadline: float
) -> Phase:
    """A closed loop: `concurrency` workers take requests from a shared budget of `total`."""
    remaining = total
    latencies: list[float] = []
    errors: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                problem = await client.send()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, httpx.HTTPError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            elapsed_ms = (time.perf_counter() - started) * 1000
            if problem is None:
                latencies.append(elapsed_ms)
            else:
                errors.append(problem)

    children = stack.children()
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            # Connections are opened before the clock starts, so no request pays for a connect.
            await client.prepare(min(concurrency, total))
            cpu_before = {name: child.cpu_seconds() for name, child in children.items()}
            loadgen_before = time.process_time()
            machine_before = machine_busy_seconds()
            started = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, total)):
                    group.create_task(worker())
            wall = time.perf_counter() - started
    except TimeoutError:
        raise BenchError(f"time budget exhausted (--max-seconds) during {path} round {round_no}") from None
    cpu = {name: child.cpu_seconds() - cpu_before[name] for name, child in children.items()}
    cpu["loadgen"] = time.process_time() - loadgen_before
    # CPU the rest of the machine used meanwhile (other jobs): noise both paths should share.
    cpu["other"] = max(machine_busy_seconds() - machine_before - sum(cpu.values()), 0.0)
    return Phase(path, round_no, concurrency, total, len(errors), wall, latencies, cpu, sorted(set(errors))[:5])


def machine_busy_seconds() -> float:
    """CPU seconds all cores of this machine have spent busy since boot (/proc/stat, first line)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / CLK_TCK


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def path_figures(phases: list[Phase]) -> dict[str, Any]:
    """Totals over rounds; latency and throughput figures are medians of the per-round values."""
    return {
        "rounds": len(phases),
        "requests": sum(p.requests for p in phases),
        "errors": sum(p.errors for p in phases),
        "p50_ms": median([p.pct(50) for p in phases]),
        "p90_ms": median([p.pct(90) for p in phases]),
        "p99_ms": median([p.pct(99) for p in phases]),
        "rps": median([p.rps for p in phases]),
        "cpu_ms_per_request": {
            name: median([p.cpu_s[name] * 1000 / p.requests for p in phases]) for name in phases[0].cpu_s
        },
        "cpu_percent_of_one_core": {
            name: median([100 * p.cpu_s[name] / p.wall_s for p in phases]) for name in phases[0].cpu_s
        },
    }


def print_table(title: str, figures: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'path':<26}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for label, fig in figures.items():
        print(
            f"  {label:<26}{fig['requests']:>9}{fig['errors']:>8}{fig['p50_ms']:>9.2f}"
            f"{fig['p90_ms']:>9.2f}{fig['p99_ms']:>9.2f}{fig['rps']:>9.1f}"
        )


def print_cpu(figures: dict[str, dict[str, Any]]) -> None:
    print("\nCPU per request (ms) and CPU use (% of one core), median of rounds, at the load concurrency")
    print("  ('other' is everything else running on the machine meanwhile: noise)")
    names = ["loadgen", "bff", "litellm", "provider", "other"]
    print(f"  {'path':<26}" + "".join(f"{name:>17}" for name in names))
    for label, fig in figures.items():
        cells = "".join(
            f"{fig['cpu_ms_per_request'][n]:>9.3f} ({fig['cpu_percent_of_one_core'][n]:>3.0f}%)" for n in names
        )
        print(f"  {label:<26}{cells}")


def verdict(added: float, target: float) -> str:
    return "PASS" if added < target else "MISS"


# --------------------------------------------------------------------------- main


async def measure(stack: Stack, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    token = session_token(USER_ID, WEBUI_SECRET)
    client_cls = RawPath if args.client == "raw" else HttpxPath
    paths = {
        "litellm": client_cls(stack.litellm_url, MASTER_KEY, args.concurrency),
        "bff": client_cls(stack.bff_url, token, args.concurrency),
    }
    load: dict[str, list[Phase]] = {"litellm": [], "bff": []}
    serial: dict[str, list[Phase]] = {"litellm": [], "bff": []}
    try:
        # Warm-up: opens every connection, fills the BFF's model catalog and role caches,
        # and lets both interpreters settle. Errors here mean the setup is broken.
        for name, client in paths.items():
            warm = await drive(name, client, args.warmup, args.concurrency, stack, 0, deadline)
            print(f"warm-up {name:<8} {warm.requests} requests, {warm.errors} errors, {warm.rps:.0f} req/s", flush=True)
            if warm.errors:
                raise BenchError(f"warm-up of {name} failed: {warm.error_samples}")
        for round_no in range(1, args.rounds + 1):
            for name, client in paths.items():  # a then b, every round
                phase = await drive(name, client, args.requests, args.concurrency, stack, round_no, deadline)
                load[name].append(phase)
                print(
                    f"round {round_no} {name:<8} c={args.concurrency:<3} p50 {phase.pct(50):7.2f} ms  "
                    f"p99 {phase.pct(99):7.2f} ms  {phase.rps:7.1f} req/s  errors {phase.errors}",
                    flush=True,
                )
            if args.serial_requests:
                for name, client in paths.items():
                    phase = await drive(name, client, args.serial_requests, 1, stack, round_no, deadline)
                    serial[name].append(phase)
                    print(
                        f"round {round_no} {name:<8} c=1   p50 {phase.pct(50):7.2f} ms  "
                        f"p99 {phase.pct(99):7.2f} ms  {phase.rps:7.1f} req/s  errors {phase.errors}",
                        flush=True,
                    )
    finally:
        for client in paths.values():
            await client.aclose()
    return {"load": load, "serial": serial}


def report(results: dict[str, dict[str, list[Phase]]], args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    load, serial = results["load"], results["serial"]
    a, b = path_figures(load["litellm"]), path_figures(load["bff"])
    figures = {"(a) straight to LiteLLM": a, "(b) through the BFF": b}
    print_table(f"Load: concurrency {args.concurrency}, {args.requests} requests per path per round, {args.rounds} rounds "
                f"(latencies and req/s: median of rounds)", figures)

    added_p50 = b["p50_ms"] - a["p50_ms"]
    added_p99 = b["p99_ms"] - a["p99_ms"]
    # How much the same path moves from round to round: differences smaller than this are noise.
    spread_p50 = max(p.pct(50) for p in load["litellm"]) - min(p.pct(50) for p in load["litellm"])
    spread_p99 = max(p.pct(99) for p in load["litellm"]) - min(p.pct(99) for p in load["litellm"])
    pairs_p50 = [pb.pct(50) - pa.pct(50) for pa, pb in zip(load["litellm"], load["bff"], strict=True)]
    pairs_p99 = [pb.pct(99) - pa.pct(99) for pa, pb in zip(load["litellm"], load["bff"], strict=True)]
    print(f"\nBFF added latency at concurrency {args.concurrency} (b - a, medians of rounds):")
    print(f"  p50: {added_p50:+.2f} ms   target < {TARGET_P50_MS:.0f} ms   {verdict(added_p50, TARGET_P50_MS)}")
    print(f"  p99: {added_p99:+.2f} ms   target < {TARGET_P99_MS:.0f} ms   {verdict(added_p99, TARGET_P99_MS)}")
    print(f"  per round (b - a): p50 {', '.join(f'{d:+.1f}' for d in pairs_p50)} ms; "
          f"p99 {', '.join(f'{d:+.1f}' for d in pairs_p99)} ms")
    # In a closed loop, mean latency = concurrency / throughput (Little's law): what the lower
    # throughput through the BFF alone accounts for.
    little = 1000 * args.concurrency / b["rps"] - 1000 * args.concurrency / a["rps"]
    print(f"  Little's law ({args.concurrency} / req/s): the throughput difference alone accounts for {little:+.1f} ms "
          f"of mean latency")
    if args.rounds > 1:
        print(f"  noise: straight to LiteLLM alone varies by {spread_p50:.1f} ms (p50) and {spread_p99:.1f} ms (p99) "
              f"between rounds")
        if spread_p50 > TARGET_P50_MS or spread_p99 > TARGET_P99_MS:
            if a["cpu_percent_of_one_core"]["litellm"] >= 85:
                print("  -> LiteLLM is saturated at this concurrency, so latency here is mostly queueing inside LiteLLM;")
            print("  -> the round-to-round noise exceeds the targets, so only differences that hold in every round count.")
        for name, pairs in (("p50", pairs_p50), ("p99", pairs_p99)):
            if all(d > 0 for d in pairs) or all(d < 0 for d in pairs):
                print(f"     {name}: the BFF path was {'slower' if pairs[0] > 0 else 'faster'} in every round")
            else:
                print(f"     {name}: the sign changes between rounds: no difference resolved")

    out: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "cores": os.cpu_count(),
        "elapsed_s": round(elapsed, 1),
        "load": {"litellm": a, "bff": b},
        "added_ms": {"p50": added_p50, "p99": added_p99, "per_round_p50": pairs_p50, "per_round_p99": pairs_p99},
        "noise_ms": {"straight_p50_spread": spread_p50, "straight_p99_spread": spread_p99},
        "littles_law_added_mean_ms": little,
        "targets_ms": {"p50": TARGET_P50_MS, "p99": TARGET_P99_MS},
        "verdict": {"p50": verdict(added_p50, TARGET_P50_MS), "p99": verdict(added_p99, TARGET_P99_MS)},
        "rounds": [p.summary() for name in ("litellm", "bff") for p in load[name]],
    }

    if serial["litellm"]:
        sa, sb = path_figures(serial["litellm"]), path_figures(serial["bff"])
        print_table("No queueing: concurrency 1 (one request at a time)", {"(a) straight to LiteLLM": sa, "(b) through the BFF": sb})
        s50, s99 = sb["p50_ms"] - sa["p50_ms"], sb["p99_ms"] - sa["p99_ms"]
        print(f"  BFF added latency at concurrency 1: p50 {s50:+.2f} ms, p99 {s99:+.2f} ms (for context; not a target)")
        out["serial"] = {"litellm": sa, "bff": sb, "added_ms": {"p50": s50, "p99": s99}}
        out["rounds"] += [p.summary() for name in ("litellm", "bff") for p in serial[name]]

    print_cpu(figures)
    bff_cpu_ms = b["cpu_ms_per_request"]["bff"]
    litellm_cpu_ms = b["cpu_ms_per_request"]["litellm"]
    busiest = max(("bff", "litellm", "provider", "loadgen"), key=lambda n: b["cpu_percent_of_one_core"][n])
    total_cpu = sum(v for n, v in b["cpu_percent_of_one_core"].items() if n != "other")
    ceiling = 1000 / bff_cpu_ms if bff_cpu_ms > 0 else math.inf
    print(f"\nThroughput ceiling at concurrency {args.concurrency}:")
    print(f"  straight to LiteLLM {a['rps']:.1f} req/s, through the BFF {b['rps']:.1f} req/s "
          f"({100 * b['rps'] / a['rps']:.0f}% of straight)")
    print(f"  through the BFF, the busiest process is {busiest} "
          f"({b['cpu_percent_of_one_core'][busiest]:.0f}% of one core); the benchmark's processes together use "
          f"{total_cpu:.0f}% of the {os.cpu_count()} cores' {100 * (os.cpu_count() or 1)}%, other jobs "
          f"{b['cpu_percent_of_one_core']['other']:.0f}%")
    if busiest == "litellm":
        print("  -> LiteLLM (one process, one event loop) is the bottleneck, not the BFF.")
        straight_ms = a["cpu_ms_per_request"]["litellm"]
        print(f"     Saturated, it serves about 1000 / its CPU ms per request: LiteLLM used {straight_ms:.3f} ms per request "
              f"straight and {litellm_cpu_ms:.3f} ms through the BFF ({100 * (litellm_cpu_ms / straight_ms - 1):+.0f}%).")
    print(f"  BFF CPU {bff_cpu_ms:.3f} ms per request -> its own ceiling is about {ceiling:.0f} req/s on one free core "
          f"(LiteLLM: {litellm_cpu_ms:.3f} ms per request -> about {1000 / litellm_cpu_ms:.0f} req/s)")
    loadgen_pct = b["cpu_percent_of_one_core"]["loadgen"]
    print(f"  load generator ({args.client} client): {b['cpu_ms_per_request']['loadgen']:.3f} ms CPU per request, "
          f"{loadgen_pct:.0f}% of one core -> {'saturated!' if loadgen_pct > 85 else 'not saturated'}")
    out["ceiling"] = {
        "straight_rps": a["rps"],
        "bff_rps": b["rps"],
        "busiest_process": busiest,
        "bff_cpu_ms_per_request": bff_cpu_ms,
        "bff_ceiling_rps_one_core": ceiling,
        "litellm_cpu_ms_per_request": litellm_cpu_ms,
    }
    return out


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C does, so the servers are stopped either way."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests in the load rounds (32)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per path per round (2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each path once per round (3)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests per path (500)")
    parser.add_argument("--serial-requests", type=int, default=150, help="concurrency-1 requests per path per round; 0 skips (150)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="load generator HTTP client (raw)")
    parser.add_argument("--max-seconds", type=float, default=280, help="give up after this long (280)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if min(args.concurrency, args.requests, args.rounds) < 1:
        parser.error("--concurrency, --requests and --rounds must be at least 1")
    if not LITELLM_BIN.exists():
        print(f"FAILED: no LiteLLM at {LITELLM_BIN} (set LITELLM_BIN)", file=sys.stderr)
        return 1

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even when started with SIGINT ignored
    began = time.monotonic()
    deadline = began + args.max_seconds
    try:
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp, running_stack(Path(tmp)) as stack:
            print(f"servers up in {time.monotonic() - began:.1f} s: provider {stack.provider_url}, "
                  f"LiteLLM {stack.litellm_url}, BFF {stack.bff_url} (pids {stack.provider.pid}, "
                  f"{stack.litellm.pid}, {stack.bff.pid}); {os.cpu_count()} cores", flush=True)
            results = asyncio.run(measure(stack, args, deadline))
            for child in stack.children().values():
                if not child.alive():
                    raise BenchError(f"{child.name} died during the run:\n{child.log_tail()}")
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - began
    out = report(results, args, elapsed)
    print(f"\nTotal run time {elapsed:.1f} s (including server start-up and shutdown)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))
        print(f"figures written to {args.json}")
    errors = sum(p.errors for phases in results.values() for group in phases.values() for p in group)
    if errors:
        print(f"\n{errors} requests failed: see error_samples above/in --json", file=sys.stderr)
        for phases in results.values():
            for group in phases.values():
                for p in group:
                    if p.error_samples:
                        print(f"  {p.path} round {p.round} c={p.concurrency}: {p.error_samples}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
