#!/usr/bin/env python3
"""Shows whether one user's flood slows another user's requests: per-user rate limits under load.

    .venv/bin/python scripts/bench_flood.py [--quick] [--rounds 4] [--phase-seconds 6]
        [--latency instant|realistic|both] [--victim-workers 2] [--realistic-victim-workers 6]
        [--victim-pause-ms 10] [--flood-requests 96] [--flood-streams 32] [--flood-concurrent 8]
        [--flood-rpm 120] [--refused-pause-ms 20] [--rpm | --no-rpm] [--open | --no-open]
        [--redis | --no-redis] [--unheld | --no-unheld] [--bff-source DIR] [--max-seconds 1500]
        [--json PATH]

Not a test (CI never runs it); loopback only; stops by itself. The full run takes ~17 minutes
on 2 cores, `--quick` (2 rounds of 2 s phases: baseline, polite, impolite) about 2. It reuses
scripts/bench_overhead.py's servers and load generator, and starts three stacks side by side:
one with in-process counters, one whose REDIS_URL points at a Debian redis-server on a free
loopback port (`--save ''`; --no-redis: without it), and one in-process with
REFUSAL_HOLD_SECONDS=0, which answers every 429 at once instead of holding those of a caller
back before their Retry-After (policy/early_retries.py): what the holds buy (--no-unheld:
without it):

    fake provider   tests/support/fake_openai.py, in one of two latency modes (--latency both:
                    each round runs both):
                    instant    answers AT ONCE (bench-model) or streams 10 deltas 10 ms apart
                               (bench-stream): every admitted request costs LiteLLM and the BFF
                               their full CPU with no provider time to hide it (the harsh case)
                    realistic  bench-latency: answers after 300-800 ms, streams 60 deltas 50 ms
                               apart (~3 s), as a real provider
    LiteLLM         .venv-litellm/bin/litellm
    BFF             `python -m bff` (--bff-source DIR: from another checkout's backend/, for
                    before/after figures) with a policy and static users this script writes into
                    a temporary directory (not config/): no budgets, and per user

        bench-victim          8 in flight, 1,000,000 requests and 10^9 tokens a minute (so its
                              limit checks run, but never refuse it)
        bench-flood-limited   --flood-concurrent in flight (8), 1,000,000 requests a minute
        bench-flood-rpm       8 in flight, --flood-rpm requests a minute (120): soon all refused
        bench-flood-open      no limits at all

The victim sends non-streaming chat in a closed loop of --victim-workers (realistic:
--realistic-victim-workers), each pausing --victim-pause-ms between requests. Each round runs,
for each latency mode and each stack (their order alternating every round), these phases in an
order rotated every round, so machine noise (and the minute windows) hit all alike:

    baseline   the victim alone
    polite     bench-flood-limited floods: --flood-requests concurrent non-streaming requests and
               --flood-streams concurrent streams, each worker sending again at once after an
               answer and waiting 1 s after a 429 (its Retry-After), as an SDK that honours it;
               the kind that starts first keeps the slots in flight, so the streams start first
               in odd rounds and the requests in even ones (both kinds are served)
    impolite   the same flood, but after a 429 each worker retries after only --refused-pause-ms
               (20: at once, as far as this load generator can; with 0 the generator's own loop,
               which the victim shares, becomes the bottleneck)
    rpm        the impolite flood from bench-flood-rpm (its minute's quota is soon used up);
               --no-rpm skips it (--quick: skipped)
    open       the same flood from bench-flood-open: what the limits buy (--no-open skips;
               --quick: skipped)

Per stack and latency mode it prints the victim's p50/p95/p99 (all its requests of that phase,
pooled over the rounds) and their ratio to the baseline, the baseline's round-to-round spread
(the noise: max/min of its per-round p50), and a verdict per flood phase: PASS when the
phase's pooled p50 ratio is within that spread, else MISS (`open` is shown, not judged). Then
the flooder's answered and refused counts by status and error code, the most flood requests
seen in flight at once (client side: an upper bound of what the BFF admitted), the BFF's CPU
per flood answer (200 or 429; its CPU less the victim's share at the baseline's cost), and the
CPU each process used (% of one core) during the victim's window.

Exit status: 0 when the run completed (whatever the figures and verdicts), 1 when a server
failed, the victim got any error, a flooder got an answer other than 200 or 429 (or a 429
without limits), or the time budget ran out. Linux only (CPU from /proc). Needs the standard
library and httpx.
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
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench_overhead import (
    CHAT_PATH,
    LITELLM_BIN,
    MESSAGES,
    WEBUI_SECRET,
    WORKLOADS,
    Answer,
    RawPath,
    Stack,
    Workload,
    check_alive,
    drive,
    machine_busy_seconds,
    percentile,
    running_stack,
)
from bench_processes import BenchError, Child, free_port, session_token

REDIS_BIN = Path(os.environ.get("REDIS_SERVER", "/usr/bin/redis-server"))
VICTIM = "bench-victim"
UNHELD = "in-process, no holds"  # REFUSAL_HOLD_SECONDS=0: every 429 answered at once
FLOODERS = {"limited": "bench-flood-limited", "rpm": "bench-flood-rpm", "open": "bench-flood-open"}
FLOODER_OF = {"impolite": "limited", "polite": "limited", "rpm": "rpm", "open": "open"}  # phase -> flooder
MODELS = {"instant": ("bench-model", "bench-stream"), "realistic": ("bench-latency", "bench-latency")}  # chat, stream
STOP_WAIT_SECONDS = 0.5  # at a phase's end, flood requests still running after this are cancelled
POLITE_PAUSE_SECONDS = 1.0  # the Retry-After of a concurrency refusal
CLIENT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, httpx.HTTPError, ValueError)
PROBLEM = re.compile(r"HTTP (\d{3}): (.*)", re.DOTALL)
ERROR_CODE = re.compile(r'"code":\s*"([a-z_]+)"')
RAMP_SECONDS = 0.5  # the flood runs this long before the victim's window opens
DRAIN_SECONDS = 0.3  # quiet between phases


def policy(args: argparse.Namespace) -> dict[str, Any]:
    """The BFF's policy for this run: chat on the mini tier, no budgets, limits per user."""
    return {
        "tiers": ["mini", "standard", "advanced", "premium"],
        "roles": {"user": {"permissions": ["chat"], "models": {"tiers": ["mini"], "include": [], "exclude": []}}},
        "budgets": {"alerts": [], "roles": {"user": {}, "admin": {}}, "users": {}},
        "limits": {
            "roles": {"user": {}, "admin": {}},
            "users": {
                VICTIM: {"requests_per_minute": 1_000_000, "tokens_per_minute": 10**9, "concurrent_requests": 8},
                FLOODERS["limited"]: {
                    "requests_per_minute": 1_000_000, "tokens_per_minute": 10**9,
                    "concurrent_requests": args.flood_concurrent,
                },
                FLOODERS["rpm"]: {"requests_per_minute": args.flood_rpm, "concurrent_requests": 8},
                FLOODERS["open"]: {},
            },
        },
    }


