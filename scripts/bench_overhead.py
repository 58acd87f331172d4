#!/usr/bin/env python3
"""Measures what the BFF adds on top of LiteLLM: latency, CPU, streaming timing, memory, throughput.

    .venv/bin/python scripts/bench_overhead.py [--mode chat|stream|embeddings|all] [--concurrency 32]
        [--requests 1000] [--serial-requests 150] [--stream-requests 320] [--stream-serial-requests 40]
        [--rounds 3] [--warmup 300] [--workers 1,2] [--http-store | --no-http-store]
        [--client raw|httpx] [--profile PATH] [--max-seconds 900] [--json PATH]

`--mode all` (the default) runs the three modes on one set of servers, then the
ClickHouse-server-shaped memory pass and the LiteLLM --num_workers sweep: about 8 minutes
on 2 cores. `--mode chat --workers '' --no-http-store` is the quick one (~2 minutes).

It starts three servers, each in its own process on 127.0.0.1:

    fake provider   tests/support/fake_openai.py under uvicorn (answers at once; the
                    bench-stream model streams 10 content deltas 10 ms apart)
    LiteLLM         .venv-litellm/bin/litellm, models bench-model (chat), bench-stream, bench-embed
    BFF             `python -m bff`, static dev roles, pointing at that LiteLLM, spans into
                    an embedded ClickHouse (chdb://) as the local dev setup does

and drives them from this process (the load generator: a minimal asyncio HTTP/1.1
client by default, since httpx.AsyncClient costs ~7x more CPU per request and would
take CPU from the servers; --client httpx to compare, non-streaming modes only) with the
same body along two paths:

    (a) straight to LiteLLM     client -> LiteLLM -> provider
    (b) through the BFF         client -> BFF -> LiteLLM -> provider

Modes: chat (non-streaming chat completions), stream (the same with "stream": true and
stream_options.include_usage), embeddings (POST /v1/embeddings). In each, rounds alternate
a, b, a, b, ... so machine noise hits both paths alike; each round is a closed loop of
--concurrency workers, then a concurrency-1 pass of each path (added latency without
queueing). Figures are medians of the per-round values. The CPU time each process spends
per request comes from /proc (process-group totals), which machine noise moves far less
than wall time. Targets (PASS/MISS, all measured side by side in the run):

    chat, embeddings  BFF CPU per request <= 10 % of LiteLLM's (stretch 5 %); added p50
                      latency at concurrency 1 <= 1.5 ms; informational: added p50 < 2 ms
                      and p99 < 5 ms at --concurrency (LiteLLM is saturated there: queueing)
    stream            added time to first byte (response head) and to first token (first
                      content delta) <= 1 ms at concurrency 1 (also shown at --concurrency);
                      chunks never coalesced (every content delta in its own HTTP chunk, as
                      many per stream on both paths) and the inter-chunk gaps unchanged
                      (median gap within 1 ms of the straight path's); BFF CPU per stream
                      <= 10 % of LiteLLM's
    every mode        span export <= 10 % of the BFF's CPU: the CPU of the BFF's threads other
                      than its event loop (/proc/<pid>/task), i.e. the exporter, the embedded
                      store's engine and merges, store queries

Memory: the BFF's VmRSS / VmHWM after start-up and after the load, for the embedded store
and (--http-store) for a ClickHouse-server URL with no server behind it (spans cannot be
delivered: the BFF keeps them for retry, up to SPAN_BUFFER_MAX, and serves on).
Throughput: --workers N,M runs LiteLLM with --num_workers N for each and measures req/s
straight and through the BFF at --concurrency (non-streaming chat).
--profile PATH samples the BFF with py-spy during the BFF rounds (see scripts/bench_profile.py).

Exit status: 0 when the run completed without errors (whether targets PASS or MISS), 1
when a server failed to start, a request failed, or the time budget ran out. Linux only
(CPU and memory come from /proc). Needs the standard library and httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from bench_processes import CLK_TCK, ROOT, BenchError, Child, free_port, session_token, wait_ready
from bench_profile import Profiler, find_py_spy

LITELLM_BIN = Path(os.environ.get("LITELLM_BIN", ROOT / ".venv-litellm" / "bin" / "litellm"))
MASTER_KEY = "sk-bench-master-key-0123456789"
WEBUI_SECRET = "bench-webui-secret-key"
USER_ID = "dev-admin"  # role admin in config/dev-users.yaml
T = TypeVar("T")
CHAT_PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]

# Targets (ms, or a fraction of LiteLLM's CPU per request)
TARGET_CPU_RATIO = 0.10
TARGET_EXPORT_SHARE = 0.10  # span export (with the embedded store: its engine too) within the BFF's CPU
STRETCH_CPU_RATIO = 0.05
TARGET_SERIAL_P50_MS = 1.5
TARGET_LOAD_P50_MS = 2.0  # informational: at --concurrency LiteLLM is saturated
TARGET_LOAD_P99_MS = 5.0
TARGET_FIRST_BYTE_MS = 1.0
TARGET_GAP_SHIFT_MS = 1.0

BURST_MS = 0.5  # content chunks closer than this came out of one burst
STREAM_DELTAS = 10  # the fake provider's bench-stream: content deltas per stream
CONTENT_DELTA = re.compile(rb'"content":\s*"(?!")')  # a delta with non-empty content

# The fake provider runs in its own interpreter: argv[1] is tests/, argv[2] the port. It keeps
# idle connections 75 s, longer than LiteLLM's pool (as a real provider; tests/conftest.py): with
# uvicorn's 5 s LiteLLM now and then sends on a connection being closed and answers 500.
FAKE_PROVIDER_CODE = """
import sys
import uvicorn
sys.path.insert(0, sys.argv[1])
from support.fake_openai import FakeProviderState, create_fake_provider
uvicorn.run(create_fake_provider(FakeProviderState()), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", access_log=False, timeout_keep_alive=75)
"""


@dataclass(frozen=True)
class Workload:
    mode: str
    path: str
    body: bytes
    stream: bool
    marker: bytes  # found in every good answer


WORKLOADS = {
    "chat": Workload(
        "chat", CHAT_PATH, json.dumps({"model": "bench-model", "messages": MESSAGES}).encode(), False, b'"choices"'
    ),
    "stream": Workload(
        "stream",
        CHAT_PATH,
        json.dumps(
            {"model": "bench-stream", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
        ).encode(),
        True,
        b"data: [DONE]",
    ),
    "embeddings": Workload(
        "embeddings", "/v1/embeddings", json.dumps({"model": "bench-embed", "input": "hello world"}).encode(), False,
        b'"embedding"',
    ),
}
MODES = ("chat", "stream", "embeddings")


def litellm_config(provider_url: str) -> dict[str, Any]:
    """Deployments on the fake provider; no retries, cooldowns or verbose logging."""
    base = {"api_base": f"{provider_url}/v1", "api_key": "fake"}
    return {
        "model_list": [
            {
                "model_name": "bench-model",
                # a catalog model name, so LiteLLM treats it like a real OpenAI model
                "litellm_params": {"model": "openai/gpt-4o-mini", **base},
                "model_info": {"gateway_tier": "mini"},
            },
            {
                "model_name": "bench-stream",
                # the upstream name picks the fake provider's behaviour; prices given, so no cost-map miss
                "litellm_params": {
                    "model": "openai/bench-stream", "input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7, **base
                },
                "model_info": {"gateway_tier": "mini"},
            },
            {
                "model_name": "bench-latency",
                # a realistic provider: 300-800 ms answers, ~3 s streams (scripts/bench_flood.py --latency realistic)
                "litellm_params": {
                    "model": "openai/bench-latency", "input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7, **base
                },
                "model_info": {"gateway_tier": "mini"},
            },
            {
                "model_name": "bench-embed",
                "litellm_params": {"model": "openai/text-embedding-3-small", **base},
                "model_info": {"mode": "embedding", "gateway_tier": "mini"},
            },
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
    store: str  # "chdb" or "http"
    litellm_workers: int
    bff_readiness: dict[str, Any] = field(default_factory=dict)
    memory_at_rest: dict[str, int] = field(default_factory=dict)

    def children(self) -> dict[str, Child]:
        return {"provider": self.provider, "litellm": self.litellm, "bff": self.bff}


@contextlib.contextmanager
def running_stack(
    work_dir: Path, store: str = "chdb", litellm_workers: int = 1, bff_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Starts provider, LiteLLM and BFF; stops every one of them on the way out, whatever happens.

    store "chdb": the embedded engine in a fresh directory. store "http": a ClickHouse-server
    URL with nothing listening behind it (the BFF must still serve; spans wait for retry).
    bff_env: settings that replace or add to the BFF's (scripts/bench_flood.py: its policy, users, REDIS_URL).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
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
            [str(LITELLM_BIN), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(litellm_port),
             "--num_workers", str(litellm_workers)],
            {
                "LITELLM_MASTER_KEY": MASTER_KEY,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",  # also lowers uvicorn's level: no access-log line per request
            },
            work_dir,
        )
        started.append(litellm)

        if store == "chdb":
            clickhouse_url = f"chdb://{work_dir / 'clickhouse'}"  # spans recorded as in local dev
        else:
            clickhouse_url = f"http://bench:bench@127.0.0.1:{free_port()}/"  # nothing listens there
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
                "CLICKHOUSE_URL": clickhouse_url,
                "CLICKHOUSE_SCHEMA_DIR": str(ROOT / "config" / "clickhouse"),
                "LOG_LEVEL": "WARNING",
                **(bff_env or {}),
            },
            work_dir,
        )
        started.append(bff)

        wait_ready(provider, f"{provider_url}/v1/models", 30)
        wait_ready(litellm, f"{litellm_url}/health/readiness", 180)
        if store == "chdb":
            wait_ready(bff, f"{bff_url}/health/ready", 30)  # also checks that the BFF reaches LiteLLM
        else:
            wait_ready(bff, f"{bff_url}/health", 30)  # readiness reports ClickHouse down: see bff_readiness
        readiness = httpx.get(f"{bff_url}/health/ready", timeout=10)
        stack = Stack(provider, litellm, bff, provider_url, litellm_url, bff_url, store, litellm_workers)
        body: Any = readiness.text
        with contextlib.suppress(ValueError):
            body = readiness.json()
        stack.bff_readiness = {"status": readiness.status_code, "body": body}
        time.sleep(1.0)  # let start-up work settle before the resting memory figure
        stack.memory_at_rest = bff.memory_kib()
        yield stack
    finally:
        for child in reversed(started):
            child.stop()


# --------------------------------------------------------------------------- load generator


@dataclass
class Answer:
    """What one request got: None problem means a good answer; stream timings in seconds since it was sent."""

    problem: str | None
    head_s: float = math.nan  # the response head arrived (first byte)
    first_token_s: float = math.nan  # the first HTTP chunk with a content delta arrived
    content_chunk_s: list[float] = field(default_factory=list)  # arrival of every chunk with a content delta
    chunks: int = 0  # HTTP chunks in the body
    deltas: int = 0  # content deltas (SSE events with non-empty content)


class PathClient(Protocol):
    """Sends the workload's request along one path."""

    async def prepare(self, connections: int) -> None: ...

    async def send(self) -> Answer: ...

    async def aclose(self) -> None: ...


def check_answer(status: int, body: bytes, marker: bytes) -> str | None:
    if status == 200 and marker in body:
        return None
    return f"HTTP {status}: {body[:200]!r}"


class HttpxPath:
    """httpx.AsyncClient with one keep-alive connection per worker (non-streaming workloads)."""

    def __init__(self, base_url: str, token: str, concurrency: int, workload: Workload):
        self._workload = workload
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(60.0),
        )

    async def send(self) -> Answer:
        response = await self._client.post(self._workload.path, content=self._workload.body)
        return Answer(check_answer(response.status_code, response.content, self._workload.marker))

    async def prepare(self, connections: int) -> None:
        """httpx reconnects stale pooled connections by itself."""

    async def aclose(self) -> None:
        await self._client.aclose()


