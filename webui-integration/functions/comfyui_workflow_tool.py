"""
title: ComfyUI workflows (LLM gateway)
author: LLM gateway
version: 1.0.0
license: MIT
required_open_webui_version: 0.12.0
description: Runs a named ComfyUI workflow through the LLM gateway (BFF) as the calling user, shows its progress and then the finished images in the chat.
"""

# An Open-WebUI Tool (Workspace > Tools > New Tool, paste). Open-WebUI execs this one file, so
# it is self-contained and uses only what Open-WebUI 0.12.4 already ships (httpx,
# pydantic, the standard library): no `requirements` line, nothing is pip-installed.
#
# Identity: every call to the BFF carries the service key (Authorization: Bearer) and
# an X-OpenWebUI-User-Jwt minted here for the calling user, with the same claims and
# secret Open-WebUI uses for its own calls (utils/headers.py), so the BFF applies the
# user's role, policy and budget exactly as for chat.

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from pydantic import BaseModel, Field

Emitter = Callable[[dict[str, Any]], Awaitable[None]]
TERMINAL = ("succeeded", "failed", "timed_out")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_user_jwt(user: dict[str, Any], secret: str, lifetime_seconds: int) -> str:
    """HS256 JWT with Open-WebUI's forwarded-user claims.

    Open-WebUI signs it with PyJWT; HS256 is a few lines of the standard library, which
    keeps this file loadable anywhere (and testable without Open-WebUI).
    """
    now = int(time.time())
    claims = {
        "sub": str(user["id"]),
        "email": str(user.get("email") or ""),
        "name": str(user.get("name") or ""),
        "role": str(user.get("role") or ""),
        "iss": "open-webui",
        "iat": now,
        "exp": now + lifetime_seconds,
    }
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


class GatewayError(Exception):
    """A failure whose message is safe to show to the user (no keys, no tracebacks)."""


