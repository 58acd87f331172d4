"""POST /api/llm/generate: a task name picks the model (config/routing.yaml); the answer
comes in the product's response shape."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bff.pipeline import gateway
from bff.pipeline.bodies import JsonBody, documented, validate_body
from bff.pipeline.llm_bodies import ChatCompletionRequest
from bff.pipeline.operations import ChatCall
from bff.policy.routing import TASK_NAME
from bff.routes.product_chat import ProductChatResponse, product_response
from bff.services import ServicesDep

router = APIRouter(prefix="/api/llm", tags=["product"])


class GenerateRequest(BaseModel):
    """Either `messages` (OpenAI chat format) or `prompt` (+ optional `system`)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(pattern=TASK_NAME.pattern, description="e.g. brief, copywriter, reviewer, rag.answer")
    messages: list[dict[str, Any]] | None = Field(default=None, min_length=1)
    prompt: str | None = Field(default=None, min_length=1)
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_input(self) -> "GenerateRequest":
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("send exactly one of 'messages' or 'prompt'")
        if self.system is not None and self.messages is not None:
            raise ValueError("'system' goes with 'prompt'; put it in 'messages' otherwise")
        return self

    def chat_payload(self, model: str) -> dict[str, Any]:
        messages = self.messages or [
            *([{"role": "system", "content": self.system}] if self.system else []),
            {"role": "user", "content": self.prompt},
        ]
        options = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        return {"model": model, "messages": messages, **{k: v for k, v in options.items() if v is not None}}


class GenerateResponse(ProductChatResponse):
    task: str
    mode: str = Field(description="the generator mode that picked the model (live or mock)")


@router.post(
    "/generate",
    response_model=GenerateResponse,
    summary="Run a task on the model its routing rule picks",
    **documented(GenerateRequest),
)
async def generate(
    request: Request,
    services: ServicesDep,
    call: ChatCall,
    body: Annotated[GenerateRequest, Depends(JsonBody(GenerateRequest))],
) -> GenerateResponse:
    chat_body = validate_body(ChatCompletionRequest, body.chat_payload(services.router.model_for(body.task)))
    call.task = body.task
    answer = await gateway.chat(services, call, request, chat_body, default_context=body.task)
    assert isinstance(answer, gateway.Answer)  # chat_payload never streams
    product = product_response(answer, call)
    return GenerateResponse(**product.model_dump(), task=body.task, mode=services.router.mode)
