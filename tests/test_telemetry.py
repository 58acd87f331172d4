"""Spans: the exporter's rows match the collector's format; one span per request; outages."""

import time
import uuid
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from bff.clickhouse import ClickHouseStore, StoreUnavailable
from bff.telemetry.clickhouse_exporter import (
    COLUMNS,
    TRACES_TABLE,
    ClickHouseSpanExporter,
    span_row,
)
from conftest import ROOT, Bff, BffFactory, chat_body
from support.otlp_receiver import OtlpReceiver
from support.otlp_receiver import attributes as otlp_attributes
from support.servers import free_port
from support.spans import spans_for

# The contrib exporter's insert statement, in its column order (traces_insert.sql).
COLLECTOR_COLUMNS = (
    "Timestamp TraceId SpanId ParentSpanId TraceState SpanName SpanKind ServiceName ResourceAttributes ScopeName "
    "ScopeVersion SpanAttributes Duration StatusCode StatusMessage Events.Timestamp Events.Name Events.Attributes "
    "Links.TraceId Links.SpanId Links.TraceState Links.Attributes"
).split()


class _Collect(ClickHouseSpanExporter):
    """Keeps the finished spans instead of writing them (only to build rows in the mapping test)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.spans.extend(spans)

    def shutdown(self) -> None:
        return None


def _sample_span() -> Any:
    collected = _Collect()
    provider = TracerProvider(resource=Resource.create({"service.name": "llm-bff", "host.name": "h1"}))
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("llm_bff", "0.1.0")
    with tracer.start_as_current_span("parent") as parent:
        link = Link(parent.get_span_context(), {"why": "retry"})
        with tracer.start_as_current_span("gateway chat", kind=SpanKind.SERVER, links=[link]) as span:
            span.set_attributes({"gateway.operation": "chat", "gen_ai.usage.input_tokens": 11, "gateway.stream": "true",
                                 "flag": True, "ratio": 0.5, "tags": ["a", "b"]})
            span.add_event("first_token", {"n": 1})
            span.set_status(Status(StatusCode.ERROR, "upstream failed"))
    return next(s for s in collected.spans if s.name == "gateway chat")


def test_row_mapping_matches_the_collector_format(clickhouse_url: str) -> None:
    span = _sample_span()
    assert list(COLUMNS) == COLLECTOR_COLUMNS
    row = dict(zip(COLUMNS, span_row(span), strict=True))
    assert row["Timestamp"] == span.start_time and row["Duration"] == span.end_time - span.start_time
    assert row["TraceId"] == format(span.context.trace_id, "032x") and len(row["TraceId"]) == 32
    assert row["SpanId"] == format(span.context.span_id, "016x")
    assert row["ParentSpanId"] == format(span.parent.span_id, "016x")
    assert (row["SpanKind"], row["StatusCode"], row["StatusMessage"]) == ("Server", "Error", "upstream failed")
    assert row["ServiceName"] == "llm-bff" and row["ResourceAttributes"]["host.name"] == "h1"
    assert (row["ScopeName"], row["ScopeVersion"]) == ("llm_bff", "0.1.0")
    attributes = row["SpanAttributes"]
    assert attributes["otel.scope.name"] == "llm_bff" and attributes["otel.scope.version"] == "0.1.0"
    assert attributes["gen_ai.usage.input_tokens"] == "11" and attributes["flag"] == "true"
    assert attributes["ratio"] == "0.5" and attributes["tags"] == '["a", "b"]'
    assert all(isinstance(value, str) for value in attributes.values())
    assert row["Events.Name"] == ["first_token"] and row["Events.Attributes"] == [{"n": "1"}]
    assert row["Links.SpanId"] == [row["ParentSpanId"]] and row["Links.Attributes"] == [{"why": "retry"}]

    # The same row goes into the real table and reads back in the collector's value formats.
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    store.insert_columns(TRACES_TABLE, COLUMNS, list(zip(span_row(span), strict=True)))
    stored = store.query(
        "SELECT toUnixTimestamp64Nano(Timestamp) AS ns, Duration, SpanKind, StatusCode, SpanAttributes, Events.Name AS events "
        "FROM otel.otel_traces WHERE SpanId = {id:String}",
        {"id": row["SpanId"]},
    )
    assert stored == [
        {"ns": span.start_time, "Duration": row["Duration"], "SpanKind": "Server", "StatusCode": "Error",
         "SpanAttributes": attributes, "events": ["first_token"]}
    ]
    typed = store.query("SELECT Operation, InputTokens, Stream FROM otel.gateway_requests WHERE SpanId = {id:String}", {"id": row["SpanId"]})
    assert typed == [{"Operation": "chat", "InputTokens": 11, "Stream": True}]


def test_one_span_per_request_joining_the_callers_trace(bff: Bff, user_token: str, clickhouse_url: str) -> None:
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    secret = "do-not-store-this-prompt-4821"
    cases = {
        "non-streaming": (chat_body(messages=[{"role": "user", "content": secret}]), 200),
        "streaming": (chat_body(stream=True, messages=[{"role": "user", "content": secret}]), 200),
        "refused": (chat_body("fake-premium"), 403),
    }
    for name, (body, status) in cases.items():
        request_id = f"span-{name}-{uuid.uuid4().hex[:6]}"
        headers = {"x-request-id": request_id, "traceparent": f"00-{trace_id}-{parent_id}-01", "X-LLM-Context": "rag.answer"}
        with bff.client(user_token, headers=headers) as client:
            assert client.post("/v1/chat/completions", json=body).status_code == status
        spans = spans_for(store, request_id)
        assert len(spans) == 1, name
        span = spans[0]
        assert span["TraceId"] == trace_id and span["ParentSpanId"] == parent_id and span["SpanName"] == "gateway chat"
        attributes = span["SpanAttributes"]
        assert attributes["enduser.id"] == "user-1" and attributes["gateway.user.role"] == "user"
        assert attributes["gateway.auth.method"] == "session_token" and attributes["gateway.context"] == "rag.answer"
        assert attributes["http.response.status_code"] == str(status)
        assert secret not in str(attributes) and "Hello from the fake provider" not in str(attributes)
        if status == 200:
            assert attributes["gen_ai.response.model"] == "fake-mini" and attributes["gen_ai.provider.name"] == "openai"
            assert attributes["gateway.cost.usd"] and int(attributes["gen_ai.usage.output_tokens"]) > 0
            assert attributes["gateway.stream"] == ("true" if name == "streaming" else "false")
            assert (float(attributes["gateway.ttft_ms"]) > 0) if name == "streaming" else "gateway.ttft_ms" not in attributes
        else:
            assert attributes["error.type"] == "model_not_allowed"


def test_invalid_context_tag_is_refused(bff: Bff, user_token: str) -> None:
    with bff.client(user_token, headers={"X-LLM-Context": "bad tag with spaces"}) as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code == 400 and "X-LLM-Context" in answer.json()["error"]["message"]


def test_clickhouse_down_chat_works_spans_buffered_and_drops_counted(bff_factory: BffFactory, user_token: str) -> None:
    bff = bff_factory(clickhouse_url=f"http://127.0.0.1:{free_port()}", span_buffer_max=3)
    with bff.client(user_token) as client:
        for _ in range(5):
            assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
        assert client.get("/api/usage/summary").status_code == 503
        deadline = time.monotonic() + 10
        while True:
            ready = client.get("/health/ready")
            spans = ready.json()["spans"]
            if spans["pending"] + spans["dropped"] >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["dependencies"]["clickhouse"]["status"] == "down"
    assert spans == {"pending": 3, "dropped": 2, "last_error": spans["last_error"]} and spans["last_error"]


class _FlakyStore(ClickHouseStore):
    """The real embedded store, refusing inserts while `down` is set (a ClickHouse outage)."""

    down = True

    def insert_columns(self, table, column_names, columns):  # type: ignore[no-untyped-def]
        if self.down:
            raise StoreUnavailable("ConnectionRefused")
        super().insert_columns(table, column_names, columns)


def test_buffered_spans_are_delivered_after_an_outage(clickhouse_url: str) -> None:
    store = _FlakyStore(clickhouse_url, ROOT / "config" / "clickhouse")
    delivered: list[str] = []
    exporter = ClickHouseSpanExporter(store, max_pending=100, on_delivered=delivered.extend)
    span = _sample_span()
    exporter.export([span])
    assert exporter.state().pending == 1 and exporter.state().last_error == "ConnectionRefused"
    store.down = False
    assert exporter.force_flush()
    assert exporter.state().pending == 0 and exporter.state().dropped == 0
    assert delivered == [format(span.context.span_id, "016x")]
    assert store.query("SELECT count() AS n FROM otel.otel_traces WHERE SpanId = {id:String}", {"id": delivered[0]}) == [{"n": 1}]
    exporter.shutdown()


def test_spans_go_to_an_otlp_collector_when_configured(bff_factory: BffFactory, user_token: str) -> None:
    """A loopback OTLP/HTTP receiver stands in for the collector and decodes what arrives."""
    collector = OtlpReceiver()
    collector.server.start()
    try:
        bff = bff_factory(otel_exporter_otlp_endpoint=collector.url)
        request_id = f"otlp-{uuid.uuid4().hex[:6]}"
        with bff.client(user_token, headers={"x-request-id": request_id}) as client:
            assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
            assert client.get("/health/ready").json()["spans"] is None  # no ClickHouse exporter in this mode
        found = collector.wait_for(lambda _, span: otlp_attributes(span).get("gateway.request_id") == request_id)
        spans = [span for _, span in found]
    finally:
        collector.server.stop()
    assert len(spans) == 1
    attributes = {a.key: a.value for a in spans[0].attributes}
    assert attributes["enduser.id"].string_value == "user-1"
    assert attributes["gen_ai.response.model"].string_value == "fake-mini"


def test_refusals_in_admission_are_recorded_like_spans(
    bff_factory: BffFactory, user_token: str, clickhouse_url: str, tmp_path: Path
) -> None:
    """A request refused before its span started (credentials, rate limit) is written as a plain row
    (Telemetry.record_refused): one row with what an SDK span's row has, in the caller's trace."""
    from test_rate_limits import policy_with_limits

    bff = bff_factory(policy_file=policy_with_limits(tmp_path, {"requests_per_minute": 1}))
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    statuses: dict[str, int] = {}
    if 60 - time.time() % 60 < 5:  # both requests in one minute's window
        time.sleep(60 - time.time() % 60 + 0.1)
    for name, token in (("admitted", user_token), ("limited", user_token), ("bad-token", "not-a-token")):
        request_id = f"refusal-{name}-{uuid.uuid4().hex[:6]}"
        headers = {"x-request-id": request_id, "traceparent": f"00-{trace_id}-{parent_id}-01"}
        with bff.client(token, headers=headers) as client:
            statuses[request_id] = client.post("/v1/chat/completions", json=chat_body()).status_code
    assert sorted(statuses.values()) == [200, 401, 429]
    rows = {}
    for request_id in statuses:
        deadline = time.monotonic() + 10
        while True:
            found = store.query(
                "SELECT TraceId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, "
                "ScopeVersion, SpanAttributes, Duration, StatusCode FROM otel.otel_traces "
                "WHERE SpanAttributes['gateway.request_id'] = {id:String}",
                {"id": request_id},
            )
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(found) == 1, request_id
        rows[statuses[request_id]] = found[0]
    admitted = rows[200]
    for status in (401, 429):
        row = rows[status]
        for column in ("TraceId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName", "ResourceAttributes",
                       "ScopeName", "ScopeVersion", "StatusCode"):
            assert row[column] == admitted[column], (status, column)
        assert row["TraceId"] == trace_id and row["ParentSpanId"] == parent_id and row["Duration"] > 0
        attributes = row["SpanAttributes"]
        assert attributes["gateway.operation"] == attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gateway.route"] == "/v1/chat/completions" and attributes["otel.scope.name"] == "llm_bff"
        assert attributes["http.response.status_code"] == str(status) and attributes["gateway.outcome"] == "refused"
    assert rows[429]["SpanAttributes"]["error.type"] == "rate_limit_exceeded"
    assert rows[429]["SpanAttributes"]["enduser.id"] == "user-1"
    assert rows[401]["SpanAttributes"]["error.type"]
