"""One pooled async HTTP client to the LiteLLM proxy."""

from typing import Any

import httpx

from bff.errors import bad_gateway
from bff.settings import Settings
from bff.upstream.errors import error_from_status, error_from_transport, read_and_close

CHAT_PATH = "/v1/chat/completions"


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
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        )

    async def get_json(self, path: str) -> Any:
        try:
            response = await self._http.get(path)
        except httpx.HTTPError as exc:
            raise error_from_transport(exc) from None
        if response.status_code != 200:
            raise error_from_status(response.status_code, response.content, response.headers)
        try:
            return response.json()
        except ValueError:
            raise bad_gateway() from None

    async def chat(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Non-streaming call; returns only a 200 answer, raises ApiError otherwise."""
        try:
            response = await self._http.post(CHAT_PATH, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise error_from_transport(exc) from None
        if response.status_code != 200:
            raise error_from_status(response.status_code, response.content, response.headers)
        return response

    async def open_chat_stream(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Streaming call: the caller iterates the 200 answer and must close it."""
        request = self._http.build_request("POST", CHAT_PATH, content=body, headers=headers)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise error_from_transport(exc) from None
        if response.status_code != 200:
            raise error_from_status(response.status_code, await read_and_close(response), response.headers)
        return response

    async def is_alive(self) -> str | None:
        """None when LiteLLM answers its liveness probe, else what went wrong."""
        try:
            response = await self._http.get("/health/liveliness", timeout=3.0)
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        return None if response.status_code == 200 else f"liveliness answered {response.status_code}"

    async def aclose(self) -> None:
        await self._http.aclose()
