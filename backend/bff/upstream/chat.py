"""Forwards chat completions to LiteLLM: non-streaming, and streaming byte for byte."""

import json
import logging
from collections.abc import AsyncIterator
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
from bff.request_log import RequestLogFields
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


def upstream_headers(request: Request, request_id: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "x-request-id": request_id}
    for name in FORWARDED_REQUEST_HEADERS:
        if value := request.headers.get(name):
            headers[name] = value
    return headers


def passed_headers(upstream: httpx.Response) -> dict[str, str]:
    return {name: upstream.headers[name] for name in PASSED_RESPONSE_HEADERS if name in upstream.headers}


def record_usage(fields: RequestLogFields, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    parsed = Usage.model_validate(usage)
    fields.prompt_tokens, fields.completion_tokens, fields.total_tokens = (
        parsed.prompt_tokens,
        parsed.completion_tokens,
        parsed.total_tokens,
    )


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


async def complete(client: LiteLLMClient, body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, dict[str, Any]]:
    response = await client.chat(body, headers)
    try:
        parsed = response.json()
    except ValueError:
        raise bad_gateway() from None
    if not isinstance(parsed, dict):
        raise bad_gateway()
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
                try:
                    await self.stream_response(send)
                except OSError:
                    pass  # the client is gone; the disconnect watcher ends the group
                group.cancel_scope.cancel()

            group.start_soon(stream_then_stop)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()
        if self.background is not None:
            await self.background()


async def open_stream(
    client: LiteLLMClient, body: bytes, headers: dict[str, str], fields: RequestLogFields
) -> PassThroughStream:
    upstream = await client.open_chat_stream(body, headers)  # errors before the first byte are plain JSON errors

    async def relay() -> AsyncIterator[bytes]:
        tail = b""
        try:
            async for chunk in upstream.aiter_raw():
                tail = (tail + chunk)[-STREAM_TAIL_BYTES:]
                yield chunk
        except httpx.HTTPError as exc:
            log.warning("stream from LiteLLM failed mid-way: %s", type(exc).__name__)
            yield stream_error_event(error_from_transport(exc))
        finally:
            record_usage(fields, usage_from_stream_tail(tail))
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