class RawPath:
    """Minimal HTTP/1.1 keep-alive client on asyncio streams: far less CPU per request than httpx.

    Enough for these two servers: one fixed request; answers framed by Content-Length or
    chunked. For a stream, each HTTP chunk's arrival time is recorded as it is read, so
    chunks a relay coalesces show as fewer chunks than content deltas. Workers share a pool
    of idle connections. uvicorn closes a connection idle for 5 s, so older idle ones are
    dropped, and a reused connection that closes before answering is retried once on a new
    one (as httpx does).
    """

    MAX_IDLE_SECONDS = 3.0

    def __init__(self, base_url: str, token: str, concurrency: int, workload: Workload):
        host_port = base_url.removeprefix("http://")
        host, port = host_port.split(":")
        self._host, self._port = host, int(port)
        self._workload = workload
        self._request = (
            f"POST {workload.path} HTTP/1.1\r\nHost: {host_port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(workload.body)}\r\n\r\n"
        ).encode() + workload.body
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def prepare(self, connections: int) -> None:
        """Before the clock starts: drop idle connections the server may have closed, open fresh ones."""
        await self.aclose()
        opened = await asyncio.gather(*(asyncio.open_connection(self._host, self._port) for _ in range(connections)))
        now = time.monotonic()
        self._idle = [(reader, writer, now) for reader, writer in opened]

    async def send(self) -> Answer:
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

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Answer:
        answer = Answer(None)
        try:
            sent = time.perf_counter()
            writer.write(self._request)
            head = await reader.readuntil(b"\r\n\r\n")
            answer.head_s = time.perf_counter() - sent
            status = int(head[9:12])
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
            }
            if b"content-length" in headers:
                body = await reader.readexactly(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = await self._read_chunked(reader, answer, sent)
            else:
                raise httpx.RemoteProtocolError("answer without a length")
        except BaseException:
            writer.close()
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        answer.problem = check_answer(status, body, self._workload.marker)
        if answer.problem is None and self._workload.stream and not answer.deltas:
            answer.problem = f"a stream without content deltas: {body[:200]!r}"
        return answer

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader, answer: Answer, sent: float) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            data = await reader.readexactly(size)
            arrived = time.perf_counter() - sent
            await reader.readexactly(2)
            parts.append(data)
            answer.chunks += 1
            deltas = len(CONTENT_DELTA.findall(data))
            if deltas:
                if not answer.deltas:
                    answer.first_token_s = arrived
                answer.deltas += deltas
                answer.content_chunk_s.append(arrived)

    async def aclose(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


@dataclass
class Phase:
    """One pass of one path: latencies of good answers, stream timings, and what it cost each process in CPU."""

    mode: str
    path: str  # "litellm" (a) or "bff" (b)
    round: int
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    cpu_s: dict[str, float]  # per process, including "loadgen"
    error_samples: list[str] = field(default_factory=list)
    first_byte_ms: list[float] = field(default_factory=list, repr=False)
    first_token_ms: list[float] = field(default_factory=list, repr=False)
    gaps_ms: list[float] = field(default_factory=list, repr=False)  # between content chunks of one stream
    content_chunks: list[int] = field(default_factory=list, repr=False)  # per stream
    deltas: list[int] = field(default_factory=list, repr=False)  # per stream
    bff_loop_s: float = 0.0  # CPU of the BFF's event-loop thread; the rest of its CPU is span export and the store

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float, values: str = "latencies_ms") -> float:
        return percentile(sorted(getattr(self, values)), q)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        out = {
            "mode": self.mode,
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
        if self.content_chunks:
            out.update(
                first_byte_p50_ms=round(self.pct(50, "first_byte_ms"), 3),
                first_token_p50_ms=round(self.pct(50, "first_token_ms"), 3),
                gap_p50_ms=round(self.pct(50, "gaps_ms"), 3),
                content_chunks_per_stream=statistics.mean(self.content_chunks),
                deltas_per_stream=statistics.mean(self.deltas),
            )
        return out


def percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolation percentile of an already sorted list."""
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


async def drive(
    mode: str, path: str, client: PathClient, total: int, concurrency: int, stack: Stack, round_no: int,
    deadline: float,
) -> Phase:
    """A closed loop: `concurrency` workers take requests from a shared budget of `total`."""
    remaining = total
    latencies: list[float] = []
    errors: list[str] = []
    answers: list[Answer] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                answer = await client.send()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, httpx.HTTPError, ValueError) as exc:
                answer = Answer(f"{type(exc).__name__}: {exc}")
            elapsed_ms = (time.perf_counter() - started) * 1000
            if answer.problem is None:
                latencies.append(elapsed_ms)
                answers.append(answer)
            else:
                errors.append(answer.problem)

    children = stack.children()
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            # Connections are opened before the clock starts, so no request pays for a connect.
            await client.prepare(min(concurrency, total))
            cpu_before = {name: child.cpu_seconds() for name, child in children.items()}
            loop_before = stack.bff.main_thread_cpu_seconds()
            loadgen_before = time.process_time()
            machine_before = machine_busy_seconds()
            started = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, total)):
                    group.create_task(worker())
            wall = time.perf_counter() - started
    except TimeoutError:
        raise BenchError(f"time budget exhausted (--max-seconds) during {mode} {path} round {round_no}") from None
    cpu = {name: child.cpu_seconds() - cpu_before[name] for name, child in children.items()}
    loop = stack.bff.main_thread_cpu_seconds() - loop_before
    cpu["loadgen"] = time.process_time() - loadgen_before
    # CPU the rest of the machine used meanwhile (other jobs): noise both paths should share.
    cpu["other"] = max(machine_busy_seconds() - machine_before - sum(cpu.values()), 0.0)
    phase = Phase(mode, path, round_no, concurrency, total, len(errors), wall, latencies, cpu, sorted(set(errors))[:5])
    phase.bff_loop_s = loop
    for answer in answers:
        if answer.content_chunk_s:
            phase.first_byte_ms.append(answer.head_s * 1000)
            phase.first_token_ms.append(answer.first_token_s * 1000)
            times = answer.content_chunk_s
            phase.gaps_ms.extend((later - earlier) * 1000 for earlier, later in zip(times, times[1:], strict=False))
            phase.content_chunks.append(len(times))
            phase.deltas.append(answer.deltas)
    return phase


def machine_busy_seconds() -> float:
    """CPU seconds all cores of this machine have spent busy since boot (/proc/stat, first line)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / CLK_TCK


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def share(part: float, whole: float) -> float:
    return part / whole if whole else math.nan


def path_figures(phases: list[Phase]) -> dict[str, Any]:
    """Totals over rounds; latency and throughput figures are medians of the per-round values."""
    figures = {
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
        # the BFF's CPU outside its event loop: span export, the store's engine and merges, store queries
        "bff_background_share": median([1 - p.bff_loop_s / p.cpu_s["bff"] if p.cpu_s["bff"] else 0.0 for p in phases]),
    }
    if any(p.content_chunks for p in phases):
        gaps = sorted(g for p in phases for g in p.gaps_ms)
        figures["stream"] = {
            "first_byte_p50_ms": median([p.pct(50, "first_byte_ms") for p in phases]),
            "first_byte_p99_ms": median([p.pct(99, "first_byte_ms") for p in phases]),
            "first_token_p50_ms": median([p.pct(50, "first_token_ms") for p in phases]),
            "first_token_p99_ms": median([p.pct(99, "first_token_ms") for p in phases]),
            "gap_ms": {f"p{q}": percentile(gaps, q) for q in (10, 50, 90, 99)},
            "content_chunks_per_stream": statistics.mean(c for p in phases for c in p.content_chunks),
            "deltas_per_stream": statistics.mean(d for p in phases for d in p.deltas),
            "streams_coalesced": sum(c < d for p in phases for c, d in zip(p.content_chunks, p.deltas, strict=True)),
            # of the adjacent delta pairs: arrived in one HTTP chunk, or in chunks < BURST_MS apart
            "merged_share": share(sum(d - c for p in phases for c, d in zip(p.content_chunks, p.deltas, strict=True)),
                                  sum(d - 1 for p in phases for d in p.deltas)),
            "burst_share": share(sum(g < BURST_MS for g in gaps), sum(d - 1 for p in phases for d in p.deltas)),
            "streams": sum(len(p.content_chunks) for p in phases),
        }
    return figures


def print_table(title: str, figures: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'path':<26}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for label, fig in figures.items():
        print(
            f"  {label:<26}{fig['requests']:>9}{fig['errors']:>8}{fig['p50_ms']:>9.2f}"
            f"{fig['p90_ms']:>9.2f}{fig['p99_ms']:>9.2f}{fig['rps']:>9.1f}"
        )


def print_stream_table(title: str, figures: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'path':<26}{'1st byte p50':>13}{'p99':>8}{'1st token p50':>14}{'p99':>8}"
          f"{'gap p10':>9}{'p50':>7}{'p90':>7}{'p99':>7}{'chunks/stream':>14}{'deltas':>7}{'coalesced':>10}")
    for label, fig in figures.items():
        s = fig["stream"]
        print(
            f"  {label:<26}{s['first_byte_p50_ms']:>13.2f}{s['first_byte_p99_ms']:>8.2f}{s['first_token_p50_ms']:>14.2f}"
            f"{s['first_token_p99_ms']:>8.2f}{s['gap_ms']['p10']:>9.2f}{s['gap_ms']['p50']:>7.2f}{s['gap_ms']['p90']:>7.2f}"
            f"{s['gap_ms']['p99']:>7.2f}{s['content_chunks_per_stream']:>14.2f}{s['deltas_per_stream']:>7.2f}"
            f"{s['streams_coalesced']:>6}/{s['streams']}"
        )


