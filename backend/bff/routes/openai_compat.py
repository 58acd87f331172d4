"""The OpenAI-compatible surface that Open-WebUI, scripts and SDKs use unchanged.

Each route declares its operation (admission) and its body; the pipeline does the rest.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from bff.errors import ApiError, ErrorResponse, not_found
from bff.pipeline import gateway
from bff.pipeline import llm_operations as llm
from bff.pipeline.bodies import JsonBody, documented
from bff.pipeline.llm_bodies import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingsRequest,
    ImageEditForm,
    LiteLLMBody,
    ModerationRequest,
    RerankRequest,
    ResponsesRequest,
    SpeechRequest,
    TranscriptionForm,
)
from bff.pipeline.operations import (
    CallerCall,
    ChatCall,
    CompletionsCall,
    EmbeddingsCall,
    ImageEditCall,
    ModerationsCall,
    RerankCall,
    ResponsesCall,
    SpeechCall,
    TranscriptionCall,
)
from bff.pipeline.uploads import FormBody, Upload, documented_form
from bff.policy.models import may_use
from bff.services import ServicesDep
from bff.upstream.catalog import ModelEntry

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
root_router = APIRouter(tags=["openai-compatible"])  # routes clients also call without /v1 (Cohere's /rerank)

ChatBody = Annotated[ChatCompletionRequest, Depends(JsonBody(ChatCompletionRequest))]


def _served(answer: gateway.Answer | Response) -> Response:
    return answer.response() if isinstance(answer, gateway.Answer) else answer


async def _forward(
    request: Request, services: ServicesDep, call: Any, operation: llm.LlmOperation, body: LiteLLMBody, upload: Upload | None = None
) -> Response:
    return _served(await gateway.forward(services, call, request, operation, body, upload=upload))


@router.post("/chat/completions", summary="Chat completion (streaming or not)", **documented(ChatCompletionRequest))
async def chat_completions(request: Request, services: ServicesDep, call: ChatCall, body: ChatBody) -> Response:
    return await _forward(request, services, call, llm.CHAT, body)


@router.post("/completions", summary="Legacy text completion (streaming or not)", **documented(CompletionRequest))
async def completions(
    request: Request,
    services: ServicesDep,
    call: CompletionsCall,
    body: Annotated[CompletionRequest, Depends(JsonBody(CompletionRequest))],
) -> Response:
    return await _forward(request, services, call, llm.COMPLETIONS, body)


@router.post("/responses", summary="Responses API (streaming or not)", **documented(ResponsesRequest))
async def responses(
    request: Request,
    services: ServicesDep,
    call: ResponsesCall,
    body: Annotated[ResponsesRequest, Depends(JsonBody(ResponsesRequest))],
) -> Response:
    return await _forward(request, services, call, llm.RESPONSES, body)


@router.post("/embeddings", summary="Embeddings of strings, token arrays or batches", **documented(EmbeddingsRequest))
async def embeddings(
    request: Request,
    services: ServicesDep,
    call: EmbeddingsCall,
    body: Annotated[EmbeddingsRequest, Depends(JsonBody(EmbeddingsRequest))],
) -> Response:
    return await _forward(request, services, call, llm.EMBEDDINGS, body)


@router.post("/moderations", summary="Moderation", **documented(ModerationRequest))
async def moderations(
    request: Request,
    services: ServicesDep,
    call: ModerationsCall,
    body: Annotated[ModerationRequest, Depends(JsonBody(ModerationRequest))],
) -> Response:
    return await _forward(request, services, call, llm.MODERATIONS, body)


RerankBody = Annotated[RerankRequest, Depends(JsonBody(RerankRequest))]


@router.post("/rerank", summary="Rerank documents for a query", **documented(RerankRequest))
async def rerank(request: Request, services: ServicesDep, call: RerankCall, body: RerankBody) -> Response:
    return await _forward(request, services, call, llm.RERANK, body)


@root_router.post("/rerank", summary="Rerank documents for a query (Cohere's path)", **documented(RerankRequest))
async def rerank_root(request: Request, services: ServicesDep, call: RerankCall, body: RerankBody) -> Response:
    return await _forward(request, services, call, llm.RERANK, body)


@router.post(
    "/audio/speech",
    summary="Text to speech: the audio is streamed as it arrives",
    response_class=Response,
    **documented(SpeechRequest, responses={200: {"content": {"audio/mpeg": {}}, "description": "the audio"}}),
)
async def speech(
    request: Request,
    services: ServicesDep,
    call: SpeechCall,
    body: Annotated[SpeechRequest, Depends(JsonBody(SpeechRequest))],
) -> Response:
    return await _forward(request, services, call, llm.SPEECH, body)


@router.post(
    "/audio/transcriptions",
    summary="Speech to text (multipart: file, model, ...); at most MAX_UPLOAD_BYTES",
    **documented_form(TranscriptionForm, files=("file",)),
)
async def transcriptions(
    request: Request,
    services: ServicesDep,
    call: TranscriptionCall,
    form: Annotated[tuple[TranscriptionForm, Upload], Depends(FormBody(TranscriptionForm, files=("file",), required="file"))],
) -> Response:
    body, upload = form
    return await _forward(request, services, call, llm.TRANSCRIPTION, body, upload)


@router.post(
    "/audio/translations",
    summary="Not served: LiteLLM 1.106 has no translations route",
    responses={501: {"model": ErrorResponse, "description": "not available through this gateway"}},
)
async def translations(_: TranscriptionCall) -> Response:
    raise ApiError(
        501,
        "audio translations are not available: the gateway's LiteLLM (1.106) has no translations route; "
        "use /v1/audio/transcriptions (with a model that translates) instead",
        "invalid_request_error",
        "not_supported",
    )


@router.post(
    "/images/edits",
    summary="Edit images with a LiteLLM image model (multipart: image or image[], mask, prompt, model)",
    **documented_form(ImageEditForm, files=("image", "mask")),
)
async def image_edits(
    request: Request,
    services: ServicesDep,
    call: ImageEditCall,
    form: Annotated[tuple[ImageEditForm, Upload], Depends(FormBody(ImageEditForm, files=("image", "mask"), required="image"))],
) -> Response:
    body, upload = form
    return await _forward(request, services, call, llm.IMAGE_EDIT, body, upload)


def _listing(entry: ModelEntry) -> dict[str, Any]:
    return {**entry.openai_object, "mode": entry.mode or "chat"}


@router.get(
    "/models",
    summary="Models the caller may use (OpenAI-compatible list, with each model's mode); every model for service-key callers",
)
async def list_models(services: ServicesDep, call: CallerCall) -> dict[str, Any]:
    catalog = await services.catalog.get()
    principal = call.caller
    # Open-WebUI 0.12 keeps one model table for all its users and overwrites it with each
    # caller's list, so a list filtered for one user would hide models from the next (an
    # admin's model vanishes after a user's refresh). It gets every chat model (its list is
    # its chat picker: embedding, audio and image models are configured by name); the policy
    # still refuses a chat with a model the user's role may not use (403 model_not_allowed).
    if principal.via_service_key:
        entries = [entry for entry in catalog.models.values() if llm.CHAT.serves(entry.mode)]
    else:
        entries = [entry for entry in catalog.models.values() if may_use(services.access, catalog, principal, entry)]
    return {"object": "list", "data": [_listing(entry) for entry in entries]}


@router.get("/models/{model_id:path}", summary="One model the caller may use (404 for unknown or not allowed)")
async def retrieve_model(
    model_id: Annotated[str, Path(max_length=256)], services: ServicesDep, call: CallerCall
) -> dict[str, Any]:
    catalog = await services.catalog.get()
    principal = call.caller
    entry = catalog.get(model_id)
    if entry is None or not (principal.via_service_key or may_use(services.access, catalog, principal, entry)):
        raise not_found(f"model '{model_id}' does not exist", "model_not_found")  # not allowed reads as unknown
    return _listing(entry)
