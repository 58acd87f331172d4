"""The request pipeline: every LLM call takes these steps, in this order.

    1. admit      pipeline/admission.py  the route's Operation: span, authenticate, role,
                                         permission, budget (before the body is read)
    2. body       pipeline/bodies.py     bounded JSON, validated (chat: pipeline/chat_body.py)
    3. authorize  policy/                the model and every fallback target it could reach
    4. upstream   pipeline/chat_body.py  exactly what was validated + user, usage, fallbacks
    5. forward    upstream/litellm.py    pure I/O; streams relayed by pipeline/stream_relay.py
    6. account    pipeline/accounting.py tokens, cost and outcome from LiteLLM's figures
    7. record     pipeline/context.py    once the response is sent: budget charge, the one span

Routes are thin adapters: they declare their Operation and body, call one function
here, and shape the answer.
"""

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from bff.errors import bad_gateway, bad_request, client_closed
from bff.pipeline.accounting import Estimator, account_answer, account_stream, note_served
from bff.pipeline.call import Call, Outcome
from bff.pipeline.chat_body import ChatCompletionRequest
from bff.pipeline.connection import ClientDisconnected, while_connected
from bff.pipeline.stream_relay import PassThroughStream, StreamRelay, stream_response
from bff.policy.models import authorize_model
from bff.services import Services
from bff.telemetry import attributes as attr
from bff.telemetry.tracing import Telemetry
from bff.upstream.errors import error_from_status, error_from_transport, read_and_close
from bff.upstream.litellm import CHAT_PATH

log = logging.getLogger("bff.gateway")

CONTEXT_HEADER = "x-llm-context"
_CONTEXT = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
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


@dataclass
class ChatAnswer:
    """A non-streaming chat answer as LiteLLM gave it."""

    upstream: httpx.Response
    answer: dict[str, Any]

    def response(self) -> Response:
        return Response(self.upstream.content, media_type="application/json", headers=passed_headers(self.upstream))


def context_tag(headers: Headers) -> str | None:
    context = headers.get(CONTEXT_HEADER)
    if context is not None and not _CONTEXT.match(context):
        raise bad_request("invalid header 'X-LLM-Context': 1-64 characters of letters, digits and . _ : -")
    return context


def passed_headers(upstream: httpx.Response) -> dict[str, str]:
    return {name: upstream.headers[name] for name in PASSED_RESPONSE_HEADERS if name in upstream.headers}


async def chat(
    services: Services, call: Call, request: Request, body: ChatCompletionRequest, default_context: str | None = None
) -> ChatAnswer | PassThroughStream:
    """Steps 3-6 of a chat call; the caller is admitted and the body validated."""
    headers = request.headers
    principal = call.caller
    assert principal.user_id is not None  # the chat permission needs a user
    call.context = context_tag(headers) or default_context
    call.model, call.stream = body.model, body.stream
    catalog = await services.catalog.get()
    entry = authorize_model(services.access, catalog, principal, body.model)
    controls = services.fallbacks.request_controls(principal, entry, catalog)
    payload = json.dumps(body.upstream(principal.user_id, controls), separators=(",", ":")).encode()
    upstream_headers = _upstream_headers(headers, call)
    try:
        upstream = await while_connected(
            request.receive, services.litellm.post(CHAT_PATH, payload, upstream_headers, stream=body.stream)
        )
    except httpx.HTTPError as exc:
        raise error_from_transport(exc) from None
    except ClientDisconnected:
        # Nobody will read an answer; LiteLLM may have sent the prompt on: charge its estimate.
        call.fail("client_disconnected", Outcome.client_disconnected)
        await Estimator(services.litellm).charge(call, body.messages, "")
        raise client_closed() from None
    if upstream.status_code != 200:
        content = await read_and_close(upstream) if body.stream else upstream.content
        raise error_from_status(upstream.status_code, content, upstream.headers)
    note_served(call, upstream.headers, catalog)
    if services.fallbacks.served_outside(principal, call.model_group or "", catalog):
        # LiteLLM ignored the fallback lists: a bug in the gateway's assumptions, alarmed loudly
        call.extra_attributes[attr.SERVED_OUTSIDE_POLICY] = "true"
        log.error(
            "POLICY VIOLATION: request %s of user %s (role %s) asked for %s and was served by %s",
            call.request_id, principal.user_id, principal.role, call.model, call.model_group,
        )
    if body.stream:
        return _relay(services, call, upstream, body.messages)
    return ChatAnswer(upstream, _answer(call, upstream))


def _answer(call: Call, upstream: httpx.Response) -> dict[str, Any]:
    try:
        answer = upstream.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        account_answer(call, {}, upstream.headers)  # LiteLLM's cost header still bills what it spent
        call.fail("bad_gateway", Outcome.upstream_failed)
        log.warning("LiteLLM answered 200 with a body that is not a JSON object; answering 502")
        raise bad_gateway()
    account_answer(call, answer, upstream.headers)
    return answer


def _relay(services: Services, call: Call, upstream: httpx.Response, messages: list[dict[str, Any]]) -> PassThroughStream:
    def first_byte() -> None:
        call.ttft_ms = call.elapsed_ms()

    relay = StreamRelay(upstream, first_byte, services.settings.stream_usage_grace_seconds)
    estimator = Estimator(services.litellm)

    async def settle() -> None:
        await relay.finish()
        await account_stream(call, relay, estimator, messages)

    return stream_response(relay, passed_headers(upstream), BackgroundTask(settle))


def _upstream_headers(headers: Headers, call: Call) -> dict[str, str]:
    upstream = {"content-type": "application/json", "x-request-id": call.request_id}
    for name in FORWARDED_REQUEST_HEADERS:
        if value := headers.get(name):
            upstream[name] = value
    # The gateway span is the parent of LiteLLM's work (it already joined the caller's trace).
    upstream.update(Telemetry.traceparent(call.span))
    return upstream
