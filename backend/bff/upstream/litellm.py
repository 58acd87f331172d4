"""One pooled async HTTP client to the LiteLLM proxy: pure I/O, any status returned.

Idle pooled connections expire before LiteLLM's server closes them (its uvicorn
keep-alive is 5 s), and a request whose pooled connection was closed under it before
any answer byte is sent once more on a new connection: LiteLLM never saw it.
"""

import logging
from typing import Any

import httpx

from bff.settings import Settings

log = logging.getLogger("bff.upstream")

CHAT_PATH = "/v1/chat/completions"
TOKEN_COUNTER_PATH = "/utils/token_counter"  # {model, messages | prompt} -> {total_tokens}
COST_ESTIMATE_PATH = "/cost/estimate"  # {model, input_tokens, output_tokens} -> {cost_per_request}
# Raised by httpx when the server closed the connection before answering (a stale keep-alive).
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class LiteLLMClient:
    def __init__(self, settings: Settings):
        self._http = httpx.AsyncClient(
            base_url=settings.litellm_url,
            # identity encoding: stream bytes are relayed raw, so they must never arrive compressed
            headers={
                "Authorization": f"Bearer {settings.litellm_master_key.get_secret_value()}",
                "Accept-Encoding": "identity",
            },
            timeout=httpx.Timeout(settings.upstream_timeout_seconds, connect=settings.upstream_connect_timeout_seconds),
            limits=httpx.Limits(
                max_connections=512,
                max_keepalive_connections=128,
                keepalive_expiry=settings.litellm_pool_keepalive_seconds,
            ),
        )

    async def post(self, path: str, body: bytes, headers: dict[str, str], stream: bool = False) -> httpx.Response:
        """LiteLLM's answer, whatever its status. With `stream` the caller reads and closes it."""
        response = await self._send(self._http.build_request("POST", path, content=body, headers=headers))
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    async def post_form(
        self, path: str, data: dict[str, str | list[str]], files: list[tuple[str, tuple[str, bytes, str]]], headers: dict[str, str]
    ) -> httpx.Response:
        """A multipart call (audio, image edits); httpx writes the content type with its boundary."""
        form_headers = {name: value for name, value in headers.items() if name.lower() != "content-type"}
        request = self._http.build_request("POST", path, data=data, files=files, headers=form_headers)
        response = await self._send(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def get(self, path: str, timeout_seconds: float | None = None) -> httpx.Response:
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_seconds is None else timeout_seconds
        request = self._http.build_request("GET", path, timeout=timeout)
        response = await self._send(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Sends; only the phase before the first answer byte is retried, once."""
        try:
            return await self._http.send(request, stream=True)
        except STALE_CONNECTION as exc:
            log.info("LiteLLM closed a connection before answering (%s); sending once more", type(exc).__name__)
        return await self._http.send(request, stream=True)

    async def get_json(self, path: str, timeout_seconds: float | None = None) -> Any:
        """A 200 JSON answer; raises httpx.HTTPError or ValueError otherwise."""
        response = await self.get(path, timeout_seconds)
        response.raise_for_status()
        return response.json()

    async def aclose(self) -> None:
        await self._http.aclose()
