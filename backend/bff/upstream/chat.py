"""Forwards chat completions to LiteLLM: non-streaming, and streaming byte for byte."""

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from bff.errors import bad_gateway
from bff.identity.principal import Principal
from bff.request_context import RequestRecord
from bff.telemetry.tracing import Telemetry
from bff.upstream.catalog import Catalog
from bff.upstream.errors import error_from_transport, stream_error_event
from bff.upstream.litellm import LiteLLMClient

log = logging.getLogger("bff.chat")

# Caller headers that travel to LiteLLM. Everything else is dropped, including
# x-litellm-customer-id / x-litellm-end-user-id, so nobody spends as someone else.
FORWARDED_REQUEST_HEADERS = ("traceparent", "tracestate")
# LiteLLM response headers a caller may see; api base, key spend and version stay inside.
PASSED_RESPONSE_HEADERS = (
    "x-litellm-call-id",
    "x-litellm-model-group",
    "x-litellm-model-id",
    "x-litellm-attempted-retries",
    "x-litellm-attempted-fallbacks",
    "x-litellm-response-cost",
    "x-litellm-response-duration-ms",
)
STREAM_TAIL_BYTES = 16 * 1024


class ChatRequest(BaseModel):
    """The fields the gateway relies on; every other OpenAI field passes through unchanged."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def upstream_body(payload: dict[str, Any], principal: Principal, stream: bool) -> bytes:
    body = dict(payload)
    body["user"] = principal.user_id
    if stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def upstream_headers(request: Request, record: RequestRecord) -> dict[str, str]:
    headers = {"content-type": "application/json", "x-request-id": record.request_id}
    for name in FORWARDED_REQUEST_HEADERS:
        if value := request.headers.get(name):
            headers[name] = value
    # The gateway span is the parent of LiteLLM's work (it already joined the caller's trace).
    headers.update(Telemetry.traceparent(record.span))
    return headers


def passed_headers(upstream: httpx.Response) -> dict[str, str]:
    return {name: upstream.headers[name] for name in PASSED_RESPONSE_HEADERS if name in upstream.headers}


def _int_header(upstream: httpx.Response, name: str) -> int | None:
    value = upstream.headers.get(name, "")
    return int(value) if value.isdigit() else None


def note_served(record: RequestRecord, upstream: httpx.Response, catalog: Catalog) -> None:
    """What LiteLLM says actually served the request (after retries and fallbacks)."""
    served = upstream.headers.get("x-litellm-model-group") or record.model or ""
    entry = catalog.get(served)
    record.model_group = entry.group if entry else served  # an alias is recorded as its group
    record.deployment_id = upstream.headers.get("x-litellm-model-id")
    record.provider = catalog.provider_by_deployment.get(record.deployment_id or "", entry.provider if entry else None)
    record.retries = _int_header(upstream, "x-litellm-attempted-retries")
    record.fallbacks = _int_header(upstream, "x-litellm-attempted-fallbacks")


def record_usage(record: RequestRecord, usage: dict[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    parsed = Usage.model_validate(usage)
    record.prompt_tokens = parsed.prompt_tokens
    record.completion_tokens = parsed.completion_tokens
    record.total_tokens = parsed.total_tokens
    return parsed


def decimal_cost(value: str | float | None) -> Decimal | None:
    """Exact decimal from LiteLLM's float text (e.g. '2.4999999999999998e-05')."""
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def stream_cost(usage: Usage, catalog: Catalog, record: RequestRecord) -> Decimal | None:
    """LiteLLM sends no cost header on streams: tokens x the prices from /model/info."""
    prices = catalog.prices_by_deployment.get(record.deployment_id or "")
    if prices is None:
        entry = catalog.get(record.model_group or "")
        prices = (entry.input_cost_per_token, entry.output_cost_per_token) if entry else (None, None)
    input_price, output_price = (decimal_cost(price) for price in prices)
    if input_price is None or output_price is None:
        return None
    return input_price * usage.prompt_tokens + output_price * usage.completion_tokens


def usage_from_stream_tail(tail: bytes) -> dict[str, Any] | None:
    """The last SSE event carrying `usage` (LiteLLM sends it last with include_usage)."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            try:
                usage = json.loads(line[6:]).get("usage")
            except ValueError:
                continue
            if usage:
                return usage
    return None


async def complete(
    client: LiteLLMClient, body: bytes, headers: dict[str, str], record: RequestRecord, catalog: Catalog
) -> tuple[httpx.Response, dict[str, Any]]:
    response = await client.chat(body, headers)
    try:
        parsed = response.json()
    except ValueError:
        raise bad_gateway() from None
    if not isinstance(parsed, dict):
        raise bad_gateway()
    note_served(record, response, catalog)
    record_usage(record, parsed.get("usage"))
    record.cost_usd = decimal_cost(response.headers.get("x-litellm-response-cost"))
    return response, parsed


class PassThroughStream(StreamingResponse):
    """Streams as chunks arrive and stops as soon as the client goes away.

    Starlette only notices a disconnect on the next write; a slow or hung upstream
    would keep its request open. Watching for the disconnect cancels the
    upstream read at once, which closes the connection to LiteLLM.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream_then_stop() -> None:
                with contextlib.suppress(OSError):  # the client is gone; the disconnect watcher ends the group
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream_then_stop)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()
        if self.background is not None:
            await self.background()


async def open_stream(
    client: LiteLLMClient, body: bytes, headers: dict[str, str], record: RequestRecord, catalog: Catalog
) -> PassThroughStream:
    upstream = await client.open_chat_stream(body, headers)  # errors before the first byte are plain JSON errors
    note_served(record, upstream, catalog)

    def settle(tail: bytes) -> None:
        usage = record_usage(record, usage_from_stream_tail(tail))
        if usage is not None:
            record.cost_usd = stream_cost(usage, catalog, record)

    async def relay() -> AsyncIterator[bytes]:
        tail = b""
        try:
            async for chunk in upstream.aiter_raw():
                if record.ttft_ms is None:
                    record.ttft_ms = record.elapsed_ms()
                tail = (tail + chunk)[-STREAM_TAIL_BYTES:]
                yield chunk
        except httpx.HTTPError as exc:
            log.warning("stream from LiteLLM failed mid-way: %s", type(exc).__name__)
            yield stream_error_event(error_from_transport(exc))
        finally:
            settle(tail)
            await upstream.aclose()

    return PassThroughStream(
        relay(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **passed_headers(upstream)},
        # A disconnect can cancel the relay while it is parked at `yield`, where its
        # `finally` does not run; closing here as well guarantees LiteLLM sees the hang-up.
        background=BackgroundTask(upstream.aclose),
    )


def json_response(upstream: httpx.Response) -> Response:
    return Response(upstream.content, media_type="application/json", headers=passed_headers(upstream))
