"""The OpenAI-compatible surface that Open-WebUI, scripts and SDKs use unchanged."""

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from bff.errors import bad_request
from bff.identity.principal import Principal
from bff.policy.model import Permission
from bff.policy.models import authorize_model, visible_models
from bff.request_context import RequestRecord
from bff.routes.body import read_json_object, validate_body
from bff.services import PrincipalDep, RecordDep, Services, ServicesDep
from bff.upstream import chat
from bff.upstream.catalog import Catalog, ModelEntry

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

CONTEXT_HEADER = "x-llm-context"
_CONTEXT = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


def context_tag(request: Request) -> str | None:
    context = request.headers.get(CONTEXT_HEADER)
    if context is not None and not _CONTEXT.match(context):
        raise bad_request("invalid header 'X-LLM-Context': 1-64 characters of letters, digits and . _ : -")
    return context


async def authorize_chat(
    services: Services, principal: Principal, record: RequestRecord, payload: dict[str, Any]
) -> tuple[chat.ChatRequest, ModelEntry, Catalog]:
    """Shared by every chat route: permission, budget, validation, model access."""
    services.access.require(principal, Permission.chat)
    services.budgets.enforce(record.budget)
    parsed = validate_body(chat.ChatRequest, payload)
    record.model, record.stream = parsed.model, parsed.stream
    catalog = await services.catalog.get()
    entry = authorize_model(services.access, catalog, principal, parsed.model)
    return parsed, entry, catalog


async def prepare_chat(
    request: Request, services: Services, principal: Principal, record: RequestRecord
) -> tuple[dict[str, Any], chat.ChatRequest, ModelEntry, Catalog]:
    """A chat route's body, tag and authorization."""
    services.access.require(principal, Permission.chat)
    record.context = context_tag(request)
    payload = await read_json_object(request, services.settings.max_request_bytes)
    parsed, entry, catalog = await authorize_chat(services, principal, record, payload)
    return payload, parsed, entry, catalog


@router.post("/chat/completions", summary="Chat completion (OpenAI-compatible, streaming or not)")
async def chat_completions(request: Request, services: ServicesDep, principal: PrincipalDep, record: RecordDep) -> Response:
    payload, parsed, _, catalog = await prepare_chat(request, services, principal, record)
    body = chat.upstream_body(payload, principal, parsed.stream)
    headers = chat.upstream_headers(request, record)
    if parsed.stream:
        return await chat.open_stream(services.litellm, body, headers, record, catalog)
    upstream, _ = await chat.complete(services.litellm, body, headers, record, catalog)
    return chat.json_response(upstream)


@router.get(
    "/models",
    summary="Models the caller may use (OpenAI-compatible list); every model for service-key callers such as Open-WebUI",
)
async def list_models(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    catalog = await services.catalog.get()
    # Open-WebUI 0.12 keeps one model table for all its users and overwrites it with each
    # caller's list, so a list filtered for one user would hide models from the next (an
    # admin's model vanishes after a user's refresh). It gets every model; the policy still
    # refuses a chat with a model the user's role may not use (403 model_not_allowed).
    entries = catalog.models.values() if principal.via_service_key else visible_models(services.access, catalog, principal)
    return {"object": "list", "data": [entry.openai_object for entry in entries]}
