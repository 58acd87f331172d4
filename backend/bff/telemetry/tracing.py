"""The tracer provider of one BFF process and the one span of each gateway request."""

import logging
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bff.clickhouse import ClickHouseStore
from bff.settings import Settings
from bff.telemetry import attributes as attr
from bff.telemetry.clickhouse_exporter import ClickHouseSpanExporter, ExportState

log = logging.getLogger("bff.telemetry")

SCOPE = "llm_bff"
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
        self._tracer = self.provider.get_tracer(SCOPE, "0.1.0")

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
