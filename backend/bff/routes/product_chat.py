"""POST /api/chat/completions: the chat call in the product's own response shape."""

from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from bff.errors import bad_request
from bff.request_context import RequestRecord
from bff.routes.openai_compat import prepare_chat
from bff.services import PrincipalDep, RecordDep, ServicesDep
from bff.upstream import chat

router = APIRouter(prefix="/api", tags=["product"])


class Cost(BaseModel):
    input_cost: float
    output_cost: float
    total_cost: float
    currency: Literal["USD"] = "USD"


class ProductChatResponse(BaseModel):
    id: str
    model: str = Field(description="the model group that actually answered (after any fallback)")
    requested_model: str
    provider: str | None
    content: str | None
    usage: chat.Usage
    cost: Cost
    fallbacks: int = Field(description="fallbacks LiteLLM attempted before answering")
    created_at: datetime


def _float_header(headers: httpx.Headers, name: str) -> float:
    try:
        return float(headers.get(name, 0.0))
    except ValueError:
        return 0.0


def _content(answer: dict[str, Any]) -> str | None:
    choices = answer.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content = message.get("content")
    return content if isinstance(content, str) or content is None else str(content)


def product_response(upstream: httpx.Response, answer: dict[str, Any], record: RequestRecord) -> ProductChatResponse:
    """Built from what the chat path recorded (served group, provider, fallbacks, cost)."""
    headers = upstream.headers
    return ProductChatResponse(
        id=str(answer.get("id", "")),
        model=record.model_group or record.model or "",
        requested_model=record.model or "",
        provider=record.provider,
        content=_content(answer),
        usage=chat.Usage.model_validate(answer.get("usage") or {}),
        cost=Cost(
            input_cost=_float_header(headers, "x-litellm-response-cost-input"),
            output_cost=_float_header(headers, "x-litellm-response-cost-output"),
            total_cost=float(record.cost_usd or 0),
        ),
        fallbacks=record.fallbacks or 0,
        created_at=datetime.fromtimestamp(int(answer.get("created") or 0) or datetime.now(UTC).timestamp(), UTC),
    )


@router.post("/chat/completions", response_model=ProductChatResponse, summary="Chat in the product's response shape")
async def product_chat(
    request: Request, services: ServicesDep, principal: PrincipalDep, record: RecordDep
) -> ProductChatResponse:
    payload, parsed, _, catalog = await prepare_chat(request, services, principal, record)
    if parsed.stream:
        raise bad_request("invalid field 'stream': this route answers in one piece; stream with /v1/chat/completions")
    body = chat.upstream_body(payload, principal, stream=False)
    upstream, answer = await chat.complete(services.litellm, body, chat.upstream_headers(request, record), record, catalog)
    return product_response(upstream, answer, record)
