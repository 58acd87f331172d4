"""Parameterised usage queries. Identifiers come only from the fixed maps below;
every caller-supplied value travels as a ClickHouse query parameter.

Whole-day ranges without status or session filters read the daily rollup
(otel.gateway_usage_daily); everything else reads the typed request table.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from bff.errors import bad_request
from bff.usage.models import (
    AppliedFilters,
    BreakdownRow,
    Bucket,
    Dimension,
    Percentiles,
    Range,
    Source,
    TimeseriesPoint,
    UsageTotals,
)

MAX_RANGE = timedelta(days=400)
# Within what ClickHouse's DateTime64 holds (1900-01-01 .. 2299-12-31), and no earlier than any span.
STORE_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
STORE_LATEST = datetime(2299, 12, 31, tzinfo=UTC)
DEFAULT_RANGE = timedelta(days=7)
MAX_POINTS = 2000
MAX_ROWS = 1000
BUCKET_STEP = {Bucket.hour: timedelta(hours=1), Bucket.day: timedelta(days=1), Bucket.week: timedelta(weeks=1), Bucket.month: timedelta(days=28)}


@dataclass(frozen=True)
class SourceSql:
    table: str
    time: str
    metrics: str  # the UsageTotals columns, in _totals order
    dimensions: dict[Dimension, str]
    buckets: dict[Bucket, str]


# Dimensions both sources hold as real columns of the same name.
_SHARED_DIMENSIONS = {
    Dimension.model: "ModelGroup",
    Dimension.user: "UserId",
    Dimension.provider: "Provider",
    Dimension.role: "Role",
    Dimension.context: "Context",
    Dimension.operation: "Operation",
}

# An error answer, or a stream that failed after it started with 200 (as the daily rollup counts).
_FAILED = "(HttpStatus >= 400 OR Outcome = 'upstream_failed')"

_TYPED = SourceSql(
    table="otel.gateway_requests",
    time="Timestamp",
    metrics=(
        f"count() AS requests, countIf({_FAILED}) AS errors, sum(InputTokens) AS input_tokens, "
        "sum(OutputTokens) AS output_tokens, sum(CostUsd) AS cost_usd, sum(Fallbacks) AS fallbacks, "
        "quantiles(0.5, 0.95, 0.99)(LatencyMs) AS latency, quantiles(0.5, 0.95, 0.99)(TtftMs) AS ttft"
    ),
    dimensions={
        **_SHARED_DIMENSIONS,
        Dimension.status: "toString(HttpStatus)",
        Dimension.session: "SessionId",
        Dimension.outcome: "Outcome",
    },
    buckets={
        Bucket.hour: "toStartOfHour(Timestamp)",
        Bucket.day: "toDateTime(toStartOfDay(Timestamp))",
        Bucket.week: "toDateTime(toStartOfWeek(Timestamp, 1))",
        Bucket.month: "toDateTime(toStartOfMonth(Timestamp))",
    },
)
_ROLLUP = SourceSql(
    table="otel.gateway_usage_daily",
    time="Day",
    metrics=(
        "sum(Requests) AS requests, sum(Errors) AS errors, sum(InputTokens) AS input_tokens, "
        "sum(OutputTokens) AS output_tokens, sum(CostUsd) AS cost_usd, sum(Fallbacks) AS fallbacks, "
        "quantilesMerge(0.5, 0.95, 0.99)(LatencyMs) AS latency, CAST([], 'Array(Float64)') AS ttft"
    ),
    dimensions=_SHARED_DIMENSIONS,
    buckets={
        Bucket.day: "toDateTime(Day)",
        Bucket.week: "toDateTime(toStartOfWeek(Day, 1))",
        Bucket.month: "toDateTime(toStartOfMonth(Day))",
    },
)
_FILTER_COLUMNS = {
    "model": "ModelGroup",
    "user": "UserId",
    "provider": "Provider",
    "context": "Context",
    "operation": "Operation",
}
_FILL_STEP = {
    Bucket.hour: "toIntervalHour(1)",
    Bucket.day: "toIntervalDay(1)",
    Bucket.week: "toIntervalWeek(1)",
    Bucket.month: "toIntervalMonth(1)",
}


@dataclass(frozen=True)
class UsageQuery:
    start: datetime
    end: datetime
    model: str | None = None
    user: str | None = None
    provider: str | None = None
    context: str | None = None
    operation: str | None = None  # gen_ai.operation.name: chat, embeddings, audio_speech, ...
    status: str | None = None  # "ok", "error" or a 3-digit HTTP status

    @classmethod
    def build(cls, start: datetime | None, end: datetime | None, **filters: str | None) -> "UsageQuery":
        end = _utc(end) if end else datetime.now(UTC)
        start = _utc(start) if start else end - DEFAULT_RANGE
        for name, moment in (("from", start), ("to", end)):
            if not STORE_EARLIEST <= moment <= STORE_LATEST:
                raise bad_request(f"invalid field '{name}': must be between {STORE_EARLIEST:%Y-%m-%d} and {STORE_LATEST:%Y-%m-%d}")
        if start >= end:
            raise bad_request("invalid field 'from': must be before 'to'")
        if end - start > MAX_RANGE:
            raise bad_request(f"invalid field 'from': the range may span at most {MAX_RANGE.days} days")
        status = filters.get("status")
        if status is not None and status not in ("ok", "error") and not (status.isdigit() and 100 <= int(status) <= 599):
            raise bad_request("invalid field 'status': 'ok', 'error' or an HTTP status code")
        return cls(start=start, end=end, **filters)

    def range(self) -> Range:
        return Range(from_=self.start, to=self.end)

    def applied(self) -> AppliedFilters:
        return AppliedFilters(
            model=self.model,
            user=self.user,
            provider=self.provider,
            context=self.context,
            operation=self.operation,
            status=self.status,
        )

    def whole_days(self) -> bool:
        return all(moment.time() == time(0) for moment in (self.start, self.end))

    def source(self, dimension: Dimension | None = None, bucket: Bucket | None = None) -> SourceSql:
        fits_rollup = (
            self.whole_days()
            and self.status is None
            and (dimension is None or dimension in _ROLLUP.dimensions)
            and (bucket is None or bucket in _ROLLUP.buckets)
        )
        return _ROLLUP if fits_rollup else _TYPED

    def where(self, source: SourceSql) -> tuple[str, dict[str, Any]]:
        if source is _ROLLUP:
            clauses = ["Day >= toDate({start:DateTime64(6, 'UTC')})", "Day < toDate({end:DateTime64(6, 'UTC')})"]
        else:
            clauses = ["Timestamp >= {start:DateTime64(6, 'UTC')}", "Timestamp < {end:DateTime64(6, 'UTC')}"]
        params: dict[str, Any] = {"start": self.start, "end": self.end}
        for name, column in _FILTER_COLUMNS.items():
            value = getattr(self, name)
            if value is not None:
                clauses.append(f"{column} = {{{name}:String}}")
                params[name] = value
        if self.status == "ok":
            clauses.append(f"NOT {_FAILED}")
        elif self.status == "error":
            clauses.append(_FAILED)
        elif self.status is not None:
            clauses.append("HttpStatus = {status:UInt16}")
            params["status"] = int(self.status)
        return " AND ".join(clauses), params


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def source_name(source: SourceSql) -> Source:
    return "rollup" if source is _ROLLUP else "requests"


def _percentiles(values: list[float] | None) -> Percentiles:
    clean = [None if v is None or math.isnan(v) else round(float(v), 3) for v in (values or [])]
    return Percentiles(**dict(zip(("p50", "p95", "p99"), clean, strict=False)))


def _totals(row: dict[str, Any]) -> dict[str, Any]:
    input_tokens, output_tokens = int(row["input_tokens"] or 0), int(row["output_tokens"] or 0)
    return {
        "requests": int(row["requests"] or 0),
        "errors": int(row["errors"] or 0),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "cost_usd": float(Decimal(row["cost_usd"] or 0)),
        "fallbacks": int(row["fallbacks"] or 0),
        "latency_ms": _percentiles(row["latency"]),
        "ttft_ms": _percentiles(row["ttft"]),
    }


def summary_sql(query: UsageQuery) -> tuple[str, dict[str, Any], SourceSql]:
    source = query.source()
    where, params = query.where(source)
    return f"SELECT {source.metrics} FROM {source.table} WHERE {where}", params, source


def summary_result(rows: list[dict[str, Any]]) -> UsageTotals:
    return UsageTotals(**_totals(rows[0])) if rows else UsageTotals()


def timeseries_sql(query: UsageQuery, bucket: Bucket) -> tuple[str, dict[str, Any], SourceSql]:
    if (query.end - query.start) / BUCKET_STEP[bucket] > MAX_POINTS:
        raise bad_request(f"invalid field 'bucket': '{bucket}' over this range exceeds {MAX_POINTS} points")
    source = query.source(bucket=bucket)
    where, params = query.where(source)
    expression = source.buckets[bucket]
    fill_from = _TYPED.buckets[bucket].replace("Timestamp", "{start:DateTime64(6, 'UTC')}")
    sql = (
        f"SELECT {expression} AS t, {source.metrics} FROM {source.table} WHERE {where} GROUP BY t "
        f"ORDER BY t WITH FILL FROM {fill_from} TO toDateTime({{end:DateTime64(6, 'UTC')}}) STEP {_FILL_STEP[bucket]}"
    )
    return sql, params, source


def timeseries_result(rows: list[dict[str, Any]]) -> list[TimeseriesPoint]:
    return [TimeseriesPoint(t=_utc(row["t"]), **_totals(row)) for row in rows]


def breakdown_sql(query: UsageQuery, by: Dimension, limit: int) -> tuple[str, dict[str, Any], SourceSql]:
    source = query.source(dimension=by)
    where, params = query.where(source)
    params["limit"] = min(limit, MAX_ROWS)
    sql = (
        f"SELECT {source.dimensions[by]} AS key, {source.metrics} FROM {source.table} WHERE {where} "
        "GROUP BY key ORDER BY cost_usd DESC, requests DESC, key LIMIT {limit:UInt32}"
    )
    return sql, params, source


def breakdown_result(rows: list[dict[str, Any]]) -> list[BreakdownRow]:
    return [BreakdownRow(key=str(row["key"]), **_totals(row)) for row in rows]


SESSION_LIMIT = 500


def session_sql(query: UsageQuery, session_id: str) -> tuple[str, str, dict[str, Any]]:
    """Totals and the request list of one Open-WebUI chat (always from the typed table)."""
    where, params = query.where(_TYPED)
    where += " AND SessionId = {session:String}"
    params["session"] = session_id
    totals = f"SELECT {_TYPED.metrics} FROM {_TYPED.table} WHERE {where}"
    requests = (
        "SELECT Timestamp AS timestamp, RequestId AS request_id, ModelGroup AS model, HttpStatus AS status, "
        "Stream AS stream, InputTokens AS input_tokens, OutputTokens AS output_tokens, CostUsd AS cost_usd, "
        f"LatencyMs AS latency_ms, TtftMs AS ttft_ms FROM {_TYPED.table} WHERE {where} "
        f"ORDER BY Timestamp LIMIT {SESSION_LIMIT}"
    )
    return totals, requests, params


# The window around a request's time that holds the rest of its trace.
TRACE_WINDOW = timedelta(hours=1)


def request_sql(query: UsageQuery, request_id: str) -> tuple[str, dict[str, Any]]:
    """One request's typed row, within the query's range and user filter."""
    where, params = query.where(_TYPED)
    params["request_id"] = request_id
    sql = (
        "SELECT Timestamp AS timestamp, RequestId AS request_id, TraceId AS trace_id, UserId AS user_id, Role AS role, "
        "RequestedModel AS requested_model, ModelGroup AS model, Provider AS provider, DeploymentId AS deployment_id, "
        "Operation AS operation, Route AS route, SessionId AS session_id, Context AS context, HttpStatus AS status, "
        "ErrorType AS error_type, Stream AS stream, InputTokens AS input_tokens, OutputTokens AS output_tokens, "
        "TotalTokens AS total_tokens, CostUsd AS cost_usd, LatencyMs AS latency_ms, TtftMs AS ttft_ms, "
        "Outcome AS outcome, CostEstimated AS cost_estimated, "
        f"Retries AS retries, Fallbacks AS fallbacks FROM {_TYPED.table} "
        f"WHERE {where} AND RequestId = {{request_id:String}} ORDER BY Timestamp LIMIT 1"
    )
    return sql, params


def trace_sql(trace_id: str, around: datetime) -> tuple[str, dict[str, Any]]:
    """Every service's spans of one trace, near the request's time (otel_traces is partitioned by day)."""
    sql = (
        "SELECT Timestamp AS timestamp, ServiceName AS service_name, SpanName AS span_name, SpanKind AS span_kind, "
        "SpanId AS span_id, ParentSpanId AS parent_span_id, Duration / 1e6 AS duration_ms, StatusCode AS status_code "
        "FROM otel.otel_traces WHERE TraceId = {trace_id:String} "
        "AND Timestamp >= {start:DateTime64(6, 'UTC')} AND Timestamp < {end:DateTime64(6, 'UTC')} ORDER BY Timestamp LIMIT 200"
    )
    return sql, {"trace_id": trace_id, "start": around - TRACE_WINDOW, "end": around + TRACE_WINDOW}
