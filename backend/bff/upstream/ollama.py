"""One pooled async HTTP client to the Ollama server, for model management.

Chat with Ollama models goes through LiteLLM; this client only lists, pulls and
deletes models. Error bodies never carry Ollama's address: its own messages are
shown only after removing URLs, IP addresses and its host name.
"""

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

import httpx
from pydantic import AfterValidator, BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from bff.errors import ApiError, bad_gateway, bad_request, gateway_timeout, not_found
from bff.settings import Settings
from bff.upstream.errors import Upstream, read_and_close

MODEL_NAME_MAX = 200
MODEL_NAME_RULE = (
    f"an Ollama model name: 1-{MODEL_NAME_MAX} letters, digits and . _ - : /, "
    "starting with a letter or digit, without '..'"
)
_MODEL_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:/-]{{0,{MODEL_NAME_MAX - 1}}}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\[[0-9A-Fa-f:]+\](?::\d+)?")
_MAX_MESSAGE = 300

UNREACHABLE = "the Ollama server is unreachable"
TIMED_OUT = "the Ollama server did not answer in time"
INVALID_ANSWER = "the Ollama server returned an invalid answer"

ModelT = TypeVar("ModelT", bound=BaseModel)


def is_model_name(value: str) -> bool:
    return ".." not in value and _MODEL_NAME.fullmatch(value) is not None


def _model_name(value: str) -> str:
    if not is_model_name(value):
        raise PydanticCustomError("ollama_model_name", MODEL_NAME_RULE)
    return value


ModelName = Annotated[str, AfterValidator(_model_name)]


class PullProgress(BaseModel):
    """One progress object of an Ollama pull, relayed as it arrives."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


OLLAMA = Upstream(name="Ollama", unreachable=UNREACHABLE, unreachable_code="ollama_unavailable", timed_out=TIMED_OUT, failed=INVALID_ANSWER)


class OllamaClient:
    def __init__(self, settings: Settings):
        timeout = settings.ollama_timeout_seconds
        self._pull_timeout = httpx.Timeout(timeout, read=settings.ollama_pull_idle_timeout_seconds)
        self._pull_idle_seconds = settings.ollama_pull_idle_timeout_seconds
        self._http = httpx.AsyncClient(
            base_url=settings.ollama_base_url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        host = httpx.URL(settings.ollama_base_url).host
        self._host = re.compile(rf"(?<![\w.-]){re.escape(host)}(?![\w.-])") if host else None

    def _clean(self, message: str) -> str:
        message = _URL.sub("[url]", message)
        message = _IP.sub("[address]", message)
        if self._host is not None:
            message = self._host.sub("[host]", message)
        return message.strip()[:_MAX_MESSAGE]

    def _message(self, body: bytes) -> str:
        try:
            error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            return ""
        return self._clean(error) if isinstance(error, str) else ""

    def _status_error(self, status: int, body: bytes) -> ApiError:
        detail = self._message(body)
        if status == 404:
            return not_found(f"Ollama: {detail or 'model not found'}", "model_not_found")
        if status == 400:
            return bad_request(f"Ollama rejected the request: {detail or 'invalid request'}", "upstream_rejected")
        if status in (408, 504):
            return gateway_timeout(TIMED_OUT)
        return bad_gateway(INVALID_ANSWER)

    async def get(self, path: str, shape: type[ModelT]) -> ModelT:
        """A GET answer validated into `shape` (unknown fields dropped)."""
        try:
            response = await self._http.get(path)
        except httpx.HTTPError as exc:
            raise OLLAMA.transport_error(exc) from None
        if response.status_code != 200:
            raise bad_gateway(INVALID_ANSWER)
        try:
            return shape.model_validate_json(response.content)
        except ValidationError:
            raise bad_gateway(INVALID_ANSWER) from None

    async def delete(self, name: str) -> None:
        try:
            response = await self._http.request("DELETE", "/api/delete", json={"model": name})
        except httpx.HTTPError as exc:
            raise OLLAMA.transport_error(exc) from None
        if response.status_code == 404:
            raise not_found(f"model '{name}' is not installed in Ollama", "model_not_found")
        if response.status_code != 200:
            raise self._status_error(response.status_code, response.content)

    async def open_pull(self, name: str) -> httpx.Response:
        """The streaming pull answer (200 only); the caller reads it with `pull_progress`."""
        request = self._http.build_request(
            "POST", "/api/pull", json={"model": name, "stream": True}, timeout=self._pull_timeout
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise OLLAMA.transport_error(exc) from None
        if response.status_code != 200:
            raise self._status_error(response.status_code, await read_and_close(response))
        return response

    async def pull_progress(self, response: httpx.Response) -> AsyncIterator[PullProgress | ApiError]:
        """Each progress object as its line arrives, up to `success`; a failure is the last item."""
        try:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                item = self._pull_item(line)
                yield item
                if isinstance(item, ApiError) or item.status == "success":
                    return
            yield bad_gateway("the Ollama server ended the pull before it succeeded")
        except httpx.HTTPError as exc:
            yield OLLAMA.transport_error(exc, f"the Ollama server sent no pull progress for {self._pull_idle_seconds:g} s")
        finally:
            await response.aclose()

    def _pull_item(self, line: str) -> PullProgress | ApiError:
        try:
            payload: Any = json.loads(line)
        except ValueError:
            return bad_gateway(INVALID_ANSWER)
        if isinstance(payload, dict) and "error" in payload:
            message = f"Ollama could not pull the model: {self._clean(str(payload['error']))}"
            if "does not exist" in message or "not found" in message:
                return not_found(message, "model_not_found")
            return ApiError(502, message, "upstream_error", "ollama_pull_failed")
        try:
            return PullProgress.model_validate(payload)
        except ValidationError:
            return bad_gateway(INVALID_ANSWER)

    async def aclose(self) -> None:
        await self._http.aclose()