def static_users() -> dict[str, Any]:
    ids = [VICTIM, *FLOODERS.values()]
    return {"users": [{"id": i, "email": f"{i}@localhost", "name": i, "role": "user", "groups": []} for i in ids]}


@contextlib.contextmanager
def running_redis(work_dir: Path) -> Iterator[tuple[str, Child]]:
    """Debian's redis-server on a free loopback port, no persistence; stopped on the way out."""
    port = free_port()
    child = Child(
        "redis",
        [str(REDIS_BIN), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(work_dir)],
        {},
        work_dir,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if not child.alive():
                raise BenchError(f"redis-server exited:\n{child.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"redis-server not ready within 15 s:\n{child.log_tail()}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0", child
    finally:
        child.stop()


# --------------------------------------------------------------------------- one phase


@dataclass
class Flood:
    """What a flooder got during one phase."""

    answered: Counter[str] = field(default_factory=Counter)  # "request" / "stream" -> 200s
    refused: Counter[str] = field(default_factory=Counter)  # "429 <code>" -> count
    unexpected: list[str] = field(default_factory=list)
    intervals: list[tuple[float, float]] = field(default_factory=list)  # answered: (sent, done)
    seconds: float = 0.0

    def max_in_flight(self) -> int:
        events = sorted([(start, 1) for start, _ in self.intervals] + [(end, -1) for _, end in self.intervals])
        level = peak = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        return peak


@dataclass
class PhaseRun:
    phase: str
    round: int
    latencies_ms: list[float]
    victim_errors: list[str]
    window_s: float
    cpu_s: dict[str, float]
    flood: Flood | None


def classify(problem: str) -> tuple[int, str]:
    """(status, error code) of a failed answer, from bench_overhead's problem text."""
    match = PROBLEM.match(problem)
    if match is None:
        return 0, problem.split(":")[0]  # a client-side exception
    status, body = int(match.group(1)), match.group(2)
    code = ERROR_CODE.search(body)
    if code:
        return status, code.group(1)
    if "in flight" in body:
        return status, "concurrency_limit_exceeded"
    return status, "per minute" if "per minute" in body else "?"


async def flood_worker(client: RawPath, kind: str, flood: Flood, stop: asyncio.Event, pause: float,
                       limited: bool) -> None:
    while not stop.is_set():
        sent = time.perf_counter()
        try:
            answer = await client.send()
        except CLIENT_ERRORS as exc:
            answer = Answer(f"{type(exc).__name__}: {exc}")
        if answer.problem is None:
            flood.answered[kind] += 1
            flood.intervals.append((sent, time.perf_counter()))
            continue
        status, code = classify(answer.problem)
        flood.refused[f"{status} {code}"] += 1
        if status != 429 or not limited:
            flood.unexpected.append(f"{kind}: {answer.problem[:200]}")
        await asyncio.sleep(pause)


class Bench:
    """One running set of servers (with or without Redis) and the clients for it."""

    def __init__(self, stack: Stack, redis: Child | None, args: argparse.Namespace, deadline: float, latency: str):
        self.stack, self.args, self.deadline, self.latency = stack, args, deadline, latency
        self.redis = [redis] if redis is not None else []  # the stack's redis-server, if it has one
        self.children = {**stack.children(), **({"redis": redis} if redis is not None else {})}
        self.victim_workers = args.victim_workers if latency == "instant" else args.realistic_victim_workers
        chat_model, stream_model = MODELS[latency]
        chat = WORKLOADS["chat"]
        if chat_model != "bench-model":
            chat = Workload("chat", CHAT_PATH, json.dumps({"model": chat_model, "messages": MESSAGES}).encode(),
                            False, chat.marker)
        stream = Workload(
            "stream", CHAT_PATH,
            json.dumps({"model": stream_model, "messages": MESSAGES, "stream": True,
                        "stream_options": {"include_usage": True}}).encode(),
            True, b"data: [DONE]",
        )
        url = stack.bff_url
        self.victim = RawPath(url, session_token(VICTIM, WEBUI_SECRET), self.victim_workers, chat)
        self.flooders = {
            phase: (RawPath(url, session_token(user, WEBUI_SECRET), args.flood_requests, chat),
                    RawPath(url, session_token(user, WEBUI_SECRET), args.flood_streams, stream))
            for phase, user in FLOODERS.items()
        }

    async def warm_up(self) -> None:
        """Opens connections, fills the BFF's catalog and caches; errors here mean the setup is broken."""
        realistic = self.latency == "realistic"
        runs = [("victim", self.victim, 40 if realistic else 300, self.victim_workers)]
        requests, streams = self.flooders["limited"]
        runs += [("flooder", requests, 16 if realistic else 100, 4), ("flooder stream", streams, 4 if realistic else 20, 4)]
        for name, client, total, concurrency in runs:
            warm = await drive("chat", name, client, total, concurrency, self.stack, 0, self.deadline)
            if warm.errors:
                raise BenchError(f"warm-up of the {name} failed: {warm.error_samples}")

    def cpu_now(self) -> dict[str, float]:
        return {name: child.cpu_seconds() for name, child in self.children.items()}

    async def phase(self, phase: str, round_no: int) -> PhaseRun:
        args = self.args
        stop = asyncio.Event()
        flood: Flood | None = None
        tasks: list[asyncio.Task[None]] = []
        latencies: list[float] = []
        victim_errors: list[str] = []
        await self.victim.prepare(self.victim_workers)
        try:
            async with asyncio.timeout(max(self.deadline - time.monotonic(), 0.001)):
                flood_began = time.perf_counter()
                if phase != "baseline":
                    flood = Flood()
                    requests, streams = self.flooders[FLOODER_OF[phase]]
                    await requests.prepare(args.flood_requests)
                    await streams.prepare(args.flood_streams)
                    pause = POLITE_PAUSE_SECONDS if phase == "polite" else args.refused_pause_ms / 1000
                    limited = phase != "open"
                    flood_began = time.perf_counter()
                    # A worker re-sends at once after its answer, so the kind that starts first keeps
                    # the slots in flight: streams first in odd rounds, requests first in even ones.
                    kinds = [(requests, "request", args.flood_requests), (streams, "stream", args.flood_streams)]
                    for client, kind, workers in kinds[::-1] if round_no % 2 else kinds:
                        tasks += [asyncio.create_task(flood_worker(client, kind, flood, stop, pause, limited))
                                  for _ in range(workers)]
                        await asyncio.sleep(RAMP_SECONDS / 2)

                window_ends = time.perf_counter() + args.phase_seconds

                async def victim_worker() -> None:
                    while time.perf_counter() < window_ends:
                        sent = time.perf_counter()
                        try:
                            answer = await self.victim.send()
                        except CLIENT_ERRORS as exc:
                            answer = Answer(f"{type(exc).__name__}: {exc}")
                        if answer.problem is None:
                            latencies.append((time.perf_counter() - sent) * 1000)
                        else:
                            victim_errors.append(answer.problem[:200])
                        await asyncio.sleep(args.victim_pause_ms / 1000)

                cpu_before, loadgen_before, machine_before = self.cpu_now(), time.process_time(), machine_busy_seconds()
                opened = time.perf_counter()
                await asyncio.gather(*(victim_worker() for _ in range(self.victim_workers)))
                window = time.perf_counter() - opened
                cpu = {name: value - cpu_before[name] for name, value in self.cpu_now().items()}
                cpu["loadgen"] = time.process_time() - loadgen_before
                cpu["other"] = max(machine_busy_seconds() - machine_before - sum(cpu.values()), 0.0)

                stop.set()
                if tasks:  # streams of the realistic provider run for seconds: the rest are cancelled
                    await asyncio.wait(tasks, timeout=STOP_WAIT_SECONDS)
                if flood is not None:
                    flood.seconds = time.perf_counter() - flood_began
        except TimeoutError:
            raise BenchError(f"time budget exhausted (--max-seconds) in round {round_no}, phase {phase}") from None
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:  # cancelled mid-answer: their connections are not reusable
            requests, streams = self.flooders[FLOODER_OF[phase]]
            await requests.aclose()
            await streams.aclose()
        await asyncio.sleep(DRAIN_SECONDS)
        return PhaseRun(phase, round_no, latencies, victim_errors, window, cpu, flood)

    async def close(self) -> None:
        await self.victim.aclose()
        for requests, streams in self.flooders.values():
            await requests.aclose()
            await streams.aclose()


def phases(args: argparse.Namespace) -> list[str]:
    return ["baseline", "polite", "impolite", *(["rpm"] if args.rpm else []), *(["open"] if args.open else [])]


async def measure(benches: dict[tuple[str, str], Bench], args: argparse.Namespace) -> dict[tuple[str, str], list[PhaseRun]]:
    """Every round: each latency mode, each stack (order alternating), every phase (order rotated)."""
    runs: dict[tuple[str, str], list[PhaseRun]] = {key: [] for key in benches}
    order = phases(args)
    try:
        for bench in benches.values():
            await bench.warm_up()
        for round_no in range(1, args.rounds + 1):
            keys = list(benches)
            if round_no % 2 == 0:
                keys.reverse()
            shift = (round_no - 1) % len(order)
            for key in keys:
                bench = benches[key]
                for phase in order[shift:] + order[:shift]:
                    run = await bench.phase(phase, round_no)
                    # stop at once: later rounds of a dead stack would measure nothing
                    check_alive(bench.stack, f"in [{key[0]}] round {round_no} ({phase})", *bench.redis)
                    runs[key].append(run)
                    flood = run.flood
                    extra = ""
                    if flood is not None:
                        extra = (f"  flood answered {sum(flood.answered.values()):>5} refused "
                                 f"{sum(flood.refused.values()):>6}")
                    print(f"[{key[0]}, {key[1]}] round {round_no} {phase:<8} victim {len(run.latencies_ms):>5} req  "
                          f"p50 {percentile(sorted(run.latencies_ms), 50):7.2f} ms  "
                          f"p95 {percentile(sorted(run.latencies_ms), 95):7.2f} ms{extra}", flush=True)
    finally:
        for bench in benches.values():
            await bench.close()
    return runs


# --------------------------------------------------------------------------- report


def ratio(value: float, base: float) -> float:
    return value / base if base else math.nan


def report(label: str, runs: list[PhaseRun], args: argparse.Namespace) -> dict[str, Any]:
    by_phase: dict[str, list[PhaseRun]] = {}
    for run in runs:
        by_phase.setdefault(run.phase, []).append(run)
    figures: dict[str, Any] = {}
    for phase, group in by_phase.items():
        pooled = sorted(x for r in group for x in r.latencies_ms)
        window = sum(r.window_s for r in group)
        cpu = {name: sum(r.cpu_s[name] for r in group) for name in group[0].cpu_s}
        fig: dict[str, Any] = {
            "victim_requests": len(pooled),
            "victim_errors": sum(len(r.victim_errors) for r in group),
            "victim_error_samples": sorted({e for r in group for e in r.victim_errors})[:3],
            "victim_rps": len(pooled) / window if window else math.nan,
            **{f"p{q}_ms": percentile(pooled, q) for q in (50, 95, 99)},
            "per_round_p50_ms": [percentile(sorted(r.latencies_ms), 50) for r in group],
            "per_round_p95_ms": [percentile(sorted(r.latencies_ms), 95) for r in group],
            "cpu_percent_of_one_core": {name: 100 * value / window for name, value in cpu.items()},
            "bff_cpu_ms_per_victim_request": 1000 * cpu["bff"] / len(pooled) if pooled else math.nan,
        }
        floods = [r.flood for r in group if r.flood is not None]
        if floods:
            seconds = sum(f.seconds for f in floods)
            answered: Counter[str] = sum((f.answered for f in floods), Counter())
            refused: Counter[str] = sum((f.refused for f in floods), Counter())
            fig["flood"] = {
                "seconds": seconds,
                "answered": dict(answered),
                "refused": dict(refused),
                "answered_per_s": sum(answered.values()) / seconds,
                "refused_per_s": sum(refused.values()) / seconds,
                "max_in_flight": max(f.max_in_flight() for f in floods),
                "unexpected": sum(len(f.unexpected) for f in floods),
                "unexpected_samples": sorted({s for f in floods for s in f.unexpected})[:3],
            }
        figures[phase] = fig

    base = figures["baseline"]
    names = {"baseline": "baseline (victim alone)", "impolite": f"impolite, {args.flood_concurrent} in flight",
             "polite": f"polite, {args.flood_concurrent} in flight", "rpm": f"impolite, {args.flood_rpm} req/min",
             "open": "impolite, no limits"}
    workers = args.victim_workers if "instant" in label else args.realistic_victim_workers
    print(f"\n[{label}] victim: non-streaming chat, {workers} workers closed loop with "
          f"{args.victim_pause_ms:g} ms pause; all its requests of each phase pooled over {args.rounds} rounds")
    print(f"  {'phase':<26}{'requests':>9}{'req/s':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'x p50':>7}{'x p95':>7}{'x p99':>7}   per-round p50 ms")
    for phase, fig in figures.items():
        print(f"  {names[phase]:<26}{fig['victim_requests']:>9}{fig['victim_rps']:>7.0f}{fig['p50_ms']:>9.2f}"
              f"{fig['p95_ms']:>9.2f}{fig['p99_ms']:>9.2f}{ratio(fig['p50_ms'], base['p50_ms']):>7.2f}"
              f"{ratio(fig['p95_ms'], base['p95_ms']):>7.2f}{ratio(fig['p99_ms'], base['p99_ms']):>7.2f}   "
              + ", ".join(f"{v:.2f}" for v in fig["per_round_p50_ms"]))
    p50s, p95s = base["per_round_p50_ms"], base["per_round_p95_ms"]
    noise_p50 = max(p50s) / min(p50s) if min(p50s) else math.nan
    noise_p95 = max(p95s) / min(p95s) if min(p95s) else math.nan
    print(f"  noise: the baseline alone varies {min(p50s):.2f}-{max(p50s):.2f} ms p50 (x{noise_p50:.2f}) and "
          f"{min(p95s):.2f}-{max(p95s):.2f} ms p95 (x{noise_p95:.2f}) between rounds")
    base["noise_p50_ratio"], base["noise_p95_ratio"] = noise_p50, noise_p95
    for phase, fig in figures.items():
        if phase in ("baseline", "open"):
            continue
        fig["p50_ratio"] = ratio(fig["p50_ms"], base["p50_ms"])
        fig["verdict"] = "PASS" if fig["p50_ratio"] <= noise_p50 else "MISS"
        print(f"  {fig['verdict']}: {names[phase]}: victim p50 x{fig['p50_ratio']:.2f} of the baseline's, "
              f"{'within' if fig['verdict'] == 'PASS' else 'beyond'} its noise x{noise_p50:.2f}")

    print(f"\n[{label}] flooder: {args.flood_requests} concurrent requests + {args.flood_streams} concurrent streams, "
          f"after a 429 a pause of {args.refused_pause_ms:g} ms (impolite) or 1 s (polite)")
    print(f"  {'phase':<26}{'answered':>9}{'(req':>7}{'stream)':>8}{'ans/s':>7}{'refused':>9}{'ref/s':>7}"
          f"{'max in flight':>14}{'BFF ms/answer':>14}   refusals by status and code")
    for phase, fig in figures.items():
        if "flood" not in fig:
            continue
        f = fig["flood"]
        total = sum(f["answered"].values())
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(f["refused"].items())) or "none"
        # the BFF's CPU per second less the victim's share (at its baseline cost), per flood answer (200 or 429)
        flood_ms = 10 * fig["cpu_percent_of_one_core"]["bff"] - fig["victim_rps"] * base["bff_cpu_ms_per_victim_request"]
        f["bff_cpu_ms_per_flood_answer"] = max(flood_ms, 0.0) / (f["answered_per_s"] + f["refused_per_s"])
        print(f"  {names[phase]:<26}{total:>9}{f['answered'].get('request', 0):>7}{f['answered'].get('stream', 0):>8}"
              f"{f['answered_per_s']:>7.0f}{sum(f['refused'].values()):>9}{f['refused_per_s']:>7.0f}"
              f"{f['max_in_flight']:>14}{f['bff_cpu_ms_per_flood_answer']:>14.3f}   {codes}")
    print("  (max in flight: the most answered flood requests whose client-side send..done overlapped, an upper "
          "bound of what the BFF admitted;\n   BFF ms/answer: its CPU less the victim's share at the baseline's cost, "
          "per flood answer, 200 or 429)")

    cpu_names = list(base["cpu_percent_of_one_core"])
    print(f"\n[{label}] CPU during the victim's window, % of one core ({os.cpu_count()} cores; "
          "'other' is the rest of the machine)")
    print(f"  {'phase':<26}" + "".join(f"{n:>10}" for n in cpu_names))
    for phase, fig in figures.items():
        print(f"  {names[phase]:<26}" + "".join(f"{fig['cpu_percent_of_one_core'][n]:>10.0f}" for n in cpu_names))
    print(f"  BFF CPU per victim request in the baseline: {base['bff_cpu_ms_per_victim_request']:.3f} ms")
    return figures


def problems(figures: dict[str, Any]) -> list[str]:
    found = []
    for phase, fig in figures.items():
        if fig["victim_errors"]:
            found.append(f"{phase}: the victim got {fig['victim_errors']} errors, e.g. {fig['victim_error_samples']}")
        if fig.get("flood", {}).get("unexpected"):
            found.append(f"{phase}: the flooder got {fig['flood']['unexpected']} unexpected answers, "
                         f"e.g. {fig['flood']['unexpected_samples']}")
    return found


def run(args: argparse.Namespace, work_dir: Path, began: float, deadline: float) -> dict[str, Any]:
    (work_dir / "policy.flood.yaml").write_text(json.dumps(policy(args), indent=2))  # JSON is valid YAML
    (work_dir / "users.flood.yaml").write_text(json.dumps(static_users(), indent=2))
    bff_env = {"POLICY_FILE": str(work_dir / "policy.flood.yaml"), "STATIC_ROLES_FILE": str(work_dir / "users.flood.yaml")}
    if args.bff_source:
        bff_env["PYTHONPATH"] = str(args.bff_source.resolve())
    latencies = ["instant", "realistic"] if args.latency == "both" else [args.latency]
    print("Latency modes: " + "; ".join(
        {"instant": "instant (bench-model answers at once, bench-stream: 10 deltas 10 ms apart)",
         "realistic": "realistic (bench-latency: 300-800 ms answers, ~3 s streams)"}[mode] for mode in latencies),
        flush=True)
    variants = ["in-process", *(["Redis"] if args.redis else []), *([UNHELD] if args.unheld else [])]
    with contextlib.ExitStack() as servers:
        stacks: dict[str, tuple[Stack, Child | None]] = {}
        for variant in variants:
            env, redis = dict(bff_env), None
            sub = work_dir / re.sub(r"[^a-z]+", "-", variant.lower())
            sub.mkdir()
            if variant == UNHELD:
                env["REFUSAL_HOLD_SECONDS"] = "0"
            if variant == "Redis":
                url, redis = servers.enter_context(running_redis(sub))
                env["REDIS_URL"] = url
            stack = servers.enter_context(running_stack(sub, bff_env=env))
            stacks[variant] = (stack, redis)
            print(f"[{variant}] servers up at {time.monotonic() - began:.0f} s: BFF {stack.bff_url}"
                  + (f", REDIS_URL {env['REDIS_URL']}" if redis else ""), flush=True)
        benches = {(variant, latency): Bench(stack, redis, args, deadline, latency)
                   for latency in latencies for variant, (stack, redis) in stacks.items()}

        async def measured() -> dict[tuple[str, str], list[PhaseRun]]:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                return await measure(benches, args)

        try:
            runs = asyncio.run(measured())
        except TimeoutError:
            raise BenchError("time budget exhausted (--max-seconds)") from None
        except (OSError, BenchError):
            for bench in benches.values():
                check_alive(bench.stack, "during the run", *bench.redis)
            raise
        for bench in benches.values():
            check_alive(bench.stack, "during the run", *bench.redis)
    out: dict[str, Any] = {}
    for (variant, latency), group in runs.items():
        out[f"{variant}, {latency}"] = report(f"{variant}, {latency}", group, args)
    print("\nSummary: victim p50 ratio to the baseline per phase, and the baseline's own noise (max/min of its per-round p50)")
    order = [phase for phase in phases(args) if phase != "baseline"]
    print(f"  {'stack, latency':<34}{'noise':>8}" + "".join(f"{phase:>16}" for phase in order))
    for label, figures in out.items():
        cells = []
        for phase in order:
            fig = figures.get(phase, {})
            ratio_p50 = ratio(fig.get("p50_ms", math.nan), figures["baseline"]["p50_ms"])
            cells.append(f"x{ratio_p50:.2f} {fig.get('verdict', '(shown)'):<7}".rjust(16))
        print(f"  {label:<34}{'x' + format(figures['baseline']['noise_p50_ratio'], '.2f'):>8}" + "".join(cells))
    return out


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of 2 s phases, no --rpm or --open (about 2 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds, every phase once per round (4; --quick 2)")
    parser.add_argument("--phase-seconds", type=float, help="the victim's window per phase (6; --quick 2)")
    parser.add_argument("--latency", choices=["instant", "realistic", "both"], default="both",
                        help="the fake provider's answer time (both: each round runs both)")
    parser.add_argument("--victim-workers", type=int, default=2, help="the victim's closed-loop workers, instant (2)")
    parser.add_argument("--realistic-victim-workers", type=int, default=6,
                        help="the victim's closed-loop workers, realistic (6: under its 8 in flight, as a slot is freed just after the answer is sent)")
    parser.add_argument("--victim-pause-ms", type=float, default=10, help="each victim worker's pause between requests (10)")
    parser.add_argument("--flood-requests", type=int, default=96, help="the flooder's concurrent non-streaming requests (96)")
    parser.add_argument("--flood-streams", type=int, default=32, help="the flooder's concurrent streams (32)")
    parser.add_argument("--flood-concurrent", type=int, default=8, help="bench-flood-limited's concurrent_requests (8)")
    parser.add_argument("--flood-rpm", type=int, default=120, help="bench-flood-rpm's requests_per_minute (120)")
    parser.add_argument("--refused-pause-ms", type=float, default=20, help="a flood worker's pause after a 429 (20)")
    parser.add_argument("--rpm", action=argparse.BooleanOptionalAction, default=None,
                        help="also flood from a user over its requests per minute (default: yes, with --quick no)")
    parser.add_argument("--open", action=argparse.BooleanOptionalAction, default=None,
                        help="also flood from a user without limits (default: yes, with --quick no)")
    parser.add_argument("--redis", action=argparse.BooleanOptionalAction, default=True,
                        help="also a stack with REDIS_URL on a loopback redis-server, side by side (default: yes)")
    parser.add_argument("--unheld", action=argparse.BooleanOptionalAction, default=True,
                        help="also an in-process stack that answers early retries at once "
                             "(REFUSAL_HOLD_SECONDS=0): what holding them buys (default: yes)")
    parser.add_argument("--bff-source", type=Path,
                        help="run the BFF from this directory's bff package (another checkout's backend/)")
    parser.add_argument("--max-seconds", type=float, default=1500, help="give up after this long (1500)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.phase_seconds = args.phase_seconds or (2.0 if args.quick else 6.0)
    args.open = (not args.quick) if args.open is None else args.open
    args.rpm = (not args.quick) if args.rpm is None else args.rpm
    if min(args.rounds, args.victim_workers, args.realistic_victim_workers, args.flood_requests, args.flood_streams, args.flood_concurrent,
           args.flood_rpm) < 1 or args.phase_seconds <= 0:
        parser.error("counts, --rounds and --phase-seconds must be positive")
    if not LITELLM_BIN.exists():
        print(f"FAILED: no LiteLLM at {LITELLM_BIN} (set LITELLM_BIN)", file=sys.stderr)
        return 1
    if args.redis and not REDIS_BIN.exists():
        print(f"FAILED: no redis-server at {REDIS_BIN} (set REDIS_SERVER, or --no-redis)", file=sys.stderr)
        return 1

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.monotonic()
    deadline = began + args.max_seconds
    try:
        with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
            out = run(args, Path(tmp), began, deadline)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 1
    print(f"\nTotal run time {time.monotonic() - began:.1f} s (including server start-up and shutdown)")
    if args.json:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
        args.json.write_text(json.dumps({"settings": settings, "variants": out}, indent=2, default=float))
        print(f"figures written to {args.json}")
    found = [f"[{variant}] {p}" for variant, figures in out.items() for p in problems(figures)]
    if found:
        print("\nFAILED: unexpected answers:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
