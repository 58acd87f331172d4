"""Parameterised usage queries. Identifiers come only from the fixed maps below;
every caller-supplied value travels as a ClickHouse query parameter.

A range's whole UTC days are read from the smallest daily rollup that holds every column the
query filters or groups by (config/clickhouse/004_gateway_usage_rollups.sql); its partial days
at the edges (and hourly buckets, and sessions) from the typed request table. Both parts are
merged in one statement: sums, and quantilesBFloat16 states, whose merge is exact, so the answer
is the one the typed table alone gives.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
BUCKET_STEP = {
    Bucket.hour: timedelta(hours=1),
    Bucket.day: timedelta(days=1),
    Bucket.week: timedelta(weeks=1),
    Bucket.month: timedelta(days=28),
}

TYPED_TABLE = "otel.gateway_requests"
_LEVELS = "0.5, 0.95, 0.99"
# An error answer, or a stream that failed after it started with 200 (as the rollups count).
_FAILED = "(HttpStatus >= 400 OR Outcome = 'upstream_failed')"
_TYPED_SUMS = (
    f"count() AS requests, countIf({_FAILED}) AS errors, sum(InputTokens) AS input_tokens, "
    "sum(OutputTokens) AS output_tokens, sum(CostUsd) AS cost_usd, sum(Fallbacks) AS fallbacks"
)
_ROLLUP_SUMS = (
    "Requests AS requests, Errors AS errors, InputTokens AS input_tokens, OutputTokens AS output_tokens, "
    "CostUsd AS cost_usd, Fallbacks AS fallbacks"
)
_MERGED_SUMS = (
    "sum(requests) AS requests, sum(errors) AS errors, sum(input_tokens) AS input_tokens, "
    "sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost_usd, sum(fallbacks) AS fallbacks"
)
# The UsageTotals columns (as _totals reads them) straight from typed rows ...
_TYPED_METRICS = (
    f"{_TYPED_SUMS}, quantilesBFloat16({_LEVELS})(LatencyMs) AS latency, quantilesBFloat16({_LEVELS})(TtftMs) AS ttft"
)
# ... or merged from parts: typed rows as partial states, rollup rows as they are.
_TYPED_STATES = (
    f"{_TYPED_SUMS}, quantilesBFloat16State({_LEVELS})(LatencyMs) AS latency, quantilesBFloat16State({_LEVELS})(TtftMs) AS ttft"
)
_ROLLUP_ROWS = f"{_ROLLUP_SUMS}, LatencyMs AS latency, TtftMs AS ttft"
_MERGED_METRICS = (
    f"{_MERGED_SUMS}, quantilesBFloat16Merge({_LEVELS})(latency) AS latency, quantilesBFloat16Merge({_LEVELS})(ttft) AS ttft"
)

# Every dimension as an expression over columns that the typed table and the rollups share.
DIMENSIONS = {
    Dimension.model: "ModelGroup",
    Dimension.user: "UserId",
    Dimension.provider: "Provider",
    Dimension.role: "Role",
    Dimension.context: "Context",
    Dimension.operation: "Operation",
    Dimension.status: "toString(HttpStatus)",
    Dimension.session: "SessionId",
    Dimension.outcome: "Outcome",
    Dimension.task: "Task",
}
_DIMENSION_COLUMNS = {
    Dimension.model: {"ModelGroup"},
    Dimension.user: {"UserId"},
    Dimension.provider: {"Provider"},
    Dimension.role: {"Role"},
    Dimension.context: {"Context"},
    Dimension.operation: {"Operation"},
    Dimension.status: {"HttpStatus"},
    Dimension.session: {"SessionId"},
    Dimension.outcome: {"Outcome"},
    Dimension.task: {"Task"},  # in no rollup: read from the typed table
}
_FILTER_COLUMNS = {
    "model": "ModelGroup",
    "user": "UserId",
    "provider": "Provider",
    "context": "Context",
    "operation": "Operation",
}
# Buckets as UTC DateTimes, from a timestamp column (typed) or a Day column (rollups).
_TYPED_BUCKETS = {
    Bucket.hour: "toStartOfHour(toDateTime({column}, 'UTC'))",
    Bucket.day: "toDateTime(toStartOfDay({column}, 'UTC'), 'UTC')",
    Bucket.week: "toDateTime(toStartOfWeek({column}, 1, 'UTC'), 'UTC')",
    Bucket.month: "toDateTime(toStartOfMonth({column}, 'UTC'), 'UTC')",
}
_ROLLUP_BUCKETS = {
    Bucket.day: "toDateTime(Day, 'UTC')",
    Bucket.week: "toDateTime(toStartOfWeek(Day, 1), 'UTC')",
    Bucket.month: "toDateTime(toStartOfMonth(Day), 'UTC')",
}
_FILL_STEP = {
    Bucket.hour: "toIntervalHour(1)",
    Bucket.day: "toIntervalDay(1)",
    Bucket.week: "toIntervalWeek(1)",
    Bucket.month: "toIntervalMonth(1)",
}


@dataclass(frozen=True)
class Rollup:
    table: str
    columns: frozenset[str]  # the dimension columns it keeps
    # Rows per (Dimension, Key) instead of dimension columns: answers only queries without
    # filters, whose dimension (if any) is one of these; '' holds the totals.
    keyed: frozenset[Dimension] = frozenset()


_EVERY_COLUMN = frozenset({"ModelGroup", "UserId", "Provider", "Role", "Context", "Operation", "HttpStatus", "Outcome"})
# Smallest first: a query reads the first that holds every column it needs.
KEYED_ROLLUP = Rollup(
    "otel.gateway_usage_daily_dims",
    frozenset(),
    frozenset({Dimension.model, Dimension.provider, Dimension.role, Dimension.context, Dimension.operation,
               Dimension.status, Dimension.outcome}),
)  # fmt: skip
ROLLUPS = (
    Rollup("otel.gateway_usage_daily_global", _EVERY_COLUMN - {"UserId"}),
    Rollup("otel.gateway_usage_daily_users", frozenset({"UserId", "Role"})),
    Rollup("otel.gateway_usage_daily_detail", _EVERY_COLUMN),
)


@dataclass(frozen=True)
class Plan:
    """Where a query's answer comes from: a rollup for [first_day, end_day) and the typed table
    for the rest of the range (either may be absent)."""

    rollup: Rollup | None
    first_day: datetime
    end_day: datetime
    typed: bool
    dimension: str = ""  # the keyed rollup's rows it reads ('' the totals)

    @property
    def source(self) -> Source:
        if self.rollup is None:
            return "requests"
        return "rollup+requests" if self.typed else "rollup"


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
                raise bad_request(
                    f"invalid field '{name}': must be between {STORE_EARLIEST:%Y-%m-%d} and {STORE_LATEST:%Y-%m-%d}"
                )
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

    def needed_columns(self) -> set[str]:
        columns = {column for name, column in _FILTER_COLUMNS.items() if getattr(self, name) is not None}
        if self.status in ("ok", "error"):
            columns |= {"HttpStatus", "Outcome"}
        elif self.status is not None:
            columns.add("HttpStatus")
        return columns

    def typed_only(self) -> Plan:
        """The plan that reads the typed table alone (what every rollup answer must equal)."""
        return Plan(None, self.start, self.start, True)

    def plan(self, dimension: Dimension | None = None, bucket: Bucket | None = None) -> Plan:
        """The smallest rollup that can answer the range's whole UTC days, if any."""
        midnight = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        first_day = midnight if self.start == midnight else midnight + timedelta(days=1)
        end_day = self.end.replace(hour=0, minute=0, second=0, microsecond=0)
        needed = self.needed_columns() | (_DIMENSION_COLUMNS[dimension] if dimension is not None else set())
        rollup = next((rollup for rollup in ROLLUPS if needed <= rollup.columns), None)
        if not self.needed_columns() and (dimension is None or dimension in KEYED_ROLLUP.keyed):
            rollup = KEYED_ROLLUP
        if first_day >= end_day or rollup is None or (bucket is not None and bucket not in _ROLLUP_BUCKETS):
            return self.typed_only()
        typed = self.start < first_day or end_day < self.end
        return Plan(rollup, first_day, end_day, typed, str(dimension or "") if rollup.keyed else "")

    def _filters(self) -> tuple[list[str], dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
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
        return clauses, params

    def where(self, plan: Plan | None = None) -> tuple[str, dict[str, Any]]:
        """The typed table's conditions: the range, minus the days the plan's rollup answers."""
        clauses, params = self._filters()
        clauses[:0] = ["Timestamp >= {start:DateTime64(6, 'UTC')}", "Timestamp < {end:DateTime64(6, 'UTC')}"]
        params.update(start=self.start, end=self.end)
        if plan is not None and plan.rollup is not None:
            clauses.insert(2, "(Timestamp < {first_day:DateTime64(6, 'UTC')} OR Timestamp >= {end_day:DateTime64(6, 'UTC')})")
            params.update(first_day=plan.first_day, end_day=plan.end_day)
        return " AND ".join(clauses), params

    def rollup_where(self, plan: Plan) -> tuple[str, dict[str, Any]]:
        clauses, params = self._filters()
        clauses[:0] = ["Day >= {first_date:Date}", "Day < {end_date:Date}"]
        params.update(first_date=plan.first_day.date(), end_date=plan.end_day.date())
        if plan.rollup is not None and plan.rollup.keyed:
            clauses.insert(0, "Dimension = {dimension:String}")
            params["dimension"] = plan.dimension
        return " AND ".join(clauses), params


def _select(
    query: UsageQuery,
    plan: Plan,
    key: str | None,
    typed_key: str | None,
    rollup_key: str | None,
    sums_only: bool = False,
    only: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """SELECT [key,] metrics FROM ... WHERE ...: the typed table alone, or the rollup's part and
    the typed part merged. The caller adds GROUP BY / ORDER BY over `key`. `sums_only`: without
    the quantiles (for ranking); `only`: one more condition on every part."""
    typed_where, params = query.where(plan)
    extra = f" AND {only}" if only else ""
    typed_metrics, typed_states, rollup_rows, merged = (
        (_TYPED_SUMS, _TYPED_SUMS, _ROLLUP_SUMS, _MERGED_SUMS)
        if sums_only
        else (_TYPED_METRICS, _TYPED_STATES, _ROLLUP_ROWS, _MERGED_METRICS)
    )
    if plan.rollup is None:
        head = f"{typed_key} AS {key}, " if key else ""
        return f"SELECT {head}{typed_metrics} FROM {TYPED_TABLE} WHERE {typed_where}{extra}", params
    rollup_where, rollup_params = query.rollup_where(plan)
    params.update(rollup_params)
    parts = [
        f"SELECT {f'{rollup_key} AS {key}, ' if key else ''}{rollup_rows} FROM {plan.rollup.table} WHERE {rollup_where}{extra}"
    ]
    if plan.typed:
        group = f" GROUP BY {key}" if key else ""
        parts.append(
            f"SELECT {f'{typed_key} AS {key}, ' if key else ''}{typed_states} FROM {TYPED_TABLE} WHERE {typed_where}{extra}{group}"
        )
    head = f"{key}, " if key else ""
    return f"SELECT {head}{merged} FROM ({' UNION ALL '.join(parts)})", params


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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


def summary_sql(query: UsageQuery, plan: Plan | None = None) -> tuple[str, dict[str, Any], Plan]:
    plan = plan or query.plan()
    sql, params = _select(query, plan, None, None, None)
    return sql, params, plan


def summary_result(rows: list[dict[str, Any]]) -> UsageTotals:
    return UsageTotals(**_totals(rows[0])) if rows else UsageTotals()


def timeseries_sql(query: UsageQuery, bucket: Bucket, plan: Plan | None = None) -> tuple[str, dict[str, Any], Plan]:
    if (query.end - query.start) / BUCKET_STEP[bucket] > MAX_POINTS:
        raise bad_request(f"invalid field 'bucket': '{bucket}' over this range exceeds {MAX_POINTS} points")
    plan = plan or query.plan(bucket=bucket)
    typed_key = _TYPED_BUCKETS[bucket].format(column="Timestamp")
    sql, params = _select(query, plan, "t", typed_key, _ROLLUP_BUCKETS.get(bucket))
    fill_from = _TYPED_BUCKETS[bucket].format(column="{start:DateTime64(6, 'UTC')}")
    sql += (
        f" GROUP BY t ORDER BY t WITH FILL FROM {fill_from} TO toDateTime({{end:DateTime64(6, 'UTC')}}, 'UTC') "
        f"STEP {_FILL_STEP[bucket]}"
    )
    return sql, params, plan


def timeseries_result(rows: list[dict[str, Any]]) -> list[TimeseriesPoint]:
    return [TimeseriesPoint(t=_utc(row["t"]), **_totals(row)) for row in rows]


_RANKING = " GROUP BY key ORDER BY cost_usd DESC, requests DESC, key LIMIT {limit:UInt32}"
# Dimensions with many keys: the top keys are ranked on sums alone, and only their rows merge
# quantile states (the rollups that hold UserId are ordered by it).
_RANKED_FIRST = {Dimension.user: "UserId"}


def breakdown_sql(query: UsageQuery, by: Dimension, limit: int, plan: Plan | None = None) -> tuple[str, dict[str, Any], Plan]:
    plan = plan or query.plan(dimension=by)
    rollup_key = "Key" if plan.rollup is not None and plan.rollup.keyed else DIMENSIONS[by]
    sql, params = _select(query, plan, "key", DIMENSIONS[by], rollup_key)
    params["limit"] = min(limit, MAX_ROWS)
    column = _RANKED_FIRST.get(by)
    if column is not None:
        ranking, _ = _select(query, plan, "key", DIMENSIONS[by], DIMENSIONS[by], sums_only=True)
        top = f"SELECT key FROM ({ranking}{_RANKING})"
        sql, _ = _select(query, plan, "key", DIMENSIONS[by], DIMENSIONS[by], only=f"{column} IN ({top})")
    return sql + _RANKING, params, plan


def breakdown_result(rows: list[dict[str, Any]]) -> list[BreakdownRow]:
    return [BreakdownRow(key=str(row["key"]), **_totals(row)) for row in rows]


SESSION_LIMIT = 500


def session_sql(query: UsageQuery, session_id: str) -> tuple[str, str, dict[str, Any]]:
    """Totals and the request list of one Open-WebUI chat (always from the typed table)."""
    where, params = query.where()
    where += " AND SessionId = {session:String}"
    params["session"] = session_id
    totals = f"SELECT {_TYPED_METRICS} FROM {TYPED_TABLE} WHERE {where}"
    requests = (
        "SELECT Timestamp AS timestamp, RequestId AS request_id, ModelGroup AS model, HttpStatus AS status, "
        "Stream AS stream, InputTokens AS input_tokens, OutputTokens AS output_tokens, CostUsd AS cost_usd, "
        f"LatencyMs AS latency_ms, TtftMs AS ttft_ms FROM {TYPED_TABLE} WHERE {where} "
        f"ORDER BY Timestamp LIMIT {SESSION_LIMIT}"
    )
    return totals, requests, params


# The window around a request's time that holds the rest of its trace.
TRACE_WINDOW = timedelta(hours=1)


def request_sql(query: UsageQuery, request_id: str) -> tuple[str, dict[str, Any]]:
    """One request's typed row, within the query's range and user filter."""
    where, params = query.where()
    params["request_id"] = request_id
    sql = (
        "SELECT Timestamp AS timestamp, RequestId AS request_id, TraceId AS trace_id, UserId AS user_id, Role AS role, "
        "RequestedModel AS requested_model, ModelGroup AS model, Provider AS provider, DeploymentId AS deployment_id, "
        "Operation AS operation, Route AS route, SessionId AS session_id, Context AS context, HttpStatus AS status, "
        "ErrorType AS error_type, Stream AS stream, InputTokens AS input_tokens, OutputTokens AS output_tokens, "
        "TotalTokens AS total_tokens, CostUsd AS cost_usd, LatencyMs AS latency_ms, TtftMs AS ttft_ms, "
        "Outcome AS outcome, CostEstimated AS cost_estimated, "
        f"Retries AS retries, Fallbacks AS fallbacks FROM {TYPED_TABLE} "
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
