#!/usr/bin/env python3
"""Shows whether one user's flood slows another user's requests: per-user rate limits under load.

    .venv/bin/python scripts/bench_flood.py [--quick] [--rounds 5] [--phase-seconds 8]
        [--victim-workers 2] [--victim-pause-ms 10] [--flood-requests 96] [--flood-streams 32]
        [--flood-concurrent 8] [--flood-rpm 120] [--refused-pause-ms 20]
        [--open | --no-open] [--redis | --no-redis] [--max-seconds 900] [--json PATH]

Not a test (CI never runs it); loopback only; stops by itself. The full run takes ~10 minutes
on 2 cores, `--quick` (2 rounds of 3 s phases, no `open` phase) ~2. It reuses scripts/bench_overhead.py's servers and load generator:

    fake provider   tests/support/fake_openai.py: answers AT ONCE (bench-model) or streams
                    10 deltas 10 ms apart (bench-stream), so every admitted request costs
                    LiteLLM and the BFF their full CPU with no provider time to hide it
    LiteLLM         .venv-litellm/bin/litellm
    BFF             `python -m bff` with a policy and static users this script writes into a
                    temporary directory (not config/): no budgets, and per user

        bench-victim          8 in flight, 1,000,000 requests and 10^9 tokens a minute (so its
                              limit checks run, but never refuse it)
        bench-flood-limited   --flood-concurrent in flight (8), 1,000,000 requests a minute
        bench-flood-rpm       8 in flight, --flood-rpm requests a minute (120): soon all refused
        bench-flood-open      no limits at all

The victim sends non-streaming chat in a closed loop of --victim-workers, each pausing
--victim-pause-ms between requests (a steady, modest rate). Each round runs these phases,
in an order rotated every round so machine noise (and the minute windows) hit all alike:

    baseline   the victim alone
    limited    the victim while bench-flood-limited floods: --flood-requests concurrent
               non-streaming requests and --flood-streams concurrent streams, each worker
               sending again at once after an answer and --refused-pause-ms after a 429
               (it ignores Retry-After; the pause only keeps this process's CPU modest)
    polite     the same flood from bench-flood-limited, but its workers wait 1 s after a 429
               (the Retry-After of a concurrency refusal), as an SDK that honours it does
    rpm        the same flood from bench-flood-rpm (its minute's quota is soon used up)
    open       the same flood from bench-flood-open: what the limits buy (--no-open skips)

Per phase it prints the victim's p50/p95/p99 (all its requests of that phase, pooled over the
rounds) and their ratio to the baseline, the baseline's round-to-round spread (the noise), the
flooder's answered and refused counts by status and error code, the most flood requests seen
in flight at once (client side: an upper bound of what the BFF admitted), the BFF's CPU per
flood answer (200 or 429; its CPU less the victim's share at the baseline's cost), and the CPU each
process used (% of one core) during the victim's window, with the BFF's CPU per victim request
in the baseline. With --redis (the default) the whole run is repeated against a BFF whose
REDIS_URL points at a Debian redis-server started on a free loopback port (`--save ''`), so
the counters' Redis round trips are in the picture.

Exit status: 0 when the run completed (whatever the figures), 1 when a server failed, the
victim got any error, a flooder got an answer other than 200 or 429 (or a 429 without limits),
or the time budget ran out. Linux only (CPU from /proc). Needs the standard library and httpx.
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
FLOODERS = {"limited": "bench-flood-limited", "rpm": "bench-flood-rpm", "open": "bench-flood-open"}
FLOODER_OF = {"limited": "limited", "polite": "limited", "rpm": "rpm", "open": "open"}  # phase -> flooder
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

    def __init__(self, stack: Stack, redis: Child | None, args: argparse.Namespace, deadline: float):
        self.stack, self.args, self.deadline = stack, args, deadline
        self.children = {**stack.children(), **({"redis": redis} if redis is not None else {})}
        chat = WORKLOADS["chat"]
        stream = Workload(
            "stream", CHAT_PATH,
            json.dumps({"model": "bench-stream", "messages": MESSAGES, "stream": True,
                        "stream_options": {"include_usage": True}}).encode(),
            True, b"data: [DONE]",
        )
        url = stack.bff_url
        self.victim = RawPath(url, session_token(VICTIM, WEBUI_SECRET), args.victim_workers, chat)
        self.flooders = {
            phase: (RawPath(url, session_token(user, WEBUI_SECRET), args.flood_requests, chat),
                    RawPath(url, session_token(user, WEBUI_SECRET), args.flood_streams, stream))
            for phase, user in FLOODERS.items()
        }

    async def warm_up(self) -> None:
        """Opens connections, fills the BFF's catalog and caches; errors here mean the setup is broken."""
        runs = [("victim", self.victim, 300, self.args.victim_workers)]
        requests, streams = self.flooders["limited"]
        runs += [("flooder", requests, 100, 4), ("flooder stream", streams, 20, 4)]
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
        await self.victim.prepare(args.victim_workers)
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
                    tasks = [asyncio.create_task(flood_worker(requests, "request", flood, stop, pause, limited))
                             for _ in range(args.flood_requests)]
                    tasks += [asyncio.create_task(flood_worker(streams, "stream", flood, stop, pause, limited))
                              for _ in range(args.flood_streams)]
                    await asyncio.sleep(RAMP_SECONDS)

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
                await asyncio.gather(*(victim_worker() for _ in range(args.victim_workers)))
                window = time.perf_counter() - opened
                cpu = {name: value - cpu_before[name] for name, value in self.cpu_now().items()}
                cpu["loadgen"] = time.process_time() - loadgen_before
                cpu["other"] = max(machine_busy_seconds() - machine_before - sum(cpu.values()), 0.0)

                stop.set()
                if tasks:
                    await asyncio.gather(*tasks)
                if flood is not None:
                    flood.seconds = time.perf_counter() - flood_began
        except TimeoutError:
            raise BenchError(f"time budget exhausted (--max-seconds) in round {round_no}, phase {phase}") from None
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
        await asyncio.sleep(DRAIN_SECONDS)
        return PhaseRun(phase, round_no, latencies, victim_errors, window, cpu, flood)

    async def close(self) -> None:
        await self.victim.aclose()
        for requests, streams in self.flooders.values():
            await requests.aclose()
            await streams.aclose()