class Tools:
    class Valves(BaseModel):
        BFF_URL: str = Field(
            default="http://bff:8080",
            description="The BFF as Open-WebUI's backend reaches it (compose: http://bff:8080; not the /gateway URL)",
        )
        BFF_SERVICE_KEY: str = Field(
            default="",
            description="One of the BFF's BFF_SERVICE_KEYS; empty: Open-WebUI's OPENAI_API_KEY environment variable",
            json_schema_extra={"input": {"type": "password"}},
        )
        FORWARD_USER_INFO_HEADER_JWT_SECRET: str = Field(
            default="",
            description="The secret shared with the BFF; empty: Open-WebUI's own FORWARD_USER_INFO_HEADER_JWT_SECRET",
            json_schema_extra={"input": {"type": "password"}},
        )
        USER_TOKEN_LIFETIME_SECONDS: int = Field(
            default=60, ge=10, le=300, description="Lifetime of the user token minted for each call to the BFF"
        )
        WORKFLOWS: str = Field(
            default="sdxl-basic",
            description="Comma-separated workflow names (config/comfyui/workflows.yaml) the model may run; the first is the default",
        )
        TIMEOUT_SECONDS: int = Field(default=600, ge=10, description="Longest wait for one job, queueing included")
        PROGRESS_INTERVAL_SECONDS: float = Field(
            default=1.0, ge=0, description="At most one progress update per interval (each one is saved in the chat)"
        )

    def __init__(self) -> None:
        self.valves = self.Valves()

    async def run_image_workflow(
        self,
        prompt: str,
        workflow: str | None = None,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        __user__: dict[str, Any] | None = None,
        __event_emitter__: Emitter | None = None,
        __metadata__: dict[str, Any] | None = None,
        __request__: Any = None,
    ) -> str:
        """
        Generate images from a text prompt with a ComfyUI workflow on the LLM gateway. The images are shown to the user in the chat automatically; do not repeat or embed them.

        :param prompt: A detailed description of the image to generate
        :param workflow: Name of the image workflow to run; leave empty for the default workflow
        :param negative_prompt: What the image should not contain
        :param width: Image width in pixels; leave empty for the workflow's default
        :param height: Image height in pixels; leave empty for the workflow's default
        :param steps: Number of sampler steps; leave empty for the workflow's default
        :param seed: Random seed for a reproducible image; leave empty for a random one
        :param batch_size: Number of images to generate (default 1)
        :return: What happened, for the assistant to tell the user
        """
        status = _Status(__event_emitter__)
        allowed = [name.strip() for name in self.valves.WORKFLOWS.split(",") if name.strip()]
        chosen = (workflow or "").strip() or (allowed[0] if allowed else "")
        if chosen not in allowed:
            names = ", ".join(allowed) or "none"
            return await status.fail(f"Unknown image workflow '{chosen[:64]}'. Available: {names}.")
        options = {
            "negative_prompt": negative_prompt,
            "width": width,
            "height": height,
            "steps": steps,
            "seed": seed,
            "batch_size": batch_size,
        }
        body = {"workflow": chosen, "prompt": prompt, **{key: value for key, value in options.items() if value is not None}}
        metadata = __metadata__ or {}
        try:
            gateway = _Gateway(self.valves, __user__ or {}, metadata.get("chat_id"))
            async with asyncio.timeout(self.valves.TIMEOUT_SECONDS):
                await status.show(f"Starting workflow {chosen}")
                job_id = (await gateway.request("POST", "/api/media/image/generate", json=body))["job_id"]
                job = await self._follow(gateway, job_id, chosen, status)
                if job["status"] != "succeeded":
                    raise GatewayError(_job_failure(job))
                images = [await gateway.image(job_id, index) for index in range(len(job["images"]))]
        except TimeoutError:
            return await status.fail(f"The workflow {chosen} did not finish within {self.valves.TIMEOUT_SECONDS} seconds.")
        except GatewayError as exc:
            return await status.fail(_redact(str(exc), self.valves))
        urls = [await _display_url(png, __request__, __user__ or {}, metadata) for png in images]
        if __event_emitter__ is not None:
            # One event with every image: the browser replaces the message's file list with it.
            await __event_emitter__({"type": "files", "data": {"files": [{"type": "image", "url": url} for url in urls]}})
        count = f"{len(urls)} image" + ("s" if len(urls) != 1 else "")
        await status.show(f"Generated {count} with {chosen}", done=True)
        return (
            f"Generated {count} with the workflow {chosen} (job {job_id}). "
            "The images are already visible to the user in the chat; do not embed or link them again."
        )

    async def _follow(self, gateway: "_Gateway", job_id: str, workflow: str, status: "_Status") -> dict[str, Any]:
        """The job's final state, showing its progress from the BFF's server-sent events."""
        shown_at = 0.0
        job: dict[str, Any] = {}
        try:
            async with contextlib.aclosing(gateway.events(job_id)) as events:
                async for kind, job in events:
                    now = time.monotonic()
                    if kind == "status" and job["status"] in ("queued", "running"):
                        await status.show(f"{workflow}: {job['status']}")
                    elif kind == "progress" and now - shown_at >= self.valves.PROGRESS_INTERVAL_SECONDS:
                        shown_at = now
                        await status.show(f"{workflow}: step {job['progress']['value']}/{job['progress']['max']}")
        except httpx.TransportError:
            pass  # the stream broke (a proxy, a restart of the connection): the job goes on, so ask for its state
        while job.get("status") not in TERMINAL:
            job = await gateway.request("GET", f"/api/media/jobs/{job_id}")
            if job["status"] not in TERMINAL:
                await asyncio.sleep(1.0)
        return job


class _Status:
    """Status lines under the assistant message (Open-WebUI's `status` event)."""

    def __init__(self, emitter: Emitter | None):
        self._emit = emitter

    async def show(self, description: str, done: bool = False) -> None:
        if self._emit is not None:
            await self._emit({"type": "status", "data": {"description": description, "done": done}})

    async def fail(self, message: str) -> str:
        await self.show(message, done=True)
        return f"Image generation failed: {message} Tell the user; do not retry unless they ask."


