"""The bodies the gateway accepts for LiteLLM's operations, and exactly what it sends on.

Fields that would steer LiteLLM itself (routing, fallbacks, retries, timeouts,
credentials, prices, caching, logging, mocking) are refused in every body, naming the
field: the list is upstream/litellm_fields.py, derived from the pinned LiteLLM. Chat
lets any other field through (OpenAI's schema and provider parameters LiteLLM passes
on). The other operations accept OpenAI's fields only: LiteLLM reads more keys of its
own on those routes than its lists name, so an allowlist is the safe side.

Fields whose types matter to routing or billing are strict: `stream` a real boolean,
`stream_options` an object, counts and token limits bounded.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from bff.pipeline.bodies import FieldNotAllowed
from bff.upstream.litellm_fields import REASONS, REFUSED_BODY_FIELD_PREFIX, REFUSED_BODY_FIELDS

MAX_CHOICES = 16
MAX_TOKENS = 1_000_000
MAX_INPUTS = 2048  # OpenAI's limit of embedding inputs per request
# In OpenAI's schema, but LiteLLM reads it as its own (tags for tag routing, trace and logging
# keys); Open-WebUI never sends it (it pops `metadata` before calling a connection).
GATEWAY_OWNED = {"metadata": "LiteLLM's tags and logging metadata"}

Count = StrictInt  # a number of choices or tokens: never a float or a numeric string


class LiteLLMBody(BaseModel):
    """What every operation's body shares: a model, the end user, no LiteLLM controls."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    user: str | None = Field(default=None, description="replaced by the caller's Open-WebUI user id")

    @model_validator(mode="before")
    @classmethod
    def _no_litellm_controls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in sorted(data):
                if name in GATEWAY_OWNED:
                    raise FieldNotAllowed(name, f"the gateway sets {GATEWAY_OWNED[name]}; remove it")
                if name in REFUSED_BODY_FIELDS or name.startswith(REFUSED_BODY_FIELD_PREFIX) or name.startswith("_"):
                    concern = REASONS.get(name, "routing")
                    raise FieldNotAllowed(name, f"it is a LiteLLM control ({concern}) that only the gateway sets; remove it")
        return data

    @property
    def streams(self) -> bool:
        return False

    def prompt_for_estimate(self) -> dict[str, Any]:
        """What LiteLLM's token counter reads to estimate the prompt of a cut call."""
        text = getattr(self, "input", "")
        return {"prompt": text if isinstance(text, str) else str(text)}

    def upstream(self, user_id: str, litellm_controls: dict[str, Any]) -> dict[str, Any]:
        """What LiteLLM receives: the validated body, the caller's id as `user` (and as
        `safety_identifier` when sent: both name the end user), and the gateway's own
        LiteLLM controls (the fallbacks the policy allows)."""
        body = self.model_dump(exclude_unset=True)
        body["user"] = user_id
        if "safety_identifier" in body:
            body["safety_identifier"] = user_id
        if self.streams:
            body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
        return {**body, **litellm_controls}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool | None = None


class ChatCompletionRequest(LiteLLMBody):
    """OpenAI's chat completion request; fields not listed here pass through unchanged."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: Count | None = Field(default=None, ge=1, le=MAX_CHOICES)
    max_tokens: Count | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: Count | None = Field(default=None, ge=1, le=MAX_TOKENS)

    @property
    def streams(self) -> bool:
        return self.stream

    def prompt_for_estimate(self) -> dict[str, Any]:
        return {"messages": self.messages}


class CompletionRequest(LiteLLMBody):
    """OpenAI's legacy text completion."""

    prompt: str | list[str] | list[int] | list[list[int]]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: Count | None = Field(default=None, ge=1, le=MAX_CHOICES)
    best_of: Count | None = Field(default=None, ge=1, le=MAX_CHOICES)
    max_tokens: Count | None = Field(default=None, ge=1, le=MAX_TOKENS)
    echo: StrictBool | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: Count | None = Field(default=None, ge=0, le=5)
    seed: int | None = None
    stop: str | list[str] | None = None
    suffix: str | None = None
    temperature: float | None = None
    top_p: float | None = None

    @property
    def streams(self) -> bool:
        return self.stream

    def prompt_for_estimate(self) -> dict[str, Any]:
        return {"prompt": self.prompt if isinstance(self.prompt, str) else str(self.prompt)}