def print_cpu(title: str, figures: dict[str, dict[str, Any]], unit: str = "request") -> None:
    print(f"\n{title}: CPU per {unit} (ms) and CPU use (% of one core), median of rounds")
    print("  ('other' is everything else running on the machine meanwhile: noise)")
    names = ["loadgen", "bff", "litellm", "provider", "other"]
    print(f"  {'path':<26}" + "".join(f"{name:>17}" for name in names))
    for label, fig in figures.items():
        cells = "".join(
            f"{fig['cpu_ms_per_request'][n]:>9.3f} ({fig['cpu_percent_of_one_core'][n]:>3.0f}%)" for n in names
        )
        print(f"  {label:<26}{cells}")


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


Target = tuple[str, str, str]  # (what, measured vs target, PASS/MISS/info)


def report_mode(mode: str, results: dict[str, dict[str, list[Phase]]], args: argparse.Namespace) -> tuple[dict[str, Any], list[Target]]:
    load, serial = results["load"], results["serial"]
    unit = "stream" if mode == "stream" else "request"
    a, b = path_figures(load["litellm"]), path_figures(load["bff"])
    figures = {"(a) straight to LiteLLM": a, "(b) through the BFF": b}
    targets: list[Target] = []
    print(f"\n==================== mode {mode} ====================")
    print_table(f"[{mode}] load: concurrency {args.concurrency}, {a['requests'] // max(a['rounds'], 1)} {unit}s per path "
                f"per round, {a['rounds']} rounds (latencies: whole {unit}; median of rounds)", figures)
    added_p50 = b["p50_ms"] - a["p50_ms"]
    added_p99 = b["p99_ms"] - a["p99_ms"]
    pairs_p50 = [pb.pct(50) - pa.pct(50) for pa, pb in zip(load["litellm"], load["bff"], strict=True)]
    spread_p50 = max(p.pct(50) for p in load["litellm"]) - min(p.pct(50) for p in load["litellm"])
    print(f"  added at c={args.concurrency}: p50 {added_p50:+.2f} ms, p99 {added_p99:+.2f} ms; per round p50 "
          f"{', '.join(f'{d:+.1f}' for d in pairs_p50)} ms; straight path alone varies {spread_p50:.1f} ms (p50) between rounds")
    out: dict[str, Any] = {
        "load": {"litellm": a, "bff": b},
        "added_load_ms": {"p50": added_p50, "p99": added_p99, "per_round_p50": pairs_p50},
        "rounds": [p.summary() for name in ("litellm", "bff") for p in load[name]],
    }
    if mode != "stream":
        targets.append((f"{mode}: added p50 at c={args.concurrency} (informational)",
                        f"{added_p50:+.2f} ms vs < {TARGET_LOAD_P50_MS} ms", verdict(added_p50, TARGET_LOAD_P50_MS)))
        targets.append((f"{mode}: added p99 at c={args.concurrency} (informational)",
                        f"{added_p99:+.2f} ms vs < {TARGET_LOAD_P99_MS} ms", verdict(added_p99, TARGET_LOAD_P99_MS)))

    sa = sb = None
    if serial["litellm"]:
        sa, sb = path_figures(serial["litellm"]), path_figures(serial["bff"])
        print_table(f"[{mode}] no queueing: concurrency 1", {"(a) straight to LiteLLM": sa, "(b) through the BFF": sb})
        s50, s99 = sb["p50_ms"] - sa["p50_ms"], sb["p99_ms"] - sa["p99_ms"]
        pairs = [pb.pct(50) - pa.pct(50) for pa, pb in zip(serial["litellm"], serial["bff"], strict=True)]
        print(f"  added at c=1: p50 {s50:+.2f} ms, p99 {s99:+.2f} ms; per round p50 {', '.join(f'{d:+.2f}' for d in pairs)} ms")
        out["serial"] = {"litellm": sa, "bff": sb, "added_ms": {"p50": s50, "p99": s99, "per_round_p50": pairs}}
        out["rounds"] += [p.summary() for name in ("litellm", "bff") for p in serial[name]]
        if mode != "stream":
            targets.append((f"{mode}: added p50 at c=1", f"{s50:+.2f} ms vs <= {TARGET_SERIAL_P50_MS} ms",
                            verdict(s50, TARGET_SERIAL_P50_MS)))

    if mode == "stream":
        stream_figures = {f"(a) straight c={args.concurrency}": a, f"(b) BFF c={args.concurrency}": b}
        if sa and sb:
            stream_figures |= {"(a) straight c=1": sa, "(b) BFF c=1": sb}
        print_stream_table("[stream] timing (ms since the request was sent; gaps between content chunks of a stream)",
                           stream_figures)
        for label, (pa, pb) in {f"c={args.concurrency}": (a, b), "c=1": (sa, sb)}.items():
            if pa is None or pb is None:
                continue
            for key, name in (("first_byte_p50_ms", "first byte"), ("first_token_p50_ms", "first token")):
                added = pb["stream"][key] - pa["stream"][key]
                out.setdefault("added_stream_ms", {})[f"{label} {name} p50"] = added
                if label == "c=1":
                    targets.append((f"stream: added time to {name} p50 at c=1", f"{added:+.2f} ms vs <= {TARGET_FIRST_BYTE_MS} ms",
                                    verdict(added, TARGET_FIRST_BYTE_MS)))
                else:
                    targets.append((f"stream: added time to {name} p50 at {label} (informational)", f"{added:+.2f} ms", "info"))
        # Chunks never coalesced, gaps unchanged: judged at c=1 (no queueing) and at load.
        for label, (pa, pb) in {"c=1": (sa, sb), f"c={args.concurrency}": (a, b)}.items():
            if pa is None or pb is None:
                continue
            sa_s, sb_s = pa["stream"], pb["stream"]
            same_count = abs(sb_s["content_chunks_per_stream"] - sa_s["content_chunks_per_stream"]) < 0.01
            intact = sb_s["streams_coalesced"] == 0 and sb_s["content_chunks_per_stream"] >= STREAM_DELTAS - 0.01
            targets.append((f"stream: chunks never coalesced at {label}",
                            f"{sb_s['content_chunks_per_stream']:.2f} content chunks/stream via BFF vs "
                            f"{sa_s['content_chunks_per_stream']:.2f} straight, {sb_s['streams_coalesced']} of "
                            f"{sb_s['streams']} streams coalesced", "PASS" if same_count and intact else "MISS"))
            # A relay that writes whatever one read returned merges deltas that reached it together
            # (LiteLLM's own bursts); holding chunks back would merge more than the straight path bursts.
            merged, bursts = sb_s["merged_share"], sa_s["burst_share"]
            targets.append((f"stream: BFF merges no more than LiteLLM bursts at {label}",
                            f"{100 * merged:.1f}% of adjacent deltas merged via BFF; straight path: {100 * bursts:.1f}% "
                            f"< {BURST_MS} ms apart", "PASS" if merged <= bursts + 0.05 else "MISS"))
            shift = sb_s["gap_ms"]["p50"] - sa_s["gap_ms"]["p50"]
            targets.append((f"stream: inter-chunk gap p50 unchanged at {label}",
                            f"{sb_s['gap_ms']['p50']:.2f} vs {sa_s['gap_ms']['p50']:.2f} ms (shift {shift:+.2f}, "
                            f"within {TARGET_GAP_SHIFT_MS} ms)", verdict(abs(shift), TARGET_GAP_SHIFT_MS)))

    print_cpu(f"[{mode}] at c={args.concurrency}", figures, unit)
    bff_cpu = b["cpu_ms_per_request"]["bff"]
    litellm_cpu = a["cpu_ms_per_request"]["litellm"]
    litellm_cpu_b = b["cpu_ms_per_request"]["litellm"]
    ratio = bff_cpu / litellm_cpu if litellm_cpu else math.inf
    print(f"  BFF {bff_cpu:.3f} ms CPU per {unit} = {100 * ratio:.1f}% of LiteLLM's {litellm_cpu:.3f} ms (straight path; "
          f"{litellm_cpu_b:.3f} ms through the BFF); the BFF alone would serve ~{1000 / bff_cpu if bff_cpu else math.inf:.0f} "
          f"{unit}s/s on one core")
    targets.append((f"{mode}: BFF CPU per {unit} / LiteLLM's", f"{100 * ratio:.1f}% vs <= {100 * TARGET_CPU_RATIO:.0f}%",
                    verdict(ratio, TARGET_CPU_RATIO)))
    targets.append((f"{mode}: BFF CPU per {unit} / LiteLLM's (stretch)", f"{100 * ratio:.1f}% vs <= {100 * STRETCH_CPU_RATIO:.0f}%",
                    verdict(ratio, STRETCH_CPU_RATIO)))
    background = b["bff_background_share"]
    print(f"  of the BFF's CPU, {100 * background:.1f}% ran outside its event loop (span export, the store's engine and merges)")
    targets.append((f"{mode}: span export and store / the BFF's CPU", f"{100 * background:.1f}% vs <= {100 * TARGET_EXPORT_SHARE:.0f}%",
                    verdict(background, TARGET_EXPORT_SHARE)))
    if b["cpu_percent_of_one_core"]["loadgen"] > 85:
        print("  WARNING: the load generator was saturated")
    out["cpu_ratio"] = ratio
    return out, targets