async def measure(stack: Stack, redis: Child | None, args: argparse.Namespace, deadline: float,
                  label: str) -> list[PhaseRun]:
    bench = Bench(stack, redis, args, deadline)
    phases = ["baseline", "limited", "polite", "rpm", *(["open"] if args.open else [])]
    runs: list[PhaseRun] = []
    try:
        await bench.warm_up()
        for round_no in range(1, args.rounds + 1):
            shift = (round_no - 1) % len(phases)
            for phase in phases[shift:] + phases[:shift]:
                run = await bench.phase(phase, round_no)
                runs.append(run)
                flood = run.flood
                extra = ""
                if flood is not None:
                    extra = (f"  flood answered {sum(flood.answered.values()):>5} refused "
                             f"{sum(flood.refused.values()):>6}")
                print(f"[{label}] round {round_no} {phase:<8} victim {len(run.latencies_ms):>5} req  "
                      f"p50 {percentile(sorted(run.latencies_ms), 50):6.2f} ms  "
                      f"p95 {percentile(sorted(run.latencies_ms), 95):6.2f} ms{extra}", flush=True)
    finally:
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
    names = {"baseline": "baseline (victim alone)", "limited": f"flood, {args.flood_concurrent} in flight",
             "polite": f"polite flood, {args.flood_concurrent} in fl.", "rpm": f"flood, {args.flood_rpm} req/min",
             "open": "flood, no limits"}
    print(f"\n[{label}] victim: non-streaming chat, {args.victim_workers} workers closed loop with "
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

    print(f"\n[{label}] flooder: {args.flood_requests} concurrent requests + {args.flood_streams} concurrent streams "
          f"(bench-stream, ~100 ms each), {args.refused_pause_ms:g} ms pause after a 429")
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
              f"{f['max_in_flight']:>14}{f['bff_cpu_ms_per_flood_answer']:>14.2f}   {codes}")
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
    print("The fake provider answers at once (bench-model) and streams 10 deltas 10 ms apart (bench-stream): every "
          "admitted flood request costs LiteLLM and the BFF their whole CPU, with no provider time to hide it.",
          flush=True)
    out: dict[str, Any] = {}
    variants = ["in-process counters", *(["Redis counters"] if args.redis else [])]
    for variant in variants:
        with contextlib.ExitStack() as servers:
            env, redis = dict(bff_env), None
            sub = work_dir / ("redis" if variant.startswith("Redis") else "memory")
            sub.mkdir()
            if variant.startswith("Redis"):
                url, redis = servers.enter_context(running_redis(sub))
                env["REDIS_URL"] = url
            stack = servers.enter_context(running_stack(sub, bff_env=env))
            print(f"\n[{variant}] servers up at {time.monotonic() - began:.0f} s: BFF {stack.bff_url}"
                  + (f", REDIS_URL {env['REDIS_URL']}" if redis else ""), flush=True)
            try:
                runs = asyncio.run(measure(stack, redis, args, deadline, variant))
            except (OSError, BenchError):
                check_alive(stack)
                raise
            check_alive(stack)
            if redis is not None and not redis.alive():
                raise BenchError(f"redis-server died during the run:\n{redis.log_tail()}")
            out[variant] = report(variant, runs, args)
    return out


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s phases, no --open (~2 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds, every phase once per round (5; --quick 2)")
    parser.add_argument("--phase-seconds", type=float, help="the victim's window per phase (8; --quick 3)")
    parser.add_argument("--victim-workers", type=int, default=2, help="the victim's closed-loop workers (2)")
    parser.add_argument("--victim-pause-ms", type=float, default=10, help="each victim worker's pause between requests (10)")
    parser.add_argument("--flood-requests", type=int, default=96, help="the flooder's concurrent non-streaming requests (96)")
    parser.add_argument("--flood-streams", type=int, default=32, help="the flooder's concurrent streams (32)")
    parser.add_argument("--flood-concurrent", type=int, default=8, help="bench-flood-limited's concurrent_requests (8)")
    parser.add_argument("--flood-rpm", type=int, default=120, help="bench-flood-rpm's requests_per_minute (120)")
    parser.add_argument("--refused-pause-ms", type=float, default=20, help="a flood worker's pause after a 429 (20)")
    parser.add_argument("--open", action=argparse.BooleanOptionalAction, default=None,
                        help="also flood from a user without limits (default: yes, with --quick no)")
    parser.add_argument("--redis", action=argparse.BooleanOptionalAction, default=True,
                        help="repeat the run with REDIS_URL on a loopback redis-server (default: yes)")
    parser.add_argument("--max-seconds", type=float, default=900, help="give up after this long (900)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.phase_seconds = args.phase_seconds or (3.0 if args.quick else 8.0)
    args.open = (not args.quick) if args.open is None else args.open
    if min(args.rounds, args.victim_workers, args.flood_requests, args.flood_streams, args.flood_concurrent,
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
