#!/usr/bin/env python3
"""Counts false 502s and connection resets when traffic comes in bursts separated by idle gaps.

    .venv/bin/python scripts/bench_idle_gaps.py [--requests 20000] [--quick] [--burst 50]
        [--min-gap 4] [--max-gap 6] [--direct] [--seed 1] [--bff-pool-keepalive S] [--max-minutes M]

The race it looks for: a pooled keep-alive connection that sat idle ~5 s is reused just as
the server's own keep-alive timer (uvicorn's default 5 s, which LiteLLM keeps without
--keepalive_timeout) closes it. The request then goes out on a dying socket; LiteLLM never
sees it, and the BFF used to answer 502 "invalid answer". The BFF avoids it by expiring its
pooled connections to LiteLLM first (LITELLM_POOL_KEEPALIVE_SECONDS, default 3 s) and by
sending a request once more when its connection closed before any answer byte; its own
server keep-alive (BFF_KEEPALIVE_SECONDS, default 75 s) outlasts what clients keep (~15 s).

It starts, on free loopback ports, in their own process groups:

    LiteLLM   .venv-litellm/bin/litellm --config config/litellm.dev.yaml (mock models, no
              provider keys), NO --keepalive_timeout: uvicorn's 5 s, the worst case
    BFF       python -m bff, static dev roles (BFF_DEV_MODE=true ROLE_SOURCE=static), its
              pool and keep-alive settings at their defaults (--bff-pool-keepalive to change)

and sends --requests chat completions (model mock-mini, as the dev user) in bursts of
--burst concurrent requests, each burst after a random idle gap of --min-gap..--max-gap
seconds, from one httpx.AsyncClient whose pool keeps idle connections 15 s (as the SDKs
do). With --direct the same bursts go at the same moments straight to LiteLLM too, from a
client with httpx's default keepalive_expiry of 5 s: the race without the BFF's measures.

At the end it prints a table: statuses, 502s, client-side transport errors (resets) and
their rate per 1000 requests for each path, and how often the BFF re-sent a request on a
new connection. Exit status 1 when any request through the BFF got a 502, a transport
error or any other answer than 200, when a server failed or the run exceeded --max-minutes; 0 otherwise (errors on the
direct path are the point of the comparison, not a failure). Both servers are stopped
whatever happens (Ctrl-C and SIGTERM included).

A full run (20,000 requests, 50 per burst, gaps 4-6 s) takes about 40 minutes; --quick
sends 2,000 (about 4 minutes). Linux; needs the BFF's .venv and .venv-litellm.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_processes import ROOT, BenchError, Child, free_port, session_token, wait_ready

LITELLM_BIN = Path(os.environ.get("LITELLM_BIN", ROOT / ".venv-litellm" / "bin" / "litellm"))
LITELLM_CONFIG = ROOT / "config" / "litellm.dev.yaml"
MASTER_KEY = "sk-bench-idle-master-key-0123456789"
WEBUI_SECRET = "bench-idle-webui-secret-key"
USER_ID = "dev-user"  # role user in config/dev-users.yaml (budget 5 USD a day: ~1e-5 USD a request)
MODEL = "mock-mini"
CHAT_PATH = "/v1/chat/completions"
CHAT_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
CLIENT_KEEPALIVE_SECONDS = 15.0  # what the OpenAI / Anthropic SDKs' httpx pools keep
HTTPX_DEFAULT_KEEPALIVE_SECONDS = 5.0  # httpx.Limits() default
BFF_RETRY_LOG = "sending once more"  # bff/upstream/litellm.py logs this (INFO) when it re-sends
QUICK_REQUESTS = 2000
SAMPLES_KEPT = 5


@dataclass
class Stack:
    litellm: Child
    bff: Child
    litellm_url: str
    bff_url: str


@contextlib.contextmanager
def running_stack(work_dir: Path, pool_keepalive: float | None) -> Iterator[Stack]:
    started: list[Child] = []
    try:
        litellm_port, bff_port = free_port(), free_port()
        litellm_url, bff_url = f"http://127.0.0.1:{litellm_port}", f"http://127.0.0.1:{bff_port}"
        litellm = Child(
            "litellm",
            # no --keepalive_timeout: uvicorn's default 5 s, shorter than compose's 30 s on purpose
            [str(LITELLM_BIN), "--config", str(LITELLM_CONFIG), "--host", "127.0.0.1", "--port", str(litellm_port)],
            {
                "LITELLM_MASTER_KEY": MASTER_KEY,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "OTEL_SDK_DISABLED": "true",  # config/litellm.yaml's otel callback has no collector here (as scripts/dev.sh)
                "LITELLM_LOG": "ERROR",  # no access-log line per request
            },
            work_dir,
        )
        started.append(litellm)
        bff_env = {
            "BFF_HOST": "127.0.0.1",
            "BFF_PORT": str(bff_port),
            "BFF_DEV_MODE": "true",
            "ROLE_SOURCE": "static",
            "STATIC_ROLES_FILE": str(ROOT / "config" / "dev-users.yaml"),
            "POLICY_FILE": str(ROOT / "config" / "policy.yaml"),
            "ROUTING_FILE": str(ROOT / "config" / "routing.yaml"),
            "GENERATOR_MODE": "mock",
            "LITELLM_URL": litellm_url,
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "WEBUI_SECRET_KEY": WEBUI_SECRET,
            "CLICKHOUSE_URL": f"chdb://{work_dir / 'clickhouse'}",
            "MEDIA_DIR": str(work_dir / "media"),
            "LOG_LEVEL": "INFO",  # the re-send line is INFO; counted at the end
        }
        if pool_keepalive is not None:
            bff_env["LITELLM_POOL_KEEPALIVE_SECONDS"] = str(pool_keepalive)
        bff = Child("bff", [sys.executable, "-m", "bff"], bff_env, work_dir)
        started.append(bff)
        wait_ready(litellm, f"{litellm_url}/health/readiness", 180)
        wait_ready(bff, f"{bff_url}/health/ready", 60)
        yield Stack(litellm, bff, litellm_url, bff_url)
    finally:
        for child in reversed(started):
            child.stop()


# --------------------------------------------------------------------------- traffic


@dataclass
class PathStats:
    name: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    bad_bodies: int = 0  # 200 without choices
    samples: list[str] = field(default_factory=list)
    error_gaps: list[float] = field(default_factory=list)  # the idle gap before each burst with a failure

    @property
    def failures(self) -> int:
        return self.statuses[502] + sum(self.transport_errors.values())

    @property
    def other_statuses(self) -> int:
        return sum(count for status, count in self.statuses.items() if status not in (200, 502))

    def sample(self, text: str) -> None:
        if len(self.samples) < SAMPLES_KEPT:
            self.samples.append(text)


class TrafficPath:
    """One way to LiteLLM's mock model, with its own pooled client."""

    def __init__(self, name: str, base_url: str, token: str, keepalive: float, connections: int):
        self.stats = PathStats(name)
        self.keepalive = keepalive
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            # every connection of a burst stays pooled through the gap: the worst case
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=keepalive),
            timeout=httpx.Timeout(60.0, connect=10.0),
        )

    async def one(self, failed: list[bool]) -> None:
        stats = self.stats
        stats.requests += 1
        try:
            answer = await self.client.post(CHAT_PATH, content=CHAT_BODY)
        except httpx.TransportError as exc:  # resets, a closed connection, timeouts
            stats.transport_errors[type(exc).__name__] += 1
            stats.sample(f"{type(exc).__name__}: {exc}")
            failed[0] = True
            return
        stats.statuses[answer.status_code] += 1
        if answer.status_code == 200:
            if b'"choices"' not in answer.content:
                stats.bad_bodies += 1
                stats.sample(f"200 without choices: {answer.content[:200]!r}")
            return
        stats.sample(f"HTTP {answer.status_code}: {answer.text[:200]}")
        if answer.status_code == 502:
            failed[0] = True

    async def burst(self, size: int, gap: float) -> None:
        failed = [False]
        await asyncio.gather(*(self.one(failed) for _ in range(size)))
        if failed[0]:
            self.stats.error_gaps.append(gap)


