"""POST /api/chat/completions: the chat call in the product's own response shape."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from bff.errors import bad_request
from bff.pipeline import gateway
from bff.pipeline.accounting import Usage
from bff.pipeline.bodies import JsonBody, documented
from bff.pipeline.call import Call
from bff.pipeline.llm_bodies import ChatCompletionRequest
from bff.pipeline.operations import ChatCall
from bff.services import ServicesDep

router = APIRouter(prefix="/api", tags=["product"])


class Cost(BaseModel):
    input_cost: float
    output_cost: float
    total_cost: float
    currency: Literal["USD"] = "USD"


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ProductChatResponse(BaseModel):
    id: str
    model: str = Field(description="the model group that actually answered (after any fallback)")
    requested_model: str
    provider: str | None
    content: str | None
    usage: TokenUsage
    cost: Cost
    fallbacks: int = Field(description="fallbacks LiteLLM attempted before answering")
    created_at: datetime


def _float_header(headers: Mapping[str, str], name: str) -> float:
    try:
        return float(headers.get(name, 0.0))
    except ValueError:
        return 0.0


def _content(answer: dict[str, Any]) -> str | None:
    choices = answer.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content = message.get("content")
    return content if isinstance(content, str) or content is None else str(content)


def product_response(done: gateway.Answer, call: Call) -> ProductChatResponse:
    """Built from what the pipeline recorded (served group, provider, fallbacks, cost)."""
    headers, answer = done.upstream.headers, done.answer
    usage = Usage.model_validate(answer.get("usage") or {})
    return ProductChatResponse(
        id=str(answer.get("id", "")),
        model=call.model_group or call.model or "",
        requested_model=call.model or "",
        provider=call.provider,
        content=_content(answer),
        usage=TokenUsage(**usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})),
        cost=Cost(
            input_cost=_float_header(headers, "x-litellm-response-cost-input"),
            output_cost=_float_header(headers, "x-litellm-response-cost-output"),
            total_cost=float(call.cost_usd or 0),
        ),
        fallbacks=call.fallbacks or 0,
        created_at=datetime.fromtimestamp(int(answer.get("created") or 0) or datetime.now(UTC).timestamp(), UTC),
    )


@router.post(
    "/chat/completions",
    response_model=ProductChatResponse,
    summary="Chat in the product's response shape",
    **documented(ChatCompletionRequest),
)
async def product_chat(
    request: Request,
    services: ServicesDep,
    call: ChatCall,
    body: Annotated[ChatCompletionRequest, Depends(JsonBody(ChatCompletionRequest))],
) -> ProductChatResponse:
    if body.stream:
        raise bad_request("invalid field 'stream': this route answers in one piece; stream with /v1/chat/completions")
    answer = await gateway.chat(services, call, request, body)
    assert isinstance(answer, gateway.Answer)  # not a stream: checked above
    return product_response(answer, call)
