"""A loopback OTLP/HTTP trace receiver standing in for the OTEL collector: it decodes what arrives."""

import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from support.servers import ThreadServer


class OtlpReceiver:
    def __init__(self) -> None:
        self.received: list[ExportTraceServiceRequest] = []
        self.server = ThreadServer(Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])]))

    async def _traces(self, request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        self.received.append(message)
        return Response(b"", media_type="application/x-protobuf")

    @property
    def url(self) -> str:
        return self.server.url

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) for every span received so far."""
        found = []
        for message in list(self.received):
            for resource in message.resource_spans:
                service = next((a.value.string_value for a in resource.resource.attributes if a.key == "service.name"), "")
                found.extend((service, span) for scope in resource.scope_spans for span in scope.spans)
        return found

    def wait_for(self, predicate: Any, timeout: float = 10) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            matching = [(service, span) for service, span in self.spans() if predicate(service, span)]
            if matching or time.monotonic() > deadline:
                return matching
            time.sleep(0.1)


def attributes(span: Any) -> dict[str, str]:
    """A span's attributes as plain strings, whatever their OTLP value type."""
    return {a.key: str(getattr(a.value, a.value.WhichOneof("value") or "string_value")) for a in span.attributes}