@dataclass
class Run:
    bursts: int = 0
    gaps: list[float] = field(default_factory=list)
    burst_seconds: list[float] = field(default_factory=list)
    completed: bool = False


async def drive(stack: Stack, args: argparse.Namespace, deadline: float) -> tuple[list[TrafficPath], Run]:
    token = session_token(USER_ID, WEBUI_SECRET)
    paths = [TrafficPath("through the BFF", stack.bff_url, token, CLIENT_KEEPALIVE_SECONDS, args.burst)]
    if args.direct:
        paths.append(
            TrafficPath("straight to LiteLLM", stack.litellm_url, MASTER_KEY, HTTPX_DEFAULT_KEEPALIVE_SECONDS, args.burst)
        )
    run = Run()
    rng = random.Random(args.seed)
    try:
        for path in paths:  # warm-up (not counted): the BFF's catalog, LiteLLM's first call
            answer = await path.client.post(CHAT_PATH, content=CHAT_BODY)
            if answer.status_code != 200:
                raise BenchError(f"warm-up {path.stats.name}: HTTP {answer.status_code} {answer.text[:300]}")
        gap = 0.0
        remaining = args.requests
        started = time.monotonic()
        while remaining > 0:
            size = min(args.burst, remaining)
            began = time.monotonic()
            await asyncio.gather(*(path.burst(size, gap) for path in paths))
            run.burst_seconds.append(time.monotonic() - began)
            run.bursts += 1
            remaining -= size
            for child in (stack.litellm, stack.bff):
                if not child.alive():
                    raise BenchError(f"{child.name} died during the run:\n{child.log_tail()}")
            if run.bursts % args.progress_every == 0 or remaining == 0:
                done = args.requests - remaining
                figures = "; ".join(
                    f"{p.stats.name}: {p.stats.statuses[200]} ok, {p.stats.statuses[502]} x 502, "
                    f"{sum(p.stats.transport_errors.values())} transport errors"
                    for p in paths
                )
                print(
                    f"[{time.monotonic() - started:7.0f} s] {done}/{args.requests} requests, {run.bursts} bursts: {figures}",
                    flush=True,
                )
            if remaining == 0:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"over --max-minutes after {args.requests - remaining} requests")
            gap = rng.uniform(args.min_gap, args.max_gap)
            run.gaps.append(gap)
            await asyncio.sleep(gap)
        run.completed = True
    finally:
        for path in paths:
            await path.client.aclose()
    return paths, run


