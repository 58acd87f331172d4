#!/usr/bin/env python3
"""Measures usage-telemetry ingest, the usage API as the monitoring pages call it, and the daily
rollup against raw span scans, on the embedded store.

    .venv/bin/python scripts/bench_usage.py [--spans 10000000] [--users 1000] [--days 90]
        [--batch 100000] [--repeats 20] [--seed 7] [--skip-optimize] [--keep]
        [--api-repeats 5] [--store chdb:///tmp/bench_usage_... (kept by --keep: no ingest)]

It opens a fresh embedded ClickHouse (chdb:///tmp/bench_usage_*, removed at the end
unless --keep) through the BFF's own `ClickHouseStore`, so the schema is the real one
in config/clickhouse/, and then:

1. Ingest. Fills otel.otel_traces with --spans synthetic gateway spans spread over the
   --days x 24 h up to now (fewer on weekends and at night, slowly growing) from --users
   users (a few heavy, a long tail of light ones). Every row is what the BFF's span exporter
   writes: the row templates are real spans, built through `Call.span_attributes`,
   `Telemetry.finish` and `span_row`, and each row is a template with its own
   timestamp, trace/span/request ids, user, role and Open-WebUI chat id. Batches go
   in with `store.insert_columns(TRACES_TABLE, COLUMNS, columns)`, the exporter's own
   call, so the materialized views fill otel.gateway_requests and the daily rollup
   otel.gateway_usage_daily as they do in production. The mix: 8 model groups with
   different prices, ~3% errors (budget and provider 429s, refusals, 502/504),
   streams with time to first token, ~1% fallbacks, caller contexts, exact-decimal
   costs (LiteLLM's float text for non-streams, token x price for streams).
   Generating rows in Python and inserting them are timed apart: ingest rate =
   spans / insert time; the end-to-end rate includes generation.

2. Usage API. The real app (bff.app.create_app under uvicorn, in this process, on the same
   store) serves the calls monitoring.js load() makes for the 24 h / 7 d / 30 d / 90 d pages,
   as an admin (7 calls plus usage by user) and as the heaviest user on their own page (the
   API forces the user filter), authenticated as Open-WebUI's backend calls (service key and
   signed user JWT). Each page: one warm-up load, then --api-repeats rounds of every call on
   its own (per-call p50) and of the page's calls at once, as the browser's Promise.all
   (page load p50).

3. Queries. The 30-day cost by model group by day, answered from the rollup and from
   raw otel_traces map lookups, timed interleaved (rollup, raw, rollup, raw, ...) after
   one untimed warm-up each, as ingested (no waiting for merges). The window is the
   last 30 calendar days, today included: otel_traces keeps 30 days and its TTL drops
   whole parts, so the day 30 days back is already partly gone from it. Both answers
   must be equal row for row, sums included (Decimal(76, 30)); then, unless
   --skip-optimize, the same again after OPTIMIZE TABLE otel.gateway_usage_daily FINAL.

Targets: ingest >= 200,000 spans/s; every page call p50 < 100 ms and page load p50 < 300 ms;
rollup p50 < 100 ms; raw p50 / rollup p50 >= 10.
Exit status: 0 when the run completes and the answers match (targets PASS or MISS),
1 when the answers differ or the views lost rows. The default run (10M spans) takes
about 8.5 minutes on 2 shared cores (ingest ~5, the API phase ~1, the raw scans ~2),
~1.6 GiB of memory and ~2 GiB of disk under /tmp. Small runs (--spans 200000) understate the ingest rate: the first
insert carries one-time costs (clickhouse-connect's lazy pandas import, engine warm-up).
The BFF exports in batches of at most 4,096 spans (telemetry/tracing.py) and fewer under
light load; per-insert overhead dominates small batches: --batch 512 or 4096 shows those rates.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from jose import jwt
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.trace import SpanKind

from bff.app import create_app
from bff.clickhouse import ClickHouseStore
from bff.identity.principal import AuthMethod, Principal, Role
from bff.pipeline.call import Call
from bff.settings import Settings
from bff.telemetry import attributes as attr
from bff.telemetry.clickhouse_exporter import COLUMNS, TRACES_TABLE, span_row
from bff.telemetry.tracing import SCOPE, Telemetry

ROOT = Path(__file__).resolve().parent.parent
SERVICE_NAME: str = Settings.model_fields["otel_service_name"].default
SCOPE_VERSION = "0.1.0"  # the version Telemetry gives its tracer
ROLLUP_TABLE = "otel.gateway_usage_daily"
REQUESTS_TABLE = "otel.gateway_requests"
WINDOW_DAYS = 30
TEMPLATES_PER_PROFILE = 4096
CHATS_PER_USER = 64
ADMIN_SHARE = 0.03
PLACEHOLDER = "-"
NS_PER_DAY = 86_400 * 10**9

TARGET_INGEST_SPANS_PER_S = 200_000
TARGET_ROLLUP_P50_MS = 100.0
TARGET_CALL_P50_MS = 100.0
TARGET_PAGE_MS = 300.0
TARGET_RATIO = 10.0

# ---------------------------------------------------------------------------------------------
# The synthetic traffic


@dataclass(frozen=True)
class ModelGroup:
    name: str
    provider: str
    input_price: Decimal  # USD per token, as LiteLLM's /model/info gives it
    output_price: Decimal
    weight: float  # share of requests asking for it
    fallback: str  # the group LiteLLM falls back to
    input_median: int  # tokens
    output_median: int
    ms_per_output_token: float


MODELS = (
    ModelGroup("gpt-4o", "openai", Decimal("0.0000025"), Decimal("0.00001"), 0.22, "claude-sonnet-4", 1400, 380, 12.0),
    ModelGroup("gpt-4o-mini", "openai", Decimal("0.00000015"), Decimal("0.0000006"), 0.25, "gemini-2.5-flash", 1100, 320, 7.0),
    ModelGroup("o3-mini", "openai", Decimal("0.0000011"), Decimal("0.0000044"), 0.06, "gpt-4o", 900, 900, 9.0),
    ModelGroup("claude-sonnet-4", "anthropic", Decimal("0.000003"), Decimal("0.000015"), 0.15, "gpt-4o", 2200, 520, 14.0),
    ModelGroup("claude-haiku-3.5", "anthropic", Decimal("0.0000008"), Decimal("0.000004"), 0.08, "gpt-4o-mini", 1000, 300, 8.0),
    ModelGroup("gemini-2.5-pro", "gemini", Decimal("0.00000125"), Decimal("0.00001"), 0.07, "claude-sonnet-4", 2600, 700, 11.0),
    ModelGroup("gemini-2.5-flash", "gemini", Decimal("0.0000003"), Decimal("0.0000025"), 0.10, "gpt-4o-mini", 1200, 350, 5.0),
    ModelGroup("llama-3.1-8b", "ollama_chat", Decimal(0), Decimal(0), 0.07, "gpt-4o-mini", 800, 260, 25.0),
)
MODELS_BY_NAME = {model.name: model for model in MODELS}
DEPLOYMENTS = {
    model.name: [hashlib.sha256(f"{model.name}/{replica}".encode()).hexdigest() for replica in range(2)] for model in MODELS
}


@dataclass(frozen=True)
class Failure:
    status: int
    code: str
    share: float  # of all requests; none of them reaches a served model group


FAILURES = (  # ~3% of requests in all
    Failure(429, "budget_exceeded", 0.008),
    Failure(429, "rate_limit_exceeded", 0.006),
    Failure(403, "model_not_allowed", 0.003),
    Failure(400, "upstream_rejected", 0.003),
    Failure(502, "bad_gateway", 0.006),
    Failure(504, "upstream_timeout", 0.004),
)
FALLBACK_SHARE = 0.01
RETRY_SHARE = 0.02


@dataclass(frozen=True)
class Profile:
    """How a kind of user reaches the gateway."""

    name: str
    user_share: float
    route: str
    auth: AuthMethod
    with_chat_id: bool  # Open-WebUI forwards the chat id
    stream_share: float
    contexts: dict[str | None, float]


PROFILES = (
    Profile("open-webui", 0.80, "/v1/chat/completions", AuthMethod.forwarded_jwt, True, 0.92, {None: 1.0}),
    Profile(
        "api-key",
        0.15,
        "/v1/chat/completions",
        AuthMethod.api_key,
        False,
        0.30,
        {None: 0.30, "code-review": 0.25, "support-bot": 0.20, "batch-summaries": 0.15, "ci-assistant": 0.10},
    ),
    Profile(
        "product", 0.05, "/api/chat/completions", AuthMethod.session_token, False, 0.50, {None: 0.60, "product-search": 0.40}
    ),
)


def _pick(rng: np.random.Generator, weights: dict[Any, float]) -> Any:
    keys = list(weights)
    return keys[int(rng.choice(len(keys), p=np.array(list(weights.values())) / sum(weights.values())))]


class TemplateFactory:
    """Row templates made by the BFF's own span path: a Call becomes span attributes
    (`span_attributes`), the span ends as every gateway span does (`Telemetry.finish`) and
    the exporter turns it into an otel_traces row (`span_row`)."""

    def __init__(self) -> None:
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self._tracer = provider.get_tracer(SCOPE, SCOPE_VERSION)

    def row(self, route: str, record: Call, status: int) -> tuple[Any, ...]:
        # as Telemetry.start: one SERVER span per gateway operation, started with these attributes
        operation = "chat"
        span = self._tracer.start_span(
            f"gateway {operation}",
            kind=SpanKind.SERVER,
            attributes={attr.OPERATION: operation, attr.OPERATION_NAME: operation, attr.ROUTE: route},
        )
        assert isinstance(span, Span)
        Telemetry.finish(span, record.span_attributes(status), status)
        return span_row(span)


@dataclass
class Template:
    row: tuple[Any, ...]  # a span_row, ids and times to be replaced
    attributes: dict[str, str]
    has_chat_id: bool
    duration_ns: int


def make_templates(profile: Profile, count: int, rng: np.random.Generator, factory: TemplateFactory) -> list[Template]:
    """`count` outcomes drawn from the traffic mix of one profile."""
    model_weights = {model.name: model.weight for model in MODELS}
    failure_weights: dict[Failure | None, float] = {failure: failure.share for failure in FAILURES}
    failure_weights[None] = 1.0 - sum(failure.share for failure in FAILURES)
    templates = []
    for _ in range(count):
        requested = MODELS_BY_NAME[_pick(rng, model_weights)]
        failure: Failure | None = _pick(rng, failure_weights)
        stream = bool(rng.random() < profile.stream_share)
        principal = Principal(
            user_id=PLACEHOLDER,
            role=Role.user,
            auth=profile.auth,
            chat_id=PLACEHOLDER if profile.with_chat_id else None,
        )
        record = Call(request_id=PLACEHOLDER, model=requested.name, stream=stream)
        record.admit(principal)
        record.context = _pick(rng, profile.contexts)
        status = 200
        duration_ms = float(rng.uniform(3, 40))  # refused before LiteLLM answered
        if failure is not None:
            status = failure.status
            record.error_type = failure.code
            if failure.status >= 500:
                duration_ms = float(rng.uniform(5_000, 60_000) if failure.status == 504 else rng.uniform(200, 3_000))
        else:
            fell_back = bool(rng.random() < FALLBACK_SHARE)
            served = MODELS_BY_NAME[requested.fallback] if fell_back else requested
            record.model_group = served.name
            record.provider = served.provider
            record.deployment_id = DEPLOYMENTS[served.name][int(rng.integers(0, 2))]
            record.retries = 1 if rng.random() < RETRY_SHARE else 0
            record.fallbacks = 1 if fell_back else 0
            prompt = max(1, int(rng.lognormal(np.log(served.input_median), 0.9)))
            completion = max(1, int(rng.lognormal(np.log(served.output_median), 0.7)))
            record.prompt_tokens, record.completion_tokens, record.total_tokens = prompt, completion, prompt + completion
            if stream:  # the BFF prices streams itself: tokens x catalog prices, exact
                record.cost_usd = served.input_price * prompt + served.output_price * completion
                record.ttft_ms = float(rng.lognormal(np.log(450), 0.5))
            else:  # LiteLLM's x-litellm-response-cost: float text, kept exactly
                cost = float(served.input_price) * prompt + float(served.output_price) * completion
                record.cost_usd = Decimal(str(cost))
            duration_ms = (record.ttft_ms or 350.0) + completion * served.ms_per_output_token * float(rng.uniform(0.7, 1.3))
            if fell_back:
                duration_ms += float(rng.uniform(500, 5_000))
        row = factory.row(profile.route, record, status)
        attributes = row[COLUMNS.index("SpanAttributes")]
        templates.append(Template(row, attributes, attr.SESSION_ID in attributes, int(duration_ms * 1e6)))
    return templates


class TrafficGenerator:
    """Builds insert batches in COLUMNS order from the templates, cheaply: a row is a copy of a
    template's attribute dict with its own request id, user, role and chat id."""

    PER_ROW = ("Timestamp", "TraceId", "SpanId", "SpanAttributes", "Duration")

    def __init__(self, users: int, seed: int):
        self.rng = np.random.default_rng(seed)
        factory = TemplateFactory()
        profile_of_user = self.rng.choice(len(PROFILES), size=users, p=[profile.user_share for profile in PROFILES])
        self.templates: list[Template] = []
        offsets = []
        for profile in PROFILES:
            offsets.append(len(self.templates))
            self.templates += make_templates(profile, TEMPLATES_PER_PROFILE, self.rng, factory)
        self.template_offset = np.array(offsets, dtype=np.int64)[profile_of_user]
        # activity: a few heavy users, a long tail of light ones
        activity = self.rng.lognormal(0.0, 1.2, size=users)
        self.user_p = activity / activity.sum()
        self.user_ids = [str(uuid.UUID(int=int(self.rng.integers(0, 2**63)) << 64 | i, version=4)) for i in range(users)]
        self.roles = [Role.admin.value if self.rng.random() < ADMIN_SHARE else Role.user.value for _ in range(users)]
        self.chat_ids = [str(uuid.UUID(bytes=self.rng.bytes(16), version=4)) for _ in range(users * CHATS_PER_USER)]
        self.durations = np.array([template.duration_ns for template in self.templates], dtype=np.int64)
        # columns whose value differs between templates are taken per row, the rest is constant
        self.per_template: dict[int, list[Any]] = {}
        self.constant: dict[int, Any] = {}
        for index, name in enumerate(COLUMNS):
            if name in self.PER_ROW:
                continue
            values = [template.row[index] for template in self.templates]
            if all(value == values[0] for value in values):
                self.constant[index] = values[0]
            else:
                self.per_template[index] = values

    def timestamps(self, spans: int, days: int, end_ns: int) -> np.ndarray:
        """Sorted nanosecond start times over the `days` x 24 h before `end_ns`: fewer on
        weekends and at night, slowly growing (rejection sampling, in UTC)."""
        start_ns = end_ns - days * NS_PER_DAY
        hour_weight = np.array([1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 11, 13, 14, 14, 13, 11, 8, 6, 4, 3, 2, 1]) / 14
        chunks: list[np.ndarray] = []
        kept = 0
        while kept < spans:
            candidates = self.rng.integers(start_ns, end_ns, size=4_000_000)
            seconds = candidates // 10**9
            weekday = (seconds // 86_400 + 3) % 7  # 1970-01-01 was a Thursday (3)
            weight = (
                np.where(weekday >= 5, 0.35, 1.0)
                * hour_weight[seconds // 3_600 % 24]
                * (0.8 + 0.4 * (candidates - start_ns) / (end_ns - start_ns))
            )
            chosen = candidates[self.rng.random(len(candidates)) * 1.2 < weight]
            chunks.append(chosen)
            kept += len(chosen)
        result = np.concatenate(chunks)[:spans]
        result.sort()
        return result

    def batch(self, timestamps: np.ndarray) -> list[list[Any]]:
        n = len(timestamps)
        rng = self.rng
        users = rng.choice(len(self.user_ids), size=n, p=self.user_p)
        picks = (self.template_offset[users] + rng.integers(0, TEMPLATES_PER_PROFILE, size=n)).tolist()
        chats = (users * CHATS_PER_USER + rng.integers(0, CHATS_PER_USER, size=n)).tolist()
        hexes = os.urandom(n * 40).hex()  # per row: trace id (32), span id (16), request id (32)
        templates, user_ids, roles, chat_ids = self.templates, self.user_ids, self.roles, self.chat_ids
        attributes_column: list[dict[str, str]] = []
        append = attributes_column.append
        request_id, user_id, role_key, session_id = attr.REQUEST_ID, attr.USER_ID, attr.ROLE, attr.SESSION_ID
        for offset, pick, user, chat in zip(range(48, n * 80, 80), picks, users.tolist(), chats, strict=True):
            template = templates[pick]
            attributes = template.attributes.copy()  # keys stay in the exporter's order
            attributes[request_id] = hexes[offset : offset + 32]
            attributes[user_id] = user_ids[user]
            attributes[role_key] = roles[user]
            if template.has_chat_id:
                attributes[session_id] = chat_ids[chat]
            append(attributes)
        per_row: dict[str, list[Any]] = {
            "Timestamp": timestamps.tolist(),
            "TraceId": [hexes[offset : offset + 32] for offset in range(0, n * 80, 80)],
            "SpanId": [hexes[offset : offset + 16] for offset in range(32, n * 80, 80)],
            "SpanAttributes": attributes_column,
            "Duration": self.durations[picks].tolist(),
        }
        columns: list[list[Any]] = []
        for index, name in enumerate(COLUMNS):
            if name in per_row:
                columns.append(per_row[name])
            elif index in self.constant:
                columns.append([self.constant[index]] * n)
            else:
                values = self.per_template[index]
                columns.append([values[pick] for pick in picks])
        return columns


# ---------------------------------------------------------------------------------------------
# Measuring


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass
class Ingest:
    spans: int
    generation_s: float
    insert_s: float
    wall_s: float

    @property
    def rate(self) -> float:
        return self.spans / self.insert_s


def ingest(store: ClickHouseStore, generator: TrafficGenerator, args: argparse.Namespace, end_ns: int) -> Ingest:
    wall = time.perf_counter()
    started = time.perf_counter()
    timestamps = generator.timestamps(args.spans, args.days, end_ns)
    generation_s = time.perf_counter() - started
    insert_s = 0.0
    report_every = max(args.batch, 1_000_000 // args.batch * args.batch)
    for start in range(0, args.spans, args.batch):
        started = time.perf_counter()
        columns = generator.batch(timestamps[start : start + args.batch])
        generated = time.perf_counter()
        store.insert_columns(TRACES_TABLE, COLUMNS, columns)
        inserted = time.perf_counter()
        del columns
        generation_s += generated - started
        insert_s += inserted - generated
        done = min(start + args.batch, args.spans)
        if done % report_every == 0 or done == args.spans:
            print(
                f"  {done:>12,} spans   generate {generation_s:7.1f} s   insert {insert_s:7.1f} s"
                f"   {done / insert_s:>9,.0f} spans/s   peak RSS {rss_gib():.2f} GiB",
                flush=True,
            )
    return Ingest(args.spans, generation_s, insert_s, time.perf_counter() - wall)


def window_sql(days: int) -> tuple[str, str]:
    """The last `days` calendar days, today included. (Whole days before today would reach
    back to a day that is partly gone from otel_traces: its 30-day TTL drops whole parts.)"""
    rollup = (
        f"SELECT Day, ModelGroup, sum(CostUsd) AS CostUsd FROM {ROLLUP_TABLE} "
        f"WHERE Day > today() - {days} AND Day <= today() "
        "GROUP BY Day, ModelGroup ORDER BY Day, ModelGroup"
    )
    served, requested = f"SpanAttributes['{attr.RESPONSE_MODEL}']", f"SpanAttributes['{attr.REQUEST_MODEL}']"
    raw = (
        f"SELECT toDate(Timestamp) AS Day, if({served} != '', {served}, {requested}) AS ModelGroup, "
        f"sum(toDecimal256OrZero(SpanAttributes['{attr.COST_USD}'], 30)) AS CostUsd FROM {TRACES_TABLE} "
        f"WHERE SpanAttributes['{attr.OPERATION}'] != '' "
        f"AND Timestamp >= toDateTime64(today() - {days - 1}, 9) AND Timestamp < toDateTime64(today() + 1, 9) "
        "GROUP BY Day, ModelGroup ORDER BY Day, ModelGroup"
    )
    return rollup, raw


Answer = list[tuple[Any, ...]]


def timed(store: ClickHouseStore, sql: str) -> tuple[float, Answer]:
    started = time.perf_counter()
    rows = store.query(sql)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return elapsed_ms, [tuple(row.values()) for row in rows]


@dataclass
class Comparison:
    rollup_ms: list[float]
    raw_ms: list[float]
    rollup_first_ms: float
    raw_first_ms: float
    rollup_answer: Answer
    raw_answer: Answer

    @property
    def equal(self) -> bool:
        return self.rollup_answer == self.raw_answer

    @property
    def ratio(self) -> float:
        return statistics.median(self.raw_ms) / statistics.median(self.rollup_ms)


def compare(store: ClickHouseStore, repeats: int) -> Comparison:
    rollup_sql, raw_sql = window_sql(WINDOW_DAYS)
    rollup_first, rollup_answer = timed(store, rollup_sql)
    raw_first, raw_answer = timed(store, raw_sql)
    rollup_ms: list[float] = []
    raw_ms: list[float] = []
    for _ in range(repeats):
        elapsed, answer = timed(store, rollup_sql)
        rollup_ms.append(elapsed)
        if answer != rollup_answer:
            rollup_answer = []  # unstable answer: report as a mismatch
        elapsed, answer = timed(store, raw_sql)
        raw_ms.append(elapsed)
        if answer != raw_answer:
            raw_answer = []
    return Comparison(rollup_ms, raw_ms, rollup_first, raw_first, rollup_answer, raw_answer)


def print_comparison(title: str, result: Comparison, repeats: int) -> None:
    total = sum((row[2] for row in result.rollup_answer), Decimal(0))
    days = len({row[0] for row in result.rollup_answer})
    print(f"\n{title} ({repeats} interleaved repeats after one warm-up each)")
    if result.equal:
        print(f"  answers equal: yes ({len(result.rollup_answer)} rows, {days} days, total cost ${total:.6f})")
    else:
        print(f"  answers equal: NO (rollup {len(result.rollup_answer)} rows, raw {len(result.raw_answer)} rows)")
        for left, right in zip(result.rollup_answer, result.raw_answer, strict=False):
            if left != right:
                print(f"    first difference: rollup {left} vs raw {right}")
                break
    for name, first, samples in (
        ("rollup", result.rollup_first_ms, result.rollup_ms),
        ("raw   ", result.raw_first_ms, result.raw_ms),
    ):
        print(
            f"  {name}  p50 {statistics.median(samples):9.1f} ms   p95 {percentile(samples, 0.95):9.1f} ms"
            f"   min {min(samples):9.1f} ms   first {first:9.1f} ms"
        )
    rollup_p50 = statistics.median(result.rollup_ms)
    print(
        f"  rollup p50 {rollup_p50:.1f} ms  (target < {TARGET_ROLLUP_P50_MS:.0f} ms)  {verdict(rollup_p50 < TARGET_ROLLUP_P50_MS)}"
    )
    print(f"  raw / rollup (p50) {result.ratio:.1f}x  (target >= {TARGET_RATIO:.0f}x)  {verdict(result.ratio >= TARGET_RATIO)}")


def print_tables(store: ClickHouseStore) -> None:
    rows = store.query(
        "SELECT database || '.' || table AS name, sum(rows) AS rows, count() AS parts, "
        "sum(bytes_on_disk) AS bytes FROM system.parts WHERE active AND database = 'otel' "
        "GROUP BY name ORDER BY name"
    )
    for row in rows:
        print(f"  {row['name']:<34} {row['rows']:>12,} rows  {row['parts']:>4} parts  {row['bytes'] / 2**20:>9.1f} MiB")


def timed_call(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# The usage API as the monitoring pages call it

SERVICE_KEY = "bench-usage-service-key"
FORWARD_SECRET = "bench-usage-forward-secret"
RANGES = {"24h": (1, "hour"), "7d": (7, "day"), "30d": (30, "day"), "90d": (90, "day")}  # monitoring.js RANGES


def page_calls(days: int, bucket: str, admin: bool, now: datetime) -> list[tuple[str, dict[str, str]]]:
    """The usage API calls of one monitoring page load, as monitoring.js load() makes them."""
    if bucket == "hour":
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    else:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    base = {"from": start.isoformat().replace("+00:00", "Z"), "to": now.isoformat().replace("+00:00", "Z")}
    calls = [
        ("summary", base),
        ("timeseries", {**base, "bucket": bucket}),
        ("breakdown", {**base, "by": "model", "limit": "20"}),
        ("breakdown", {**base, "by": "status", "limit": "20"}),
        ("breakdown", {**base, "by": "context", "limit": "50"}),
        ("breakdown", {**base, "by": "operation", "limit": "50"}),
        ("breakdown", {**base, "by": "outcome", "limit": "20"}),
    ]
    if admin:
        calls.append(("breakdown", {**base, "by": "user", "limit": "10"}))
    return calls


def call_name(path: str, params: dict[str, str]) -> str:
    return f"{path}?by={params['by']}" if "by" in params else path


def forwarded_headers(user_id: str, role: str) -> dict[str, str]:
    """Open-WebUI's backend calling with the service key and a signed user JWT."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "email": f"{user_id}@bench.test",
        "name": user_id,
        "role": role,
        "iss": "open-webui",
        "iat": now,
        "exp": now + 3600,
    }
    return {
        "Authorization": f"Bearer {SERVICE_KEY}",
        "X-OpenWebUI-User-Jwt": jwt.encode(claims, FORWARD_SECRET, algorithm="HS256"),
    }


class InProcessBff:
    """The real BFF app (bff.app.create_app) under uvicorn on a loopback port, in this process
    (the embedded store allows one process per data path)."""

    def __init__(self, url: str, directory: Path):
        settings = Settings(
            litellm_url="http://127.0.0.1:9",  # not needed for usage calls
            litellm_master_key="bench-master-key",
            webui_secret_key="bench-webui-secret",
            bff_service_keys=[SERVICE_KEY],
            forward_user_info_header_jwt_secret=FORWARD_SECRET,
            clickhouse_url=url,
            clickhouse_schema_dir=ROOT / "config" / "clickhouse",
            policy_file=ROOT / "config" / "policy.yaml",
            routing_file=ROOT / "config" / "routing.yaml",
            comfyui_workflows_dir=ROOT / "config" / "comfyui",
            media_dir=directory / "media",
            log_level="WARNING",
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the in-process BFF did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PageTiming:
    calls: dict[str, list[float]]  # ms per call, each made alone
    loads: list[float]  # ms per page load, its calls at once (as the browser's Promise.all)


async def time_page(
    client: httpx.AsyncClient, headers: dict[str, str], days: int, bucket: str, admin: bool, repeats: int
) -> PageTiming:
    timing = PageTiming({}, [])

    async def get(path: str, params: dict[str, str]) -> float:
        started = time.perf_counter()
        answer = await client.get(f"/api/usage/{path}", params=params, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise RuntimeError(f"{path} {params}: {answer.status_code} {answer.text[:300]}")
        return elapsed

    for round_ in range(repeats + 1):  # the first round warms up, untimed
        calls = page_calls(days, bucket, admin, datetime.now(UTC))
        for path, params in calls:
            elapsed = await get(path, params)
            if round_:
                timing.calls.setdefault(call_name(path, params), []).append(elapsed)
        started = time.perf_counter()
        await asyncio.gather(*(get(path, params) for path, params in calls))
        if round_:
            timing.loads.append((time.perf_counter() - started) * 1000)
    return timing


def api_phase(url: str, directory: Path, store: ClickHouseStore, generator: TrafficGenerator, repeats: int) -> bool:
    """Times every usage-API call of the monitoring pages through the real app; True if all PASS."""
    heavy = store.query(f"SELECT UserId FROM {REQUESTS_TABLE} GROUP BY UserId ORDER BY count() DESC LIMIT 1")[0]["UserId"]
    viewers = [
        ("admin", forwarded_headers(generator.user_ids[0], Role.admin.value), True),
        ("heavy user", forwarded_headers(heavy, Role.user.value), False),
    ]
    bff = InProcessBff(url, directory)
    all_pass = True
    try:
        print(
            f"\nUsage API as the monitoring pages call it ({repeats} rounds after one warm-up; BFF {bff.url}, app bff.app.create_app)"
        )
        print(
            f"  heavy user {heavy}: {store.query(f'SELECT count() AS n FROM {REQUESTS_TABLE} WHERE UserId = {{u:String}}', {'u': heavy})[0]['n']:,} requests"
        )

        async def run_all() -> list[tuple[str, str, PageTiming]]:
            results = []
            async with httpx.AsyncClient(base_url=bff.url, timeout=120) as client:
                for viewer, headers, admin in viewers:
                    for name, (days, bucket) in RANGES.items():
                        results.append((viewer, name, await time_page(client, headers, days, bucket, admin, repeats)))
            return results

        for viewer, name, timing in asyncio.run(run_all()):
            per_call = {call: statistics.median(samples) for call, samples in timing.calls.items()}
            load = statistics.median(timing.loads)
            worst = max(per_call.values())
            ok = worst < TARGET_CALL_P50_MS and load < TARGET_PAGE_MS
            all_pass &= ok
            print(
                f"  {viewer:<10} {name:>3}: page load p50 {load:7.1f} ms (calls at once; sum of call p50s {sum(per_call.values()):7.1f} ms)"
                f"  slowest call {worst:6.1f} ms   {verdict(ok)}"
            )
            print("      " + "  ".join(f"{call} {ms:.1f}" for call, ms in per_call.items()))
    finally:
        bff.stop()
    print(f"  targets: every call p50 < {TARGET_CALL_P50_MS:.0f} ms, page load < {TARGET_PAGE_MS:.0f} ms  {verdict(all_pass)}")
    return all_pass


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--batch", type=int, default=100_000, help="rows per insert_columns call")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each query")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-optimize", action="store_true", help="do not repeat the queries after OPTIMIZE ... FINAL")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and print its URL")
    parser.add_argument("--api-repeats", type=int, default=5, help="timed loads of each monitoring page (0: skip)")
    parser.add_argument("--store", help="reuse a store kept by --keep (chdb:///path): skip ingest")
    args = parser.parse_args()
    if args.spans <= 0 or args.users <= 0 or args.batch <= 0 or args.repeats <= 0 or args.days <= WINDOW_DAYS:
        parser.error(f"counts must be positive and --days more than {WINDOW_DAYS}")
    return args


def main() -> int:
    args = parse_args()
    run_started = time.perf_counter()
    directory = (
        Path(args.store.removeprefix("chdb://")) if args.store else Path(tempfile.mkdtemp(prefix="bench_usage_", dir="/tmp"))
    )
    url = f"chdb://{directory}"
    store = ClickHouseStore(url, ROOT / "config" / "clickhouse")
    end_ns = time.time_ns()  # the data ends now
    try:
        print(
            f"bench_usage: {args.spans:,} spans, {args.users:,} users, {args.days} days "
            f"up to now, batch {args.batch:,}, store {url}"
        )
        schema_s = timed_call(lambda: store.query("SELECT 1"))
        started = time.perf_counter()
        generator = TrafficGenerator(args.users, args.seed)
        print(
            f"  schema applied in {schema_s:.2f} s; {len(generator.templates):,} row templates built through "
            f"span_attributes -> Telemetry.finish -> span_row in {time.perf_counter() - started:.1f} s"
        )

        if args.store:
            spans = store.query(f"SELECT count() AS n FROM {REQUESTS_TABLE}")[0]["n"]
            print(f"\nIngest skipped: {spans:,} spans in the kept store")
            result = Ingest(spans, 1.0, 1.0, 1.0)
        else:
            print("\nIngest (store.insert_columns(TRACES_TABLE, COLUMNS, columns), as the exporter)")
            result = ingest(store, generator, args, end_ns)
        print(f"  spans                  {result.spans:>12,}")
        print(f"  generation (Python)    {result.generation_s:>9.1f} s   {result.spans / result.generation_s:>10,.0f} spans/s")
        print(
            f"  insert                 {result.insert_s:>9.1f} s   {result.rate:>10,.0f} spans/s   "
            f"(target >= {TARGET_INGEST_SPANS_PER_S:,})  {verdict(result.rate >= TARGET_INGEST_SPANS_PER_S)}"
        )
        print(f"  end to end             {result.wall_s:>9.1f} s   {result.spans / result.wall_s:>10,.0f} spans/s")
        print(f"  peak RSS               {rss_gib():>9.2f} GiB")

        counts = store.query(
            f"SELECT (SELECT count() FROM {REQUESTS_TABLE}) AS requests, (SELECT sum(Requests) FROM {ROLLUP_TABLE}) AS rolled"
        )[0]
        views_ok = counts["requests"] == result.spans and counts["rolled"] == result.spans
        print(f"\nStore after ingest (as is, merges may still run); views complete: {'yes' if views_ok else 'NO'}")
        print(f"  {REQUESTS_TABLE} rows {counts['requests']:,}, {ROLLUP_TABLE} sum(Requests) {counts['rolled']:,}")
        print_tables(store)
        print("  (otel_traces keeps 30 days: older partitions go once TTL merges drop them)")

        api_ok = api_phase(url, directory, store, generator, args.api_repeats) if args.api_repeats else None

        window = store.query(f"SELECT today() - {WINDOW_DAYS - 1} AS first, today() AS last")[0]
        title = f"Queries: cost by model group by day, {window['first']} .. {window['last']} ({WINDOW_DAYS} days)"
        comparisons = [(f"{title}, as ingested", compare(store, args.repeats))]
        print_comparison(*comparisons[0], args.repeats)
        if not args.skip_optimize:
            optimize_s = timed_call(lambda: store.query(f"OPTIMIZE TABLE {ROLLUP_TABLE} FINAL"))
            print(f"\nOPTIMIZE TABLE {ROLLUP_TABLE} FINAL took {optimize_s:.1f} s")
            print_tables(store)
            comparisons.append((f"{title}, after OPTIMIZE FINAL on the rollup", compare(store, args.repeats)))
            print_comparison(*comparisons[1], args.repeats)

        first = comparisons[0][1]
        print("\nSummary")
        print(
            f"  ingest {result.rate:,.0f} spans/s (>= {TARGET_INGEST_SPANS_PER_S:,})  "
            f"{verdict(result.rate >= TARGET_INGEST_SPANS_PER_S)}"
        )
        rollup_p50 = statistics.median(first.rollup_ms)
        print(f"  rollup p50 {rollup_p50:.1f} ms (< {TARGET_ROLLUP_P50_MS:.0f} ms)  {verdict(rollup_p50 < TARGET_ROLLUP_P50_MS)}")
        print(f"  raw / rollup {first.ratio:.1f}x (>= {TARGET_RATIO:.0f}x)  {verdict(first.ratio >= TARGET_RATIO)}")
        if api_ok is not None:
            print(
                f"  usage API: every page call p50 < {TARGET_CALL_P50_MS:.0f} ms and page load < {TARGET_PAGE_MS:.0f} ms  {verdict(api_ok)}"
            )
        answers_ok = all(comparison.equal for _, comparison in comparisons)
        print(f"  answers equal: {'yes' if answers_ok else 'NO'}; views complete: {'yes' if views_ok else 'NO'}")
        print(f"  run took {time.perf_counter() - run_started:.0f} s, peak RSS {rss_gib():.2f} GiB")
        return 0 if answers_ok and views_ok else 1
    finally:
        store.call(lambda client: client.close())
        store.close()
        if args.keep or args.store:
            print(f"  store kept: {url}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
