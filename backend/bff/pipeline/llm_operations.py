"""LiteLLM's operations as the gateway serves them, declared once each.

An LlmOperation is the route's admission (its span name, permission, paid) plus how the
pipeline forwards it: LiteLLM's path, which model modes it may call (LiteLLM does not
check: any deployment answers any operation), how its stream is metered, and which
operation-specific figures land on the span.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bff.pipeline.admission import Operation
from bff.pipeline.llm_bodies import EmbeddingsRequest, LiteLLMBody, SpeechRequest
from bff.pipeline.stream_meter import BytesMeter, ChatMeter, ResponsesMeter, StreamMeter
from bff.policy.model import Permission
from bff.telemetry import attributes as attr
from bff.upstream.catalog import CHAT_MODES

Describe = Callable[[LiteLLMBody, dict[str, Any]], dict[str, str | int | float]]

# The route that serves each LiteLLM mode, for "use ... instead" messages.
MODE_ROUTES = {
    "chat": "POST /v1/chat/completions",
    "completion": "POST /v1/completions",
    "responses": "POST /v1/responses",
    "embedding": "POST /v1/embeddings",
    "rerank": "POST /v1/rerank",
    "moderation": "POST /v1/moderations",
    "audio_transcription": "POST /v1/audio/transcriptions",
    "audio_speech": "POST /v1/audio/speech",
    "image_generation": "POST /v1/images/generations",
    "image_edit": "POST /v1/images/edits",
}


def _no_figures(body: LiteLLMBody, answer: dict[str, Any]) -> dict[str, str | int | float]:
    return {}


def _embedding_figures(body: LiteLLMBody, answer: dict[str, Any]) -> dict[str, str | int | float]:
    return {attr.EMBEDDING_INPUTS: body.inputs} if isinstance(body, EmbeddingsRequest) else {}


def _speech_figures(body: LiteLLMBody, answer: dict[str, Any]) -> dict[str, str | int | float]:
    return {attr.SPEECH_CHARACTERS: body.characters} if isinstance(body, SpeechRequest) else {}


def _transcription_figures(body: LiteLLMBody, answer: dict[str, Any]) -> dict[str, str | int | float]:
    duration = answer.get("duration")
    return {attr.AUDIO_SECONDS: float(duration)} if isinstance(duration, int | float) else {}


def _rerank_figures(body: LiteLLMBody, answer: dict[str, Any]) -> dict[str, str | int | float]:
    units = ((answer.get("meta") or {}).get("billed_units") or {}).get("search_units")
    return {attr.SEARCH_UNITS: int(units)} if isinstance(units, int | float) else {}


def _image_figures(body: LiteLLMBody, answer: dict[str, Any]) -> dict[str, str | int | float]:
    data = answer.get("data")
    return {attr.IMAGES_COUNT: len(data)} if isinstance(data, list) else {}


@dataclass(frozen=True)
class LlmOperation(Operation):
    path: str = ""  # LiteLLM's route
    modes: frozenset[str | None] = CHAT_MODES
    meter: Callable[[], StreamMeter] | None = None  # how a streamed answer is read
    figures: Describe = field(default=_no_figures)

    def serves(self, mode: str | None) -> bool:
        return mode in self.modes


CHAT = LlmOperation("chat", Permission.chat, paid=True, path="/v1/chat/completions", meter=ChatMeter)
COMPLETIONS = LlmOperation(
    "text_completion", Permission.chat, paid=True, path="/v1/completions", modes=CHAT_MODES | {"completion"}, meter=ChatMeter
)
RESPONSES = LlmOperation(
    "responses", Permission.chat, paid=True, path="/v1/responses", modes=CHAT_MODES | {"responses"}, meter=ResponsesMeter
)
EMBEDDINGS = LlmOperation(
    "embeddings", Permission.embeddings, paid=True, path="/v1/embeddings", modes=frozenset({"embedding"}),
    figures=_embedding_figures,
)
RERANK = LlmOperation(
    "rerank", Permission.embeddings, paid=True, path="/v1/rerank", modes=frozenset({"rerank"}), figures=_rerank_figures
)
MODERATIONS = LlmOperation(
    "moderation", Permission.moderations, paid=True, path="/v1/moderations", modes=frozenset({"moderation"})
)
SPEECH = LlmOperation(
    "audio_speech", Permission.audio, paid=True, path="/v1/audio/speech", modes=frozenset({"audio_speech"}),
    meter=BytesMeter, figures=_speech_figures,
)
TRANSCRIPTION = LlmOperation(
    "audio_transcription", Permission.audio, paid=True, path="/v1/audio/transcriptions",
    modes=frozenset({"audio_transcription"}), figures=_transcription_figures,
)
IMAGE_GENERATION = LlmOperation(
    "images", Permission.images, paid=True, path="/v1/images/generations", modes=frozenset({"image_generation"}),
    figures=_image_figures,
)
IMAGE_EDIT = LlmOperation(  # image generation models such as gpt-image-1 edit too
    "images", Permission.images, paid=True, path="/v1/images/edits", modes=frozenset({"image_edit", "image_generation"}),
    figures=_image_figures,
)