# --------------------------------------------------------------------------- report


def per_thousand(count: int, total: int) -> str:
    return f"{1000 * count / total:.3f}" if total else "-"


def report(paths: list[TrafficPath], run: Run, bff_resends: int, args: argparse.Namespace, elapsed: float) -> None:
    print("\nIdle-gap benchmark")
    print(
        f"  {run.bursts} bursts of up to {args.burst} concurrent requests, idle gaps {args.min_gap:g}-{args.max_gap:g} s "
        f"(mean {statistics.mean(run.gaps) if run.gaps else 0:.2f} s), bursts took median "
        f"{statistics.median(run.burst_seconds) if run.burst_seconds else 0:.2f} s; run {elapsed / 60:.1f} min"
    )
    pool = args.bff_pool_keepalive if args.bff_pool_keepalive is not None else "default (3)"
    print(f"  LiteLLM keep-alive: uvicorn's 5 s; BFF pool keepalive_expiry: {pool} s; BFF server keep-alive: default (75 s)")
    header = f"  {'path':<22} {'client pool':>11} {'requests':>9} {'200':>8} {'502':>6} {'other':>6} {'transport':>9} {'502+tr /1000':>12}"
    print("\n" + header)
    print("  " + "-" * (len(header) - 2))
    for path in paths:
        s = path.stats
        transport = sum(s.transport_errors.values())
        print(
            f"  {s.name:<22} {path.keepalive:>9g} s {s.requests:>9} {s.statuses[200]:>8} {s.statuses[502]:>6} "
            f"{s.other_statuses:>6} {transport:>9} {per_thousand(s.failures, s.requests):>12}"
        )
    print(f"\n  BFF re-sent a request on a new connection (stale pooled connection to LiteLLM): {bff_resends} times")
    for path in paths:
        s = path.stats
        if s.statuses.keys() - {200}:
            print(f"  {s.name}: statuses {dict(sorted(s.statuses.items()))}")
        if s.transport_errors:
            print(f"  {s.name}: transport errors {dict(s.transport_errors)}")
        if s.bad_bodies:
            print(f"  {s.name}: {s.bad_bodies} answers 200 without choices")
        if s.error_gaps:
            shown = ", ".join(f"{gap:.3f}" for gap in sorted(s.error_gaps)[:20])
            print(f"  {s.name}: idle gap before the {len(s.error_gaps)} bursts with a failure (s): {shown}")
        for sample in s.samples:
            print(f"    e.g. {sample}")


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # the servers are stopped on the way out, as with Ctrl-C


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per path (20000)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REQUESTS} requests: a check that it works")
    parser.add_argument("--burst", type=int, default=50, help="concurrent requests per burst and path (50)")
    parser.add_argument("--min-gap", type=float, default=4.0, help="shortest idle gap between bursts, seconds (4)")
    parser.add_argument("--max-gap", type=float, default=6.0, help="longest idle gap between bursts, seconds (6)")
    parser.add_argument("--direct", action="store_true", help="the same bursts straight to LiteLLM too (httpx's 5 s pool)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the gaps (1)")
    parser.add_argument("--bff-pool-keepalive", type=float, help="LITELLM_POOL_KEEPALIVE_SECONDS for the BFF (its default: 3)")
    parser.add_argument("--progress-every", type=int, default=20, help="print progress every N bursts (20)")
    parser.add_argument("--max-minutes", type=float, help="give up after this long (default: twice the expected time + 10)")
    args = parser.parse_args()
    if args.quick:
        args.requests = QUICK_REQUESTS
    if args.requests < 1 or args.burst < 1 or args.progress_every < 1:
        parser.error("--requests, --burst and --progress-every must be at least 1")
    if not 0 <= args.min_gap <= args.max_gap:
        parser.error("need 0 <= --min-gap <= --max-gap")
    if not LITELLM_BIN.exists():
        print(f"FAILED: no LiteLLM at {LITELLM_BIN} (set LITELLM_BIN; scripts/dev.sh installs it)", file=sys.stderr)
        return 1
    bursts = -(-args.requests // args.burst)
    expected_minutes = bursts * ((args.min_gap + args.max_gap) / 2 + 1.0) / 60
    max_minutes = args.max_minutes if args.max_minutes is not None else 2 * expected_minutes + 10

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-idle-gaps-") as tmp,
            running_stack(Path(tmp), args.bff_pool_keepalive) as stack,
        ):
            print(
                f"servers up in {time.monotonic() - began:.1f} s: LiteLLM {stack.litellm_url} (pid {stack.litellm.pid}), "
                f"BFF {stack.bff_url} (pid {stack.bff.pid}); {args.requests} requests per path in {bursts} bursts, "
                f"expected ~{expected_minutes:.0f} min, at most {max_minutes:.0f} min; {os.cpu_count()} cores",
                flush=True,
            )
            paths, run = asyncio.run(drive(stack, args, began + max_minutes * 60))
            bff_resends = stack.bff.log_count(BFF_RETRY_LOG)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 1
    report(paths, run, bff_resends, args, time.monotonic() - began)
    through_bff = paths[0].stats
    if through_bff.failures or through_bff.other_statuses or through_bff.bad_bodies:
        print(
            f"\nFAIL through the BFF: {through_bff.statuses[502]} x 502, {sum(through_bff.transport_errors.values())} "
            f"transport errors, {through_bff.other_statuses} other non-200 answers, {through_bff.bad_bodies} bad bodies",
            file=sys.stderr,
        )
        return 1
    print("\nOK: every request through the BFF answered 200 (no 502, no transport error)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
