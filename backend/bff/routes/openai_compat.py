"""The OpenAI-compatible surface that Open-WebUI, scripts and SDKs use unchanged."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from bff.identity.principal import Principal
from bff.policy.model import Permission
from bff.policy.models import authorize_model, visible_models
from bff.routes.body import read_json_object, validate_body
from bff.services import LogFieldsDep, PrincipalDep, Services, ServicesDep
from bff.upstream import chat
from bff.upstream.catalog import ModelEntry

router = APIRouter(prefix="/v1", tags=["openai-compatible"])


async def prepare_chat(
    request: Request, services: Services, principal: Principal
) -> tuple[dict[str, Any], chat.ChatRequest, ModelEntry]:
    """Shared by every chat route: permission, bounded body, validation, model access."""
    services.access.require(principal, Permission.chat)
    payload = await read_json_object(request, services.settings.max_request_bytes)
    parsed = validate_body(chat.ChatRequest, payload)
    request.state.log.model = parsed.model
    entry = authorize_model(services.access, await services.catalog.get(), principal, parsed.model)
    return payload, parsed, entry


@router.post("/chat/completions", summary="Chat completion (OpenAI-compatible, streaming or not)")
async def chat_completions(request: Request, services: ServicesDep, principal: PrincipalDep, fields: LogFieldsDep) -> Response:
    payload, parsed, _ = await prepare_chat(request, services, principal)
    body = chat.upstream_body(payload, principal, parsed.stream)
    headers = chat.upstream_headers(request, fields.request_id)
    if parsed.stream:
        return await chat.open_stream(services.litellm, body, headers, fields)
    upstream, answer = await chat.complete(services.litellm, body, headers)
    chat.record_usage(fields, answer.get("usage"))
    return chat.json_response(upstream)


@router.get("/models", summary="Models the caller may use (OpenAI-compatible list)")
async def list_models(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    catalog = await services.catalog.get()
    return {"object": "list", "data": [entry.openai_object for entry in visible_models(services.access, catalog, principal)]}
