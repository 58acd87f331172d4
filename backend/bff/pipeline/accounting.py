"""Step 6: what a call used and cost, from LiteLLM's own figures.

Non-streaming: the answer's `usage` and LiteLLM's `x-litellm-response-cost`.
Streaming: the usage event LiteLLM sends last (`include_usage`), with its `cost`.
A stream cut before that event is charged an estimate, marked as such: LiteLLM's token
counter for the prompt and for the content relayed, priced by LiteLLM's cost estimator
(the served group's prices). The gateway never prices tokens itself.
"""

import json
import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import AliasChoices, BaseModel, Field

from bff.pipeline.call import Call, Outcome
from bff.pipeline.stream_relay import StreamRelay
from bff.upstream.catalog import Catalog
from bff.upstream.litellm import COST_ESTIMATE_PATH, TOKEN_COUNTER_PATH, LiteLLMClient, UpstreamError

log = logging.getLogger("bff.accounting")

# Characters per token when LiteLLM's counter cannot be reached (its own rough default).
CHARS_PER_TOKEN = 4


class Usage(BaseModel):
    """Chat, completions and embeddings say prompt/completion tokens; the Responses API input/output."""

    prompt_tokens: int = Field(default=0, validation_alias=AliasChoices("prompt_tokens", "input_tokens"))
    completion_tokens: int = Field(default=0, validation_alias=AliasChoices("completion_tokens", "output_tokens"))
    total_tokens: int = 0
    cost: float | str | None = None  # LiteLLM's, in a stream's last usage


def decimal_cost(value: str | float | None) -> Decimal | None:
    """Exact decimal from LiteLLM's float text (e.g. '2.4999999999999998e-05')."""
    if value is None:
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name, "")
    return int(value) if value.isdigit() else None


def note_served(call: Call, headers: Mapping[str, str], catalog: Catalog) -> None:
    """What LiteLLM says actually served the request (after retries and fallbacks)."""
    call.deployment_id = headers.get("x-litellm-model-id")
    # LiteLLM names the group that served; on some operations (speech, moderations, images) only its deployment
    served = headers.get("x-litellm-model-group") or catalog.group_by_deployment.get(call.deployment_id or "") or call.model or ""
    entry = catalog.get(served)
    call.model_group = entry.group if entry else served  # an alias is recorded as its group
    call.provider = catalog.provider_by_deployment.get(call.deployment_id or "", entry.provider if entry else None)
    call.retries = _int_header(headers, "x-litellm-attempted-retries")
    call.fallbacks = _int_header(headers, "x-litellm-attempted-fallbacks")


def record_usage(call: Call, usage: Any) -> Usage | None:
    if not isinstance(usage, dict) or not usage:
        return None
    parsed = Usage.model_validate(usage)
    call.prompt_tokens = parsed.prompt_tokens
    call.completion_tokens = parsed.completion_tokens
    call.total_tokens = parsed.total_tokens or parsed.prompt_tokens + parsed.completion_tokens
    return parsed


def account_answer(call: Call, answer: dict[str, Any], headers: Mapping[str, str]) -> None:
    record_usage(call, answer.get("usage"))
    call.cost_usd = decimal_cost(headers.get("x-litellm-response-cost"))
    call.outcome = Outcome.completed


class Estimator:
    """Tokens and cost from LiteLLM's own counter and prices, when it gave none itself."""

    def __init__(self, client: LiteLLMClient):
        self._client = client

    async def _ask(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            response = await self._client.post(path, _json(body), {"content-type": "application/json"})
            answer = response.json() if response.status_code == 200 else None
        except (UpstreamError, ValueError) as exc:
            log.warning("LiteLLM %s failed (%s)", path, type(exc).__name__)
            return None
        if not isinstance(answer, dict):
            log.warning("LiteLLM %s answered %s", path, response.status_code)
            return None
        return answer

    async def tokens(self, model: str, prompt: dict[str, Any]) -> int:
        """`prompt` is {"messages": [...]} or {"prompt": text}, as LiteLLM's counter takes them."""
        answer = await self._ask(TOKEN_COUNTER_PATH, {"model": model, **prompt})
        if answer is not None and isinstance(answer.get("total_tokens"), int):
            return int(answer["total_tokens"])
        return -(-len(_json(prompt)) // CHARS_PER_TOKEN)  # LiteLLM unreachable: its rough rule

    async def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
        body = {"model": model, "input_tokens": prompt_tokens, "output_tokens": completion_tokens}
        answer = await self._ask(COST_ESTIMATE_PATH, body)
        cost = decimal_cost(answer.get("cost_per_request")) if answer is not None else None
        if cost is None:
            log.warning("no cost estimate for %s: %d+%d tokens charged nothing", model, prompt_tokens, completion_tokens)
        return cost

    async def charge(self, call: Call, prompt: dict[str, Any], delivered: str) -> None:
        model = call.model_group or call.model or ""
        call.prompt_tokens = await self.tokens(model, prompt)
        call.completion_tokens = await self.tokens(model, {"prompt": delivered}) if delivered else 0
        call.total_tokens = call.prompt_tokens + call.completion_tokens
        call.cost_usd = await self.cost(model, call.prompt_tokens, call.completion_tokens)
        call.cost_estimated = True


async def account_stream(
    call: Call, relay: StreamRelay, estimator: Estimator, prompt: dict[str, Any], upfront_cost: Decimal | None
) -> None:
    """After the stream: its outcome, and LiteLLM's usage or an estimate of what was delivered.

    `upfront_cost` is LiteLLM's cost header when it priced the call before the first byte (audio).
    """
    if relay.failure is not None:
        call.fail(relay.failure.code, Outcome.upstream_failed)
    else:
        call.outcome = Outcome.client_disconnected if relay.client_gone else Outcome.completed
    usage = record_usage(call, relay.meter.usage)
    if usage is not None:
        call.cost_usd = decimal_cost(usage.cost)
        if call.cost_usd is None and call.total_tokens:  # LiteLLM omits a zero cost; ask it to be sure
            call.cost_usd = await estimator.cost(call.model_group or "", usage.prompt_tokens, usage.completion_tokens)
        return
    if upfront_cost is not None:
        call.cost_usd = upfront_cost
        return
    await estimator.charge(call, prompt, relay.meter.delivered_text())


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
