"""The request pipeline: every LLM call takes these steps, in this order.

    1. admit      pipeline/admission.py  the route's Operation: authenticate, role, permission,
                                         budget, rate limits (before the body is read); then the
                                         span (a refusal here is written as its span row at once)
    2. body       pipeline/bodies.py     bounded JSON in bounded time, validated (pipeline/llm_bodies.py)
    3. authorize  policy/                the model: Open-WebUI task routing, an experiment's variant,
                                         the policy, past the budget its downgrade; every fallback
                                         target it could reach; the prompt's tokens per minute
    4. upstream   pipeline/llm_bodies.py  exactly what was validated + user, usage, fallbacks
    5. forward    upstream/litellm.py    pure I/O; streams relayed by pipeline/stream_relay.py
    6. account    pipeline/accounting.py tokens, cost and outcome from LiteLLM's figures; the cost
                                         counts in the budget before the answer goes out
    7. record     pipeline/context.py    once the response is sent: the slot freed and tokens
                                         settled, budget alerts, the one span

Routes are thin adapters: they declare their Operation and body, call one function
here, and shape the answer.
"""

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from bff.errors import ApiError, bad_gateway, bad_request, client_closed
from bff.pipeline.accounting import Estimator, account_answer, account_stream, decimal_cost, note_served
from bff.pipeline.admission import hold_early_retry
from bff.pipeline.call import Call, Outcome
from bff.pipeline.connection import ClientDisconnected, while_connected
from bff.pipeline.context import charge
from bff.pipeline.llm_bodies import ChatCompletionRequest, LiteLLMBody
from bff.pipeline.llm_operations import CHAT, MODE_ROUTES, LlmOperation
from bff.pipeline.stream_meter import BytesMeter, ChatMeter
from bff.pipeline.stream_relay import PassThroughStream, StreamRelay, stream_response
from bff.pipeline.uploads import Upload
from bff.policy.budgets import budget_refusal
from bff.policy.downgrade import DOWNGRADED_HEADER, costs_no_more, target_for
from bff.policy.experiments import EXPERIMENT_HEADER, VARIANT_HEADER
from bff.policy.models import authorize_model, may_use
from bff.policy.routing import TASK_NAME
from bff.services import Services
from bff.telemetry import attributes as attr
from bff.telemetry.tracing import Telemetry
from bff.upstream.catalog import Catalog, ModelEntry
from bff.upstream.errors import error_from_status, error_from_transport, read_and_close
from bff.upstream.litellm import LiteLLMResponse, UpstreamError

log = logging.getLogger("bff.gateway")

CONTEXT_HEADER = "x-llm-context"
_CONTEXT = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
# Open-WebUI connection headers (webui-integration/openwebui.env): {{TASK}} and {{MESSAGE_ID}}
OPENWEBUI_TASK_HEADER = "x-openwebui-task"
OPENWEBUI_MESSAGE_HEADER = "x-openwebui-message-id"
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
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
class Answer:
    """A non-streaming answer as LiteLLM gave it (JSON, or audio bytes)."""

    upstream: LiteLLMResponse
    answer: dict[str, Any]

    def response(self) -> Response:
        media_type = self.upstream.headers.get("content-type", "application/json")
        return Response(self.upstream.content, media_type=media_type, headers=passed_headers(self.upstream))


def context_tag(headers: Headers) -> str | None:
    context = headers.get(CONTEXT_HEADER)
    if context is not None and not _CONTEXT.match(context):
        raise bad_request("invalid header 'X-LLM-Context': 1-64 characters of letters, digits and . _ : -")
    return context


def passed_headers(upstream: LiteLLMResponse) -> dict[str, str]:
    return {name: upstream.headers[name] for name in PASSED_RESPONSE_HEADERS if name in upstream.headers}