# --------------------------------------------------------------------------- runs


def mode_sizes(mode: str, args: argparse.Namespace) -> tuple[int, int, int]:
    """(warm-up, load requests per round, concurrency-1 requests per round) of one mode."""
    if mode == "stream":
        return max(args.warmup // 3, 1), args.stream_requests, args.stream_serial_requests
    return args.warmup, args.requests, args.serial_requests


def make_clients(stack: Stack, workload: Workload, args: argparse.Namespace) -> dict[str, PathClient]:
    token = session_token(USER_ID, WEBUI_SECRET)
    client_cls: type[RawPath] | type[HttpxPath] = RawPath if args.client == "raw" or workload.stream else HttpxPath
    return {
        "litellm": client_cls(stack.litellm_url, MASTER_KEY, args.concurrency, workload),
        "bff": client_cls(stack.bff_url, token, args.concurrency, workload),
    }


async def measure_mode(
    stack: Stack, mode: str, args: argparse.Namespace, deadline: float, rounds: int, profiler: Profiler | None,
    serial_passes: bool = True,
) -> dict[str, dict[str, list[Phase]]]:
    workload = WORKLOADS[mode]
    warmup, requests, serial_requests = mode_sizes(mode, args)
    serial_requests = serial_requests if serial_passes else 0
    paths = make_clients(stack, workload, args)
    load: dict[str, list[Phase]] = {"litellm": [], "bff": []}
    serial: dict[str, list[Phase]] = {"litellm": [], "bff": []}

    async def timed(name: str, client: PathClient, total: int, concurrency: int, round_no: int) -> Phase:
        profiled = profiler.phase() if profiler is not None and name == "bff" else contextlib.nullcontext()
        with profiled:
            return await drive(mode, name, client, total, concurrency, stack, round_no, deadline)

    try:
        # Warm-up: opens every connection, fills the BFF's model catalog and role caches,
        # and lets both interpreters settle. Errors here mean the setup is broken.
        for name, client in paths.items():
            warm = await drive(mode, name, client, warmup, args.concurrency, stack, 0, deadline)
            print(f"[{mode}] warm-up {name:<8} {warm.requests} requests, {warm.errors} errors, {warm.rps:.0f} req/s", flush=True)
            if warm.errors:
                raise BenchError(f"{mode} warm-up of {name} failed: {warm.error_samples}")
        for round_no in range(1, rounds + 1):
            for name, client in paths.items():  # a then b, every round
                phase = await timed(name, client, requests, args.concurrency, round_no)
                load[name].append(phase)
                print(f"[{mode}] round {round_no} {name:<8} c={args.concurrency:<3} p50 {phase.pct(50):7.2f} ms  "
                      f"p99 {phase.pct(99):7.2f} ms  {phase.rps:7.1f} req/s  errors {phase.errors}", flush=True)
            if serial_requests:
                for name, client in paths.items():
                    phase = await timed(name, client, serial_requests, 1, round_no)
                    serial[name].append(phase)
                    print(f"[{mode}] round {round_no} {name:<8} c=1   p50 {phase.pct(50):7.2f} ms  "
                          f"p99 {phase.pct(99):7.2f} ms  {phase.rps:7.1f} req/s  errors {phase.errors}", flush=True)
    finally:
        for client in paths.values():
            await client.aclose()
    return {"load": load, "serial": serial}


async def throughput(stack: Stack, args: argparse.Namespace, deadline: float, rounds: int = 2) -> dict[str, Any]:
    """req/s straight and through the BFF at --concurrency, non-streaming chat, alternating paths."""
    paths = make_clients(stack, WORKLOADS["chat"], args)
    phases: dict[str, list[Phase]] = {"litellm": [], "bff": []}
    warm_errors: list[str] = []
    try:
        for name, client in paths.items():
            warm = await drive("chat", name, client, args.warmup, args.concurrency, stack, 0, deadline)
            if warm.errors:  # reported in the table's row, the run goes on
                warm_errors += [f"warm-up {name}: {warm.errors} failed, e.g. {sample}" for sample in warm.error_samples]
                print(f"[workers {stack.litellm_workers}] warm-up of {name}: {warm.errors} of {warm.requests} failed: "
                      f"{warm.error_samples}", flush=True)
        for round_no in range(1, rounds + 1):
            for name, client in paths.items():
                phases[name].append(await drive("chat", name, client, args.sweep_requests, args.concurrency, stack,
                                                round_no, deadline))
    finally:
        for client in paths.values():
            await client.aclose()
    figures = {name: path_figures(group) for name, group in phases.items()}
    errors = sum(p.errors for group in phases.values() for p in group) + len(warm_errors)
    result = {
        "litellm_workers": stack.litellm_workers,
        "straight_rps": figures["litellm"]["rps"],
        "bff_rps": figures["bff"]["rps"],
        "bff_p50_ms": figures["bff"]["p50_ms"],
        "bff_p99_ms": figures["bff"]["p99_ms"],
        "cpu_percent_through_bff": figures["bff"]["cpu_percent_of_one_core"],
        "litellm_processes": len(stack.litellm.group_pids()),
        "litellm_rss_mib": stack.litellm.group_rss_kib() / 1024,
        "errors": errors,
        "error_samples": (warm_errors + [s for group in phases.values() for p in group for s in p.error_samples])[:5],
    }
    print(f"[workers {stack.litellm_workers}] straight {result['straight_rps']:.1f} req/s, through the BFF "
          f"{result['bff_rps']:.1f} req/s (p50 {result['bff_p50_ms']:.1f} ms, p99 {result['bff_p99_ms']:.1f} ms), "
          f"errors {errors}", flush=True)
    return result


def memory_line(label: str, rest: dict[str, int], after: dict[str, int]) -> str:
    return (f"  {label:<44} at rest VmRSS {rest['VmRSS'] / 1024:7.1f} MiB (VmHWM {rest['VmHWM'] / 1024:7.1f})   after the "
            f"load VmRSS {after['VmRSS'] / 1024:7.1f} MiB (VmHWM {after['VmHWM'] / 1024:7.1f})")


def check_alive(stack: Stack, where: str = "during the run", *others: Child) -> None:
    """Raises, with the exit status and log, when a server of the stack (or `others`) has died."""
    for child in (*stack.children().values(), *others):
        if not child.alive():
            raise BenchError(f"{child.name} died {where}, exit status {child.process.returncode} "
                             f"(negative: the signal that killed it):\n{child.log_tail()}")


def measured(stack: Stack, work: Coroutine[Any, Any, T]) -> T:
    """Runs one measurement; when a server died meanwhile, says so with its log."""
    try:
        result = asyncio.run(work)
    except (OSError, BenchError):
        check_alive(stack)
        raise
    check_alive(stack)
    return result


def profile_path(base: Path, mode: str, several: bool) -> Path:
    return base.with_name(f"{base.stem}.{mode}{base.suffix}") if several else base


def run(args: argparse.Namespace, work_dir: Path, began: float, deadline: float) -> dict[str, Any]:
    modes = list(MODES) if args.mode == "all" else [args.mode]
    py_spy = find_py_spy() if args.profile else None
    if args.profile and not py_spy:
        raise BenchError("--profile needs py-spy: set PY_SPY or put py-spy on PATH "
                         "(python3 -m venv /tmp/prof-venv && /tmp/prof-venv/bin/pip install py-spy)")
    out: dict[str, Any] = {"modes": {}, "targets": [], "memory": {}, "throughput": []}
    targets: list[Target] = []
    with running_stack(work_dir / "main") as stack:
        print(f"servers up in {time.monotonic() - began:.1f} s: provider {stack.provider_url}, LiteLLM {stack.litellm_url}, "
              f"BFF {stack.bff_url} (pids {stack.provider.pid}, {stack.litellm.pid}, {stack.bff.pid}); "
              f"{os.cpu_count()} cores", flush=True)
        for mode in modes:
            profiler = None
            if py_spy:
                target = profile_path(args.profile, mode, len(modes) > 1)
                profiler = Profiler(py_spy, stack.bff.pid, target, work_dir)
            results = measured(stack, measure_mode(stack, mode, args, deadline, args.rounds, profiler))
            mode_out, mode_targets = report_mode(mode, results, args)
            out["modes"][mode] = mode_out
            targets += mode_targets
            errors = sum(p.errors for group in results.values() for phases in group.values() for p in phases)
            if errors:
                samples = [s for group in results.values() for phases in group.values() for p in phases for s in p.error_samples]
                raise BenchError(f"{errors} {mode} requests failed: {samples[:5]}")
            if profiler is not None:
                profiler.write()
                print(f"\n[{mode}] py-spy profile of the BFF during its rounds, written to {profiler.out}")
                print(profiler.summary())
        after = stack.bff.memory_kib()
        out["memory"]["chdb"] = {"at_rest_kib": stack.memory_at_rest, "after_load_kib": after, "modes": modes}
        if 1 in args.workers:
            out["throughput"].append(measured(stack, throughput(stack, args, deadline)))

    if args.http_store:
        with running_stack(work_dir / "http-store", store="http") as stack:
            print(f"\nBFF with CLICKHOUSE_URL=http://... (no server behind it): /health/ready answered "
                  f"{stack.bff_readiness['status']} {json.dumps(stack.bff_readiness['body'])[:300]}", flush=True)
            for mode in modes:
                results = measured(stack, measure_mode(stack, mode, args, deadline, 1, None, serial_passes=False))
                errors = sum(p.errors for group in results.values() for phases in group.values() for p in phases)
                if errors:
                    raise BenchError(f"the BFF with an unreachable ClickHouse server failed {errors} {mode} requests")
            check_alive(stack)
            after = stack.bff.memory_kib()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                stack.bff_readiness = {"status": (answer := httpx.get(f"{stack.bff_url}/health/ready", timeout=10)).status_code,
                                       "body": answer.json()}
            log_lines = {
                "clickhouse_unavailable_warnings": stack.bff.log_count("ClickHouse unavailable"),
                "span_buffer_full_errors": stack.bff.log_count("span buffer full"),
            }
            out["memory"]["http"] = {"at_rest_kib": stack.memory_at_rest, "after_load_kib": after, "modes": modes,
                                     "readiness": stack.bff_readiness, "log": log_lines}

    for workers in (n for n in args.workers if n != 1):
        with running_stack(work_dir / f"workers-{workers}", litellm_workers=workers) as stack:
            print(f"\nLiteLLM with --num_workers {workers} up", flush=True)
            out["throughput"].append(measured(stack, throughput(stack, args, deadline)))

    # ------------------------------------------------------------------ summary
    if out["memory"]:
        print("\nBFF resident memory (main process)")
        labels = {"chdb": "embedded store (chdb://)", "http": "ClickHouse-server URL, nothing behind it"}
        for store, figures in out["memory"].items():
            print(memory_line(labels[store], figures["at_rest_kib"], figures["after_load_kib"]))
            if "log" in figures:
                body = figures["readiness"]["body"]
                spans = body.get("spans") if isinstance(body, dict) else body
                print(f"    after the load /health/ready answered {figures['readiness']['status']}, spans {spans}; "
                      f"BFF log: {figures['log']}")
    if out["throughput"]:
        print(f"\nThroughput at c={args.concurrency}, non-streaming chat, by LiteLLM --num_workers (median of 2 rounds)")
        print(f"  {'workers':>8}{'straight req/s':>16}{'via BFF req/s':>15}{'BFF p50 ms':>12}{'BFF p99 ms':>12}"
              f"{'litellm %cpu':>14}{'bff %cpu':>10}{'other %cpu':>12}{'litellm RSS MiB (procs)':>25}")
        for row in sorted(out["throughput"], key=lambda r: r["litellm_workers"]):
            cpu = row["cpu_percent_through_bff"]
            print(f"  {row['litellm_workers']:>8}{row['straight_rps']:>16.1f}{row['bff_rps']:>15.1f}{row['bff_p50_ms']:>12.1f}"
                  f"{row['bff_p99_ms']:>12.1f}{cpu['litellm']:>14.0f}{cpu['bff']:>10.0f}{cpu['other']:>12.0f}"
                  f"{row['litellm_rss_mib']:>18.0f} ({row['litellm_processes']})"
                  + (f"  errors {row['errors']}: {row['error_samples'][:2]}" if row["errors"] else ""))
    print("\nTargets")
    for what, figure, result in targets:
        print(f"  {result:<5} {what:<58} {figure}")
    out["targets"] = [{"what": w, "measured": m, "result": r} for w, m, r in targets]
    return out


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C does, so the servers are stopped either way."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=[*MODES, "all"], default="all", help="what to measure (all)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests in the load rounds (32)")
    parser.add_argument("--requests", type=int, default=1000, help="chat/embeddings requests per path per round (1000)")
    parser.add_argument("--serial-requests", type=int, default=150,
                        help="chat/embeddings concurrency-1 requests per path per round; 0 skips (150)")
    parser.add_argument("--stream-requests", type=int, default=320, help="streams per path per load round (320)")
    parser.add_argument("--stream-serial-requests", type=int, default=40,
                        help="concurrency-1 streams per path per round; 0 skips (40)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each path once per round (3)")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests per path (300; streams: a third)")
    parser.add_argument("--workers", default=None,
                        help="LiteLLM --num_workers values for the throughput table, e.g. 1,2,4; '' skips "
                             "(default 1,2 with --mode all, else none)")
    parser.add_argument("--sweep-requests", type=int, default=1000, help="requests per path per throughput round (1000)")
    parser.add_argument("--http-store", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the modes once against a BFF whose CLICKHOUSE_URL is an http URL with "
                             "no server (memory figures; default: with --mode all)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="load generator HTTP client (raw)")
    parser.add_argument("--profile", type=Path, help="py-spy the BFF during its rounds; raw collapsed stacks to this "
                        "file (PATH.<mode>.ext with --mode all); py-spy from env PY_SPY or PATH")
    parser.add_argument("--max-seconds", type=float, default=900, help="give up after this long (900)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if min(args.concurrency, args.requests, args.rounds, args.stream_requests, args.warmup) < 1:
        parser.error("--concurrency, --requests, --stream-requests, --warmup and --rounds must be at least 1")
    workers = args.workers if args.workers is not None else ("1,2" if args.mode == "all" else "")
    args.workers = sorted({int(n) for n in workers.split(",") if n.strip()})
    if any(n < 1 for n in args.workers):
        parser.error("--workers takes positive numbers")
    if args.http_store is None:
        args.http_store = args.mode == "all"
    if not LITELLM_BIN.exists():
        print(f"FAILED: no LiteLLM at {LITELLM_BIN} (set LITELLM_BIN)", file=sys.stderr)
        return 1

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even when started with SIGINT ignored
    began = time.monotonic()
    deadline = began + args.max_seconds
    try:
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
            out = run(args, Path(tmp), began, deadline)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - began
    print(f"\nTotal run time {elapsed:.1f} s (including server start-up and shutdown)")
    out["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
    out["cores"] = os.cpu_count()
    out["elapsed_s"] = round(elapsed, 1)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))
        print(f"figures written to {args.json}")
    failed = [row for row in out["throughput"] if row["errors"]]
    if failed:
        print(f"\nthroughput runs with failed requests: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
