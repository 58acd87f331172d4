"""The chat completion body the gateway accepts, and exactly what it sends to LiteLLM.

Fields whose types matter to routing or billing are strict (`stream` a real boolean,
`stream_options` an object, `n` and the token limits bounded). Fields that would
steer LiteLLM itself (routing, fallbacks, retries, timeouts, credentials, prices,
caching, logging, mocking) are refused, naming the field: the list is
upstream/litellm_fields.py. Everything else in OpenAI's chat schema, and provider
parameters LiteLLM passes on, go through unchanged.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from bff.pipeline.bodies import FieldNotAllowed
from bff.upstream.litellm_fields import REASONS, REFUSED_BODY_FIELD_PREFIX, REFUSED_BODY_FIELDS

MAX_CHOICES = 16
MAX_TOKENS = 1_000_000
# In OpenAI's schema, but LiteLLM reads it as its own (tags for tag routing, trace and logging
# keys); Open-WebUI never sends it (it pops `metadata` before calling a connection).
GATEWAY_OWNED = {"metadata": "LiteLLM's tags and logging metadata"}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; fields not listed here pass through unchanged."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=MAX_CHOICES)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_TOKENS)
    user: str | None = Field(default=None, max_length=256, description="replaced by the caller's Open-WebUI user id")

    @model_validator(mode="before")
    @classmethod
    def _no_litellm_controls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in sorted(data):
                if name in GATEWAY_OWNED:
                    raise FieldNotAllowed(name, f"the gateway sets {GATEWAY_OWNED[name]}; remove it")
                if name in REFUSED_BODY_FIELDS or name.startswith(REFUSED_BODY_FIELD_PREFIX):
                    concern = REASONS.get(name, "routing")
                    raise FieldNotAllowed(name, f"it is a LiteLLM control ({concern}) that only the gateway sets; remove it")
        return data

    def upstream(self, user_id: str, litellm_controls: dict[str, Any]) -> dict[str, Any]:
        """What LiteLLM receives: the validated body, the caller's id as `user`, usage on streams,
        and the gateway's own LiteLLM controls (the fallbacks the policy allows)."""
        body = self.model_dump(exclude_unset=True)
        body["user"] = user_id  # LiteLLM's end user: the caller, whatever the client claimed
        if "safety_identifier" in body:  # names the end user to the provider, likewise
            body["safety_identifier"] = user_id
        if self.stream:
            body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
        return {**body, **litellm_controls}

