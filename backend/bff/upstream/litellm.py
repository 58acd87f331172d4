"""One pooled async HTTP client to the LiteLLM proxy: pure I/O, any status returned.

Every LLM call crosses this hop, so it uses aiohttp: on this hop httpx cost ~0.75 ms of
CPU per request against aiohttp's ~0.09 ms (scripts/bench_http_clients.py), a third of
the BFF's whole budget. Its failures leave this module as `UpstreamError`s, so callers
never depend on the library.

Idle pooled connections expire before LiteLLM's server closes them (its uvicorn
keep-alive is 5 s), and a request whose pooled connection was closed under it before
any answer byte is sent once more on a new connection: LiteLLM never saw it.
"""

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from bff.settings import Settings

log = logging.getLogger("bff.upstream")

CHAT_PATH = "/v1/chat/completions"
TOKEN_COUNTER_PATH = "/utils/token_counter"  # {model, messages | prompt} -> {total_tokens}
COST_ESTIMATE_PATH = "/cost/estimate"  # {model, input_tokens, output_tokens} -> {cost_per_request}
MAX_CONNECTIONS = 512


class UpstreamError(Exception):
    """LiteLLM could not be asked, or its answer broke off."""


class UpstreamUnreachable(UpstreamError):
    """No connection: refused, or none within the connect timeout."""


class UpstreamTimeout(UpstreamError):
    """LiteLLM went silent for longer than the read timeout."""


class UpstreamBrokeOff(UpstreamError):
    """The connection ended before the answer was complete."""


def _upstream_error(exc: Exception) -> UpstreamError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return UpstreamUnreachable(type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(type(exc).__name__)
    return UpstreamBrokeOff(type(exc).__name__)


class LiteLLMResponse:
    """LiteLLM's status and headers; the body read whole (`content`) or relayed (`iter_raw`)."""

    def __init__(self, raw: aiohttp.ClientResponse, content: bytes = b""):
        self._raw = raw
        self.status_code = raw.status
        self.headers: Mapping[str, str] = raw.headers  # case-insensitive
        self.content = content

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON."""
        return json.loads(self.content)

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive."""
        try:
            async for chunk in self._raw.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _upstream_error(exc) from None

    async def aread(self) -> bytes:
        try:
            self.content = await self._raw.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _upstream_error(exc) from None
        return self.content

    async def aclose(self) -> None:
        """The connection back to the pool once read in full; closed if the body was left unread
        (LiteLLM then stops the provider call)."""
        if self._raw.content.at_eof():
            self._raw.release()
        else:
            self._raw.close()


class LiteLLMClient:
    def __init__(self, settings: Settings):
        self._base_url = settings.litellm_url.rstrip("/")
        # identity encoding: stream bytes are relayed raw, so they must never arrive compressed
        self._headers = {
            "Authorization": f"Bearer {settings.litellm_master_key.get_secret_value()}",
            "Accept-Encoding": "identity",
        }
        # connect: waiting for a pooled connection and opening one; sock_read: silence between reads
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.upstream_connect_timeout_seconds, sock_read=settings.upstream_timeout_seconds
        )
        self._keepalive = settings.litellm_pool_keepalive_seconds
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the event loop

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=self._keepalive, use_dns_cache=True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # one session serves every user: nothing may carry over
            )
        return self._session

    async def post(self, path: str, body: bytes, headers: dict[str, str], stream: bool = False) -> LiteLLMResponse:
        """LiteLLM's answer, whatever its status. With `stream` the caller reads and closes it."""
        response = await self._send("POST", path, data=body, headers=headers)
        return response if stream else await self._read(response)

    async def post_form(
        self, path: str, data: dict[str, str | list[str]], files: list[tuple[str, tuple[str, bytes, str]]], headers: dict[str, str]
    ) -> LiteLLMResponse:
        """A multipart call (audio, image edits); aiohttp writes the content type with its boundary."""
        form_headers = {name: value for name, value in headers.items() if name.lower() != "content-type"}

        def form() -> aiohttp.FormData:
            fields = aiohttp.FormData()
            for name, value in data.items():
                for item in value if isinstance(value, list) else [value]:
                    fields.add_field(name, item)
            for name, (filename, content, content_type) in files:
                fields.add_field(name, content, filename=filename, content_type=content_type)
            return fields

        return await self._read(await self._send("POST", path, data=form, headers=form_headers))

    async def get(self, path: str, timeout_seconds: float | None = None) -> LiteLLMResponse:
        timeout = None if timeout_seconds is None else aiohttp.ClientTimeout(total=timeout_seconds)
        return await self._read(await self._send("GET", path, timeout=timeout))

    async def get_json(self, path: str, timeout_seconds: float | None = None) -> Any:
        """A 200 JSON answer; raises UpstreamError or ValueError otherwise."""
        response = await self.get(path, timeout_seconds)
        if response.status_code != 200:
            raise ValueError(f"{path} answered {response.status_code}")
        return response.json()

    async def _read(self, response: LiteLLMResponse) -> LiteLLMResponse:
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def _send(self, method: str, path: str, data: Any = None, **options: Any) -> LiteLLMResponse:
        """Sends; a request whose pooled connection turns out closed before any answer byte is
        sent once more (a failed connect is not that: it never reached LiteLLM)."""
        try:
            return await self._request(method, path, data, options)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):
                raise _upstream_error(exc) from None
            log.info("LiteLLM closed a connection before answering (%s); sending once more", type(exc).__name__)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _upstream_error(exc) from None
        try:
            return await self._request(method, path, data, options)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _upstream_error(exc) from None

    async def _request(self, method: str, path: str, data: Any, options: dict[str, Any]) -> LiteLLMResponse:
        body = data() if callable(data) else data  # a FormData is written once: a new one per try
        raw = await self._http().request(method, self._base_url + path, data=body, allow_redirects=False, **options)
        return LiteLLMResponse(raw)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
