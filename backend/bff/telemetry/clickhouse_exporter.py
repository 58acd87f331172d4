"""A span exporter that writes the very rows the collector's clickhouse exporter writes.

Same table (otel.otel_traces), same columns, same value formats: start time as
`Timestamp`, nanosecond `Duration`, lowercase hex ids with '' for no parent, the
collector's SpanKind/StatusCode spellings, attribute maps of strings, and the
scope name copied into SpanAttributes as `otel.scope.name`.

Inserts are coalesced: at most one a second (MIN_INSERT_INTERVAL_SECONDS), whatever
the export rate. Each insert carries a fixed cost that no row count repays for small
batches (on the embedded engine ~50-80 ms of CPU: otel_traces and every materialized
view write parts), so under load the rows of several exports go in as one insert.

Rows that cannot be written (ClickHouse down) stay in a bounded buffer and are
retried every few seconds; only when the buffer is full are the oldest dropped, and
counted.
"""

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from bff.clickhouse import ClickHouseStore, StoreError

log = logging.getLogger("bff.telemetry")

TRACES_TABLE = "otel.otel_traces"
COLUMNS = (
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
)
# The spellings of the collector's traceutil (contrib >= 0.100).
SPAN_KINDS = {
    SpanKind.INTERNAL: "Internal",
    SpanKind.SERVER: "Server",
    SpanKind.CLIENT: "Client",
    SpanKind.PRODUCER: "Producer",
    SpanKind.CONSUMER: "Consumer",
}
STATUS_CODES = {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}
RETRY_INTERVAL_SECONDS = 5.0
MIN_INSERT_INTERVAL_SECONDS = 1.0


class ExportState(BaseModel):
    pending: int
    dropped: int
    last_error: str | None


def _string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return json.dumps(list(value))
    return str(value)


def string_map(attributes: Any) -> dict[str, str]:
    return {key: _string(value) for key, value in (attributes or {}).items()}


def scoped_attributes(attributes: Any, scope: InstrumentationScope | None) -> dict[str, str]:
    """A span's attributes as strings, with its scope's name and version (as the collector copies them)."""
    strings = string_map(attributes)
    if scope is not None and scope.name:
        strings["otel.scope.name"] = scope.name
    if scope is not None and scope.version:
        strings["otel.scope.version"] = scope.version
    return strings


def plain_row(
    start: int,
    trace_id: int,
    span_id: int,
    parent_span_id: int | None,
    trace_state: str,
    name: str,
    kind: SpanKind,
    resource: dict[str, str],
    scope: InstrumentationScope | None,
    attributes: dict[str, str],
    end: int,
    status: StatusCode,
) -> tuple[Any, ...]:
    """An otel_traces row without events or links, in COLUMNS order: span_row's, or that of a
    refusal recorded without an SDK span (tracing.Telemetry.record_refused)."""
    return (
        start,  # DateTime64(9) takes integer nanoseconds
        format(trace_id, "032x"),
        format(span_id, "016x"),
        format(parent_span_id, "016x") if parent_span_id is not None else "",
        trace_state,
        name,
        SPAN_KINDS.get(kind, "Unspecified"),
        resource.get("service.name", ""),
        resource,
        scope.name if scope else "",
        (scope.version or "") if scope else "",
        attributes,
        max(0, end - start),
        STATUS_CODES.get(status, "Unset"),
        "",
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )


def span_row(span: ReadableSpan) -> tuple[Any, ...]:
    """One otel_traces row, in COLUMNS order."""
    context = span.get_span_context()
    assert context is not None  # every SDK span has one
    scope = span.instrumentation_scope
    attributes = scoped_attributes(span.attributes, scope)
    resource = string_map(span.resource.attributes)
    start = span.start_time or 0
    return (
        start,  # DateTime64(9) takes integer nanoseconds
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        format(span.parent.span_id, "016x") if span.parent is not None else "",
        context.trace_state.to_header() if context.trace_state else "",
        span.name,
        SPAN_KINDS.get(span.kind, "Unspecified"),
        resource.get("service.name", ""),
        resource,
        scope.name if scope else "",
        (scope.version or "") if scope else "",
        attributes,
        max(0, (span.end_time or start) - start),
        STATUS_CODES.get(span.status.status_code, "Unset"),
        span.status.description or "",
        [event.timestamp for event in span.events],
        [event.name for event in span.events],
        [string_map(event.attributes) for event in span.events],
        [format(link.context.trace_id, "032x") for link in span.links],
        [format(link.context.span_id, "016x") for link in span.links],
        [link.context.trace_state.to_header() if link.context.trace_state else "" for link in span.links],
        [string_map(link.attributes) for link in span.links],
    )


class ClickHouseSpanExporter(SpanExporter):
    def __init__(self, store: ClickHouseStore, max_pending: int, on_delivered: Callable[[list[str]], None]):
        self._store = store
        self._on_delivered = on_delivered  # told the span ids of every batch that reached ClickHouse
        self._max_pending = max_pending
        self._pending: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._dropped = 0
        self._last_error: str | None = None
        self._last_insert = float("-inf")  # time.monotonic() of the last insert attempt
        self._stop = threading.Event()
        self._retrier = threading.Thread(target=self._retry_loop, name="clickhouse-span-retry", daemon=True)
        self._retrier.start()

    def state(self) -> ExportState:
        with self._lock:
            return ExportState(pending=len(self._pending), dropped=self._dropped, last_error=self._last_error)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [span_row(span) for span in spans]
        with self._lock:
            self._pending.extend(rows)
            self._trim()
            due = self._last_error is None and time.monotonic() - self._last_insert >= MIN_INSERT_INTERVAL_SECONDS
        if due:
            self._flush()
        return SpanExportResult.SUCCESS  # the rest goes with the next insert (the retry thread)

    def add_row(self, row: tuple[Any, ...]) -> None:
        """A row built without an SDK span (a refusal): it goes with the next coalesced insert."""
        with self._lock:
            self._pending.append(row)
            self._trim()

    def _trim(self) -> None:
        """Drops the oldest rows beyond the bound; the caller holds the lock."""
        overflow = len(self._pending) - self._max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self._dropped += overflow
            log.error("span buffer full: dropped %d spans (%d in all)", overflow, self._dropped)

    def _flush(self) -> bool:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            if batch:
                self._last_insert = time.monotonic()
        if not batch:
            return True
        try:
            self._store.insert_columns(TRACES_TABLE, COLUMNS, list(zip(*batch, strict=True)))
        except StoreError as exc:
            with self._lock:
                self._pending.extendleft(reversed(batch))
                self._trim()
                if self._last_error is None:
                    log.warning("ClickHouse unavailable (%s): %d spans kept for retry", exc, len(self._pending))
                self._last_error = str(exc)
            return False
        with self._lock:
            if self._last_error is not None:
                log.info("ClickHouse reachable again: spans delivered")
            self._last_error = None
        self._on_delivered([row[2] for row in batch])  # SpanId column
        return True

    def _retry_loop(self) -> None:
        """Inserts what exports left pending: coalesced rows each interval, undelivered ones every RETRY_INTERVAL_SECONDS."""
        while not self._stop.wait(MIN_INSERT_INTERVAL_SECONDS / 2):
            with self._lock:
                wait = RETRY_INTERVAL_SECONDS if self._last_error is not None else MIN_INSERT_INTERVAL_SECONDS
                due = bool(self._pending) and time.monotonic() - self._last_insert >= wait
            if due:
                self._flush()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._flush()

    def shutdown(self) -> None:
        self._stop.set()
        if not self._flush():
            log.error("shutting down with %d undelivered spans", self.state().pending)
