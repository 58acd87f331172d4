"""The OpenAI-compatible surface that Open-WebUI, scripts and SDKs use unchanged."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from bff.pipeline import gateway
from bff.pipeline.bodies import JsonBody, documented
from bff.pipeline.chat_body import ChatCompletionRequest
from bff.pipeline.operations import CallerCall, ChatCall
from bff.policy.models import visible_models
from bff.services import ServicesDep

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

ChatBody = Annotated[ChatCompletionRequest, Depends(JsonBody(ChatCompletionRequest))]


@router.post(
    "/chat/completions",
    summary="Chat completion (OpenAI-compatible, streaming or not)",
    **documented(ChatCompletionRequest),
)
async def chat_completions(request: Request, services: ServicesDep, call: ChatCall, body: ChatBody) -> Response:
    answer = await gateway.chat(services, call, request, body)
    return answer.response() if isinstance(answer, gateway.ChatAnswer) else answer


@router.get(
    "/models",
    summary="Models the caller may use (OpenAI-compatible list); every model for service-key callers such as Open-WebUI",
)
async def list_models(services: ServicesDep, call: CallerCall) -> dict[str, Any]:
    catalog = await services.catalog.get()
    principal = call.caller
    # Open-WebUI 0.12 keeps one model table for all its users and overwrites it with each
    # caller's list, so a list filtered for one user would hide models from the next (an
    # admin's model vanishes after a user's refresh). It gets every model; the policy still
    # refuses a chat with a model the user's role may not use (403 model_not_allowed).
    entries = catalog.models.values() if principal.via_service_key else visible_models(services.access, catalog, principal)
    return {"object": "list", "data": [entry.openai_object for entry in entries]}