async def forward(
    services: Services,
    call: Call,
    request: Request,
    operation: LlmOperation,
    body: LiteLLMBody,
    default_context: str | None = None,
    upload: Upload | None = None,
) -> Answer | PassThroughStream:
    """Steps 3-6 of an LLM call; the caller is admitted and the body validated.

    `upload` carries the file of a multipart operation (audio, image edits): the body's
    fields then travel as form fields beside it.
    """
    principal = call.caller
    assert principal.user_id is not None  # every LLM permission needs a user
    call.context = context_tag(request.headers) or default_context
    webui_task = None
    if principal.via_service_key:  # only Open-WebUI's backend holds a service key: its task and message ids
        webui_task = _header_id(request.headers, OPENWEBUI_TASK_HEADER, TASK_NAME)
        call.task = call.task or webui_task
        call.message_id = _header_id(request.headers, OPENWEBUI_MESSAGE_HEADER, _MESSAGE_ID)
    call.model, call.stream = body.model, body.streams
    catalog = await services.catalog.get()
    body = _openwebui_task_model(services, catalog, call, body, webui_task)
    body = _experiment_variant(services, catalog, call, body)
    entry = authorize_model(services.access, catalog, principal, body.model)
    if not operation.serves(entry.mode):
        route = MODE_ROUTES.get(entry.mode or "", "another route")
        raise bad_request(f"invalid field 'model': '{body.model}' is a {entry.mode} model; call it with {route}", "wrong_model_mode")
    if call.downgrade_to is not None:
        body, entry = _downgraded(services, catalog, call, operation, body, entry)
    try:
        await services.limits.reserve_tokens(call.rate_lease, body.prompt_for_estimate())
    except ApiError as refusal:  # tokens per minute
        await hold_early_retry(services, call, refusal)
        raise
    if call.rate_lease is not None:
        call.response_headers.update(call.rate_lease.headers)
    if upload is None:
        controls = services.fallbacks.request_controls(principal, entry, catalog)
    else:
        controls = services.fallbacks.form_controls(principal, entry, catalog)
    sent = body.upstream(principal.user_id, controls)
    headers = _upstream_headers(request.headers, call)
    streamed = body.streams or operation.meter is BytesMeter  # audio is relayed as it arrives
    if upload is None:
        post = services.litellm.post(operation.path, _json(sent), headers, stream=streamed)
    else:
        post = services.litellm.post_form(operation.path, _form_fields(sent), upload.files, headers)
    try:
        upstream = await while_connected(request.receive, post)
    except UpstreamError as exc:
        raise error_from_transport(exc) from None
    except ClientDisconnected:
        # Nobody will read an answer; LiteLLM may have sent the prompt on: charge its estimate.
        call.fail("client_disconnected", Outcome.client_disconnected)
        await Estimator(services.litellm).charge(call, body.prompt_for_estimate(), "")
        raise client_closed() from None
    if upstream.status_code != 200:
        content = await read_and_close(upstream) if streamed else upstream.content
        raise error_from_status(upstream.status_code, content, upstream.headers)
    note_served(call, upstream.headers, catalog)
    if services.fallbacks.served_outside(principal, call.model_group or "", catalog):
        # LiteLLM ignored the fallback lists: a bug in the gateway's assumptions, alarmed loudly
        call.extra_attributes[attr.SERVED_OUTSIDE_POLICY] = "true"
        log.error(
            "POLICY VIOLATION: request %s of user %s (role %s) asked for %s and was served by %s",
            call.request_id, principal.user_id, principal.role, call.model, call.model_group,
        )
    if streamed:
        return _relay(services, call, upstream, operation, body)
    answer = _answer(call, upstream)
    call.extra_attributes.update(operation.figures(body, answer))
    await charge(call, services.budgets)  # before the answer goes out: the next request sees it
    return Answer(upstream, answer)


def _header_id(headers: Headers, name: str, pattern: re.Pattern[str]) -> str | None:
    """An id Open-WebUI sends in a connection header (URL-quoted, empty when it has none)."""
    value = unquote(headers.get(name, "")).strip()
    if not value:
        return None
    if not pattern.match(value):
        raise bad_request(f"invalid header '{name}': expected {pattern.pattern}")
    return value


def _openwebui_task_model(
    services: Services, catalog: Catalog, call: Call, body: LiteLLMBody, task: str | None
) -> LiteLLMBody:
    """Open-WebUI's title, tags and follow-up calls go to the model config/routing.yaml names
    (when the caller may use it; otherwise as asked, and the policy judges that)."""
    if task is None or call.operation != CHAT.name:
        return body
    model = services.router.model_for_openwebui_task(task)
    entry = catalog.get(model) if model is not None else None
    if model is None or model == body.model or entry is None or not may_use(services.access, catalog, call.caller, entry):
        return body
    call.extra_attributes[attr.TASK_ROUTED_FROM] = body.model
    return body.model_copy(update={"model": model})


