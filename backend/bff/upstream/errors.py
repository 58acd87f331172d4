"""Maps LiteLLM's answers and transport failures to the BFF's error shape.

Upstream messages are shown only after removing URLs and anything key-like, and
are cut short: callers learn why, never where or with which credentials.
"""

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from bff.errors import (
    ApiError,
    bad_gateway,
    bad_request,
    gateway_timeout,
    not_found,
    rate_limited,
    unavailable,
)
from bff.upstream.litellm import LiteLLMResponse, UpstreamError, UpstreamTimeout, UpstreamUnreachable

_URL = re.compile(r"https?://\S+")
_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|api[_-]?key\S*)", re.IGNORECASE)
# LiteLLM prefixes provider messages with exception class names and appends its own notes.
_LITELLM_PREFIX = re.compile(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(\w+Exception\s*-\s*)?")
_MAX_MESSAGE = 300
# LiteLLM passes a provider's Retry-After on under this name (1.106).
PROVIDER_RETRY_AFTER = "llm_provider-retry-after"

log = logging.getLogger("bff.upstream")


def _clean(message: str) -> str:
    message = _LITELLM_PREFIX.sub("", message.split("\n\nLiteLLM")[0]).strip()
    message = _URL.sub("[url]", message)
    message = _SECRET.sub("[redacted]", message)
    return message[:_MAX_MESSAGE]


def _message_of(error: Any) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return _clean(str(message or ""))


def _upstream_message(body: bytes) -> str:
    try:
        return _message_of(json.loads(body).get("error", {}))
    except (ValueError, AttributeError, RecursionError):
        return ""


def _retry_after(headers: Mapping[str, str]) -> str | None:
    value = headers.get("retry-after") or headers.get(PROVIDER_RETRY_AFTER)
    if value is None:
        return None
    try:
        return str(max(1, round(float(value))))
    except ValueError:
        return None


def error_from_status(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    detail = _upstream_message(body)
    if status == 429:
        return rate_limited("the model provider's rate limit was reached; retry later", _retry_after(headers))
    if status in (408, 504):
        return gateway_timeout()
    if status == 404:
        return not_found(detail or "model not found", "model_not_found")
    if status in (400, 422):
        return bad_request(detail or "the model service rejected the request", "upstream_rejected")
    # 401/403 mean the gateway's own upstream credentials are wrong; 5xx is an upstream fault.
    log.warning("LiteLLM answered %s; answering 502 (%s)", status, detail[:120] or "no message")
    return bad_gateway()


def error_from_stream_event(error: Any) -> ApiError:
    """A `data: {"error": ...}` event LiteLLM sends when the provider fails mid-stream."""
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    status = int(code) if code.isdigit() and 400 <= int(code) <= 599 else 502
    if status == 429:
        return rate_limited("the model provider's rate limit was reached; retry later")
    if status in (408, 504):
        return gateway_timeout()
    log.warning("LiteLLM stream failed mid-way (code %s)", code or "none")
    return bad_gateway("the model provider failed while answering")


@dataclass(frozen=True)
class Upstream:
    """How one upstream service's transport failures read to callers (never its address)."""

    name: str
    unreachable: str
    unreachable_code: str
    timed_out: str
    failed: str

    def transport_error(self, exc: httpx.HTTPError | UpstreamError, timed_out: str | None = None) -> ApiError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | UpstreamUnreachable):
            return unavailable(self.unreachable, self.unreachable_code)
        if isinstance(exc, httpx.TimeoutException | UpstreamTimeout):
            return gateway_timeout(timed_out or self.timed_out)
        log.warning("%s transport failed (%s); answering 502", self.name, type(exc).__name__)
        return bad_gateway(self.failed)


LITELLM = Upstream(
    name="LiteLLM",
    unreachable="the model service (LiteLLM) is unreachable",
    unreachable_code="upstream_unavailable",
    timed_out="the upstream model service timed out",
    failed="the upstream model service returned an invalid answer",
)


def error_from_transport(exc: UpstreamError) -> ApiError:
    return LITELLM.transport_error(exc)


async def read_and_close(response: LiteLLMResponse | httpx.Response) -> bytes:
    """The body of a refused streaming answer (for its error message), then the connection back."""
    try:
        return await response.aread()
    except (UpstreamError, httpx.HTTPError):
        return b""
    finally:
        await response.aclose()


def stream_error_event(error: ApiError) -> bytes:
    """An SSE event in the shape OpenAI SDKs raise on mid-stream."""
    return b"data: " + error.body().model_dump_json().encode() + b"\n\n"