class _Gateway:
    """Calls to the BFF as the calling user, with a fresh user token for each call."""

    def __init__(self, valves: Tools.Valves, user: dict[str, Any], chat_id: str | None):
        self._valves = valves
        self._user = user
        self._chat_id = chat_id
        self._key, self._secret = _credentials(valves)
        if not user.get("id"):
            raise GatewayError("No Open-WebUI user is attached to this call.")
        if not self._key or not self._secret:
            raise GatewayError(
                "The tool is not configured: an admin must set its BFF_SERVICE_KEY and FORWARD_USER_INFO_HEADER_JWT_SECRET valves."
            )

    def _client(self, read_timeout: float = 30.0) -> httpx.AsyncClient:
        headers = {
            "Authorization": f"Bearer {self._key}",
            "X-OpenWebUI-User-Jwt": mint_user_jwt(self._user, self._secret, self._valves.USER_TOKEN_LIFETIME_SECONDS),
        }
        if self._chat_id:
            headers["X-OpenWebUI-Chat-Id"] = self._chat_id
        timeout = httpx.Timeout(read_timeout, connect=5.0)
        return httpx.AsyncClient(base_url=self._valves.BFF_URL.rstrip("/"), headers=headers, timeout=timeout)

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._client() as client:
                response = await client.request(method, path, **kwargs)
        except httpx.HTTPError:
            raise GatewayError(_UNREACHABLE) from None
        _raise_for(response.status_code, response.content)
        return response.json()

    async def image(self, job_id: str, index: int) -> bytes:
        try:
            async with self._client() as client:
                response = await client.get(f"/api/media/images/{job_id}/{index}")
        except httpx.HTTPError:
            raise GatewayError(_UNREACHABLE) from None
        _raise_for(response.status_code, response.content)
        return response.content

    async def events(self, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event kind, job state) from GET /api/media/jobs/{id}/events, up to and including `end`."""
        # Queued behind other jobs the stream may stay silent for long, so reads may take the whole timeout.
        async with (
            self._client(read_timeout=self._valves.TIMEOUT_SECONDS) as client,
            client.stream("GET", f"/api/media/jobs/{job_id}/events") as response,
        ):
            if response.status_code != 200:
                _raise_for(response.status_code, await response.aread())
            kind, data = "", ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line and data:
                    yield kind, json.loads(data)
                    if kind == "end":
                        return
                    kind, data = "", ""


_UNREACHABLE = "The LLM gateway cannot be reached right now; try again later (an admin can check the tool's BFF_URL valve)."


def _raise_for(status: int, content: bytes) -> None:
    """Turns the BFF's error answers ({"error": {"message", "code"}}) into a sentence for the user."""
    if status < 400:
        return
    try:
        message = str(json.loads(content)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {status}"
    if status == 401:
        raise GatewayError(
            f"The LLM gateway did not accept this tool's credentials ({message}). "
            "An admin must check the tool's BFF_SERVICE_KEY and FORWARD_USER_INFO_HEADER_JWT_SECRET valves."
        )
    if status == 403:
        raise GatewayError(f"The LLM gateway refused: {message}.")
    if status == 429:
        raise GatewayError(f"Not now: {message}.")
    if status in (502, 503, 504):
        raise GatewayError(f"The image service is unavailable ({message}); try again later.")
    raise GatewayError(f"The LLM gateway answered {status}: {message}.")


def _job_failure(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    if job.get("status") == "timed_out":
        return f"The workflow {job.get('workflow')} took too long and was stopped."
    return f"The workflow {job.get('workflow')} failed: {error.get('message') or 'unknown error'}."


def _credentials(valves: Tools.Valves) -> tuple[str, str]:
    """(service key, JWT secret): the valves, or else the values Open-WebUI itself runs with."""
    return (
        valves.BFF_SERVICE_KEY or os.environ.get("OPENAI_API_KEY", ""),
        valves.FORWARD_USER_INFO_HEADER_JWT_SECRET or os.environ.get("FORWARD_USER_INFO_HEADER_JWT_SECRET", ""),
    )


def _redact(text: str, valves: Tools.Valves) -> str:
    """Belt and braces: no secret ever reaches the chat, whatever an error message contains."""
    for secret in _credentials(valves):
        if secret:
            text = text.replace(secret, "***")
    return text


async def _display_url(png: bytes, request: Any, user: dict[str, Any], metadata: dict[str, Any]) -> str:
    """Where the browser loads the image from.

    Open-WebUI 0.12.4 shows a message's image only from a relative path or a data: URI
    (its safeImageUrl replaces any other origin with a placeholder), and the BFF keeps
    images only MEDIA_RETENTION_HOURS. So the bytes are fetched here as the user, then,
    like Open-WebUI's own image tools, stored in Open-WebUI's file store for saved chats
    (a /api/v1/files/... URL, kept with the chat), else shown inline as a data: URI.
    """
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    chat_id = str(metadata.get("chat_id") or "")
    if request is None or not chat_id or chat_id.startswith(("temporary:", "local:", "channel:")):
        return data_uri
    try:
        from open_webui.models.users import UserModel
        from open_webui.utils.files import get_file_url_from_base64

        owner = UserModel(**{key: value for key, value in user.items() if key != "valves"})
        where = {key: metadata.get(key) for key in ("chat_id", "message_id", "session_id")}
        return await get_file_url_from_base64(request, data_uri, where, owner) or data_uri
    except Exception:
        return data_uri
