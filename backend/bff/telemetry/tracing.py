"""The tracer provider of one BFF process and the one span of each gateway request."""

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bff.clickhouse import ClickHouseStore
from bff.settings import Settings
from bff.telemetry import attributes as attr
from bff.telemetry.clickhouse_exporter import (
    ClickHouseSpanExporter,
    ExportState,
    plain_row,
    scoped_attributes,
    string_map,
)

log = logging.getLogger("bff.telemetry")

SCOPE = "llm_bff"
SCOPE_VERSION = "0.1.0"
_PROPAGATOR = TraceContextTextMapPropagator()
BATCH_QUEUE_MIN = 8192  # the SDK's queue in front of the exporter, which keeps its own bounded buffer
# ClickHouse wants few large inserts: a 512-span insert costs ~87 ms, 100k spans ~1.5 s (scripts/bench_usage.py).
EXPORT_BATCH_MAX = 4096


class Telemetry:
    def __init__(self, settings: Settings, store: ClickHouseStore, on_delivered: Callable[[list[str]], None]):
        self.provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
        self.clickhouse_exporter: ClickHouseSpanExporter | None = None
        exporter: SpanExporter
        if settings.otel_exporter_otlp_endpoint:
            # The base URL as in OTEL_EXPORTER_OTLP_ENDPOINT; headers etc. still come from OTEL_EXPORTER_OTLP_*.
            exporter = OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces")
        else:
            exporter = self.clickhouse_exporter = ClickHouseSpanExporter(
                store, settings.span_buffer_max, on_delivered
            )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=max(settings.span_buffer_max, BATCH_QUEUE_MIN),
                max_export_batch_size=EXPORT_BATCH_MAX,
                schedule_delay_millis=settings.span_export_interval_ms,
            )
        )
        self._tracer = self.provider.get_tracer(SCOPE, SCOPE_VERSION)
        self._scope = InstrumentationScope(SCOPE, SCOPE_VERSION)
        self._resource = string_map(self.provider.resource.attributes)

    def start(self, operation: str, route: str, headers: Mapping[str, str], start_time_ns: int) -> Span:
        """The span of one gateway operation; `route` is the path template (no prefix, no ids)."""
        span = self._tracer.start_span(
            f"gateway {operation}",
            context=extract(headers) if "traceparent" in headers else None,  # join the caller's trace
            kind=SpanKind.SERVER,
            attributes={attr.OPERATION: operation, attr.OPERATION_NAME: operation, attr.ROUTE: route},
            start_time=start_time_ns,
        )
        assert isinstance(span, Span)
        return span

    def record_refused(
        self, operation: str, route: str, headers: Mapping[str, str], start_time_ns: int, attributes: dict[str, Any], status: int
    ) -> None:
        """The one span of a request refused before its span was started (admission: credentials,
        role, budget, rate limits): the very row `start` + `finish` would give, built without the
        SDK's span, processor and export steps, which cost a flood of refusals more than the
        refusal itself (scripts/bench_flood.py). With an OTLP exporter: an SDK span as usual."""
        if self.clickhouse_exporter is None:
            self.finish(self.start(operation, route, headers, start_time_ns), attributes, status)
            return
        trace_id, parent_id, trace_state = random.getrandbits(128), None, ""
        if "traceparent" in headers:  # join the caller's trace, as `start` does
            parent = get_current_span(extract(headers)).get_span_context()
            if parent.is_valid:
                trace_id, parent_id = parent.trace_id, parent.span_id
                trace_state = parent.trace_state.to_header() if parent.trace_state else ""
        span_id = random.getrandbits(64) or 1  # the SDK's RandomIdGenerator; 0 is invalid
        given = {key: value for key, value in attributes.items() if value is not None}
        values = {attr.OPERATION: operation, attr.OPERATION_NAME: operation, attr.ROUTE: route, **given}
        row = plain_row(
            start_time_ns, trace_id, span_id, parent_id, trace_state, f"gateway {operation}", SpanKind.SERVER,
            self._resource, self._scope, scoped_attributes(values, self._scope), time.time_ns(),
            StatusCode.ERROR if status >= 500 else StatusCode.UNSET,
        )
        self.clickhouse_exporter.add_row(row)

    @staticmethod
    def finish(span: Span, attributes: dict[str, Any], status: int) -> None:
        span.set_attributes({key: value for key, value in attributes.items() if value is not None})
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    @staticmethod
    def span_id(span: Span) -> str:
        return format(span.get_span_context().span_id, "016x")

    @staticmethod
    def traceparent(span: Span | None) -> dict[str, str]:
        """Headers that make LiteLLM's spans children of the gateway span."""
        carrier: dict[str, str] = {}
        if span is not None:
            _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        return carrier

    def export_state(self) -> ExportState | None:
        return self.clickhouse_exporter.state() if self.clickhouse_exporter else None

    def flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()