def _experiment_variant(services: Services, catalog: Catalog, call: Call, body: LiteLLMBody) -> LiteLLMBody:
    """While an experiment targets this request, the caller's variant (or the control) serves it."""
    experiment = services.experiments.find(body.model, call.task, call.context)
    if experiment is None:
        return body
    principal = call.caller
    assert principal.user_id is not None
    for variant in (experiment.variant_for(principal.user_id), experiment.control):
        entry = catalog.get(variant.model)
        if entry is not None and may_use(services.access, catalog, principal, entry):
            call.experiment, call.variant = experiment.name, variant.name
            call.response_headers.update({EXPERIMENT_HEADER: experiment.name, VARIANT_HEADER: variant.name})
            return body.model_copy(update={"model": variant.model})
    return body  # neither is allowed: judged as asked


def _downgraded(
    services: Services, catalog: Catalog, call: Call, operation: LlmOperation, body: LiteLLMBody, entry: ModelEntry
) -> tuple[LiteLLMBody, ModelEntry]:
    """Past the budget with `downgrade`: chat goes to the cheaper model; other operations are refused."""
    assert call.downgrade_to is not None
    target = target_for(services.access, catalog, call.caller, call.downgrade_to)
    if target is not None and operation.serves(target.mode):
        if costs_no_more(catalog, entry, target):
            return body, entry  # served as asked
        call.extra_attributes[attr.DOWNGRADED_FROM] = body.model
        call.response_headers[DOWNGRADED_HEADER] = body.model
        return body.model_copy(update={"model": target.name}), target
    exhausted = [status for status in call.budget_periods if status.exhausted]
    raise budget_refusal(max(exhausted, key=lambda status: status.resets_at), None)


async def chat(
    services: Services, call: Call, request: Request, body: ChatCompletionRequest, default_context: str | None = None
) -> Answer | PassThroughStream:
    return await forward(services, call, request, CHAT, body, default_context)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _form_fields(sent: dict[str, Any]) -> dict[str, str | list[str]]:
    """A validated multipart body as form fields again: lists as repeated `name[]` fields, as
    LiteLLM (and the OpenAI SDKs) read them."""
    fields: dict[str, str | list[str]] = {}
    for name, value in sent.items():
        if isinstance(value, list):
            fields[f"{name}[]"] = [str(item) for item in value]
        elif isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif value is not None:
            fields[name] = str(value)
    return fields


def _answer(call: Call, upstream: LiteLLMResponse) -> dict[str, Any]:
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


def _relay(
    services: Services, call: Call, upstream: LiteLLMResponse, operation: LlmOperation, body: LiteLLMBody
) -> PassThroughStream:
    def first_byte() -> None:
        call.ttft_ms = call.elapsed_ms()

    meter = (operation.meter or ChatMeter)()
    relay = StreamRelay(upstream, meter, first_byte, services.settings.stream_usage_grace_seconds)
    estimator = Estimator(services.litellm)
    call.extra_attributes.update(operation.figures(body, {}))
    upfront = decimal_cost(upstream.headers.get("x-litellm-response-cost"))  # audio: priced before the first byte

    async def settle() -> None:
        await relay.finish()
        await account_stream(call, relay, estimator, body.prompt_for_estimate(), upfront)
        await charge(call, services.budgets)

    media_type = upstream.headers.get("content-type", "text/event-stream")
    return stream_response(relay, passed_headers(upstream), BackgroundTask(settle), media_type)


def _upstream_headers(headers: Headers, call: Call) -> dict[str, str]:
    upstream = {"content-type": "application/json", "x-request-id": call.request_id}
    for name in FORWARDED_REQUEST_HEADERS:
        if value := headers.get(name):
            upstream[name] = value
    # The gateway span is the parent of LiteLLM's work (it already joined the caller's trace).
    upstream.update(Telemetry.traceparent(call.span))
    return upstream