class ResponsesRequest(LiteLLMBody):
    """OpenAI's Responses API request."""

    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    include: list[str] | None = None
    max_output_tokens: Count | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_tool_calls: Count | None = Field(default=None, ge=1)
    parallel_tool_calls: StrictBool | None = None
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning: dict[str, Any] | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    store: StrictBool | None = None
    temperature: float | None = None
    text: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    top_logprobs: Count | None = Field(default=None, ge=0, le=20)
    top_p: float | None = None
    truncation: str | None = None
    background: StrictBool | None = None
    conversation: str | dict[str, Any] | None = None

    @property
    def streams(self) -> bool:
        return self.stream

    def upstream(self, user_id: str, litellm_controls: dict[str, Any]) -> dict[str, Any]:
        body = super().upstream(user_id, litellm_controls)
        body.pop("stream_options", None)  # usage always comes with response.completed
        if self.stream_options is not None:
            body["stream_options"] = self.stream_options
        return body

    def prompt_for_estimate(self) -> dict[str, Any]:
        text = self.input if isinstance(self.input, str) else str(self.input)
        return {"prompt": f"{self.instructions or ''}\n{text}"}


class EmbeddingsRequest(LiteLLMBody):
    """Strings, token arrays, or batches of either."""

    input: str | list[str] | list[int] | list[list[int]] = Field(description=f"at most {MAX_INPUTS} inputs")
    dimensions: Count | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> "EmbeddingsRequest":
        if isinstance(self.input, list) and (not self.input or len(self.input) > MAX_INPUTS):
            raise ValueError(f"'input' must hold 1 to {MAX_INPUTS} items")
        return self

    @property
    def inputs(self) -> int:
        if isinstance(self.input, str) or (self.input and isinstance(self.input[0], int)):
            return 1
        return len(self.input)


class ModerationRequest(LiteLLMBody):
    input: str | list[str] | list[dict[str, Any]]


class RerankRequest(LiteLLMBody):
    query: str = Field(min_length=1)
    documents: list[str | dict[str, Any]] = Field(min_length=1, max_length=10_000)
    top_n: Count | None = Field(default=None, ge=1)
    return_documents: StrictBool | None = None
    rank_fields: list[str] | None = None
    max_chunks_per_doc: Count | None = Field(default=None, ge=1)
    max_tokens_per_doc: Count | None = Field(default=None, ge=1)


class SpeechRequest(LiteLLMBody):
    input: str = Field(min_length=1, max_length=4096)
    voice: str | dict[str, Any]
    instructions: str | None = Field(default=None, max_length=4096)
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    stream_format: Literal["sse", "audio"] | None = None

    @property
    def characters(self) -> int:
        """What LiteLLM prices speech by: the characters that are not whitespace."""
        return sum(not character.isspace() for character in self.input)


class ImageGenerationRequest(LiteLLMBody):
    prompt: str = Field(min_length=1, max_length=32_000)
    n: Count = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, max_length=16)
    quality: str | None = Field(default=None, max_length=16)
    style: str | None = Field(default=None, max_length=16)
    response_format: Literal["url", "b64_json"] | None = None
    background: str | None = Field(default=None, max_length=16)
    moderation: str | None = Field(default=None, max_length=16)
    output_compression: Count | None = Field(default=None, ge=0, le=100)
    output_format: str | None = Field(default=None, max_length=16)


class TranscriptionForm(LiteLLMBody):
    """Speech to text (multipart; the audio is the `file` part). Form values arrive as text."""

    language: str | None = Field(default=None, max_length=16)
    prompt: str | None = Field(default=None, max_length=4096)
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] | None = None
    chunking_strategy: str | None = None
    include: list[str] | None = None


class ImageEditForm(LiteLLMBody):
    """Image edits (multipart; `image` / `image[]` parts, optional `mask`)."""

    prompt: str = Field(min_length=1, max_length=32_000)
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, max_length=16)
    quality: str | None = Field(default=None, max_length=16)
    response_format: Literal["url", "b64_json"] | None = None
    background: str | None = Field(default=None, max_length=16)
    input_fidelity: str | None = Field(default=None, max_length=16)
    output_compression: int | None = Field(default=None, ge=0, le=100)
    output_format: str | None = Field(default=None, max_length=16)
