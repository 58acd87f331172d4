"""Maps LiteLLM's answers and transport failures to the BFF's error shape.

Upstream messages are shown only after removing URLs and anything key-like, and
are cut short: callers learn why, never where or with which credentials.
"""

import json
import re
from dataclasses import dataclass

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

_URL = re.compile(r"https?://\S+")
_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|api[_-]?key\S*)", re.IGNORECASE)
# LiteLLM prefixes provider messages with exception class names and appends its own notes.
_LITELLM_PREFIX = re.compile(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(\w+Exception\s*-\s*)?")
_MAX_MESSAGE = 300


def _clean(message: str) -> str:
    message = _LITELLM_PREFIX.sub("", message.split("\n\nLiteLLM")[0]).strip()
    message = _URL.sub("[url]", message)
    message = _SECRET.sub("[redacted]", message)
    return message[:_MAX_MESSAGE]


def _upstream_message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error", {})
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        return ""
    return _clean(str(message or ""))


def error_from_status(status: int, body: bytes, headers: httpx.Headers) -> ApiError:
    detail = _upstream_message(body)
    if status == 429:
        return rate_limited("the model provider's rate limit was reached; retry later", headers.get("retry-after"))
    if status in (408, 504):
        return gateway_timeout()
    if status == 404:
        return not_found(detail or "model not found", "model_not_found")
    if status in (400, 422):
        return bad_request(detail or "the model service rejected the request", "upstream_rejected")
    # 401/403 mean the gateway's own upstream credentials are wrong; 5xx is an upstream fault.
    return bad_gateway()


@dataclass(frozen=True)
class Upstream:
    """How one upstream service's transport failures read to callers (never its address)."""

    unreachable: str
    unreachable_code: str
    timed_out: str
    failed: str

    def transport_error(self, exc: httpx.HTTPError, timed_out: str | None = None) -> ApiError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return unavailable(self.unreachable, self.unreachable_code)
        if isinstance(exc, httpx.TimeoutException):
            return gateway_timeout(timed_out or self.timed_out)
        return bad_gateway(self.failed)


LITELLM = Upstream(
    unreachable="the model service (LiteLLM) is unreachable",
    unreachable_code="upstream_unavailable",
    timed_out="the upstream model service timed out",
    failed="the upstream model service returned an invalid answer",
)


def error_from_transport(exc: httpx.HTTPError) -> ApiError:
    return LITELLM.transport_error(exc)


async def read_and_close(response: httpx.Response) -> bytes:
    """The body of a refused streaming answer (for its error message), then the connection back."""
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


def stream_error_event(error: ApiError) -> bytes:
    """An SSE event in the shape OpenAI SDKs raise on mid-stream."""
    return b"data: " + error.body().model_dump_json().encode() + b"\n\n"
