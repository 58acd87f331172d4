"""Reads the gateway's spans back from the embedded ClickHouse the test BFFs write to."""

import time
from typing import Any

from bff.clickhouse import ClickHouseStore


def spans_for(store: ClickHouseStore, request_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The otel_traces rows of one request (by x-request-id), waiting for the exporter."""
    deadline = time.monotonic() + timeout
    while True:
        rows = store.query(
            "SELECT TraceId, ParentSpanId, SpanName, Duration, SpanAttributes FROM otel.otel_traces "
            "WHERE SpanAttributes['gateway.request_id'] = {id:String}",
            {"id": request_id},
        )
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)
