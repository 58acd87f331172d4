"""ComfyUI's HTTP API and websocket: queue a prompt, read its history and images, stop it.

ComfyUI has no authentication of its own; it must only be reachable by the BFF.
Failures become the BFF's errors: unreachable 503, timeout 504, a rejected workflow
400 naming the node, anything else 502. Messages never carry ComfyUI's URL.
"""

import re
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from websockets.asyncio.client import ClientConnection, connect

from bff.errors import ApiError, bad_gateway, bad_request
from bff.upstream.errors import Upstream

SOCKET_MAX_BYTES = 16 * 1024 * 1024  # binary preview images arrive on the same socket
_URL = re.compile(r"(https?|wss?)://\S+")
_MAX_MESSAGE = 500


class PromptQueued(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_id: str = Field(min_length=1, max_length=128)
    number: float
    node_errors: dict[str, Any] | list[Any] = Field(default_factory=dict)


class ImageRef(BaseModel):
    """An output file as ComfyUI names it; only ever passed back to ComfyUI's /view."""

    model_config = ConfigDict(extra="allow")

    filename: str
    subfolder: str = ""
    type: str = "output"


class NodeOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    images: list[ImageRef] = Field(default_factory=list)


class HistoryStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    status_str: str | None = None
    completed: bool = False
    messages: list[Any] = Field(default_factory=list)


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    outputs: dict[str, NodeOutput] = Field(default_factory=dict)
    status: HistoryStatus | None = None

    def output_images(self) -> list[ImageRef]:
        return [image for output in self.outputs.values() for image in output.images if image.type == "output"]

    def failure(self) -> dict[str, Any] | None:
        """The execution_error / execution_interrupted message of a failed run."""
        if self.status is None or self.status.status_str != "error":
            return None
        for message in self.status.messages:
            if isinstance(message, list) and len(message) == 2 and message[0] in ("execution_error", "execution_interrupted"):
                return {"event": message[0], **(message[1] if isinstance(message[1], dict) else {})}
        return {"event": "execution_error"}


class SocketMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    data: dict[str, Any] = Field(default_factory=dict)


class QueueState(BaseModel):
    running: set[str]
    pending: set[str]


def _clean(text: object) -> str:
    return _URL.sub("[url]", str(text)).strip()[:_MAX_MESSAGE]


def rejection_message(body: Any) -> str:
    """Names each rejected node: `node '4' (CheckpointLoaderSimple): Value not in list: ckpt_name: ...`."""
    if not isinstance(body, dict):
        return "ComfyUI rejected the workflow"
    problems = []
    node_errors = body.get("node_errors")
    if isinstance(node_errors, dict):
        for node_id, entry in node_errors.items():
            entry = entry if isinstance(entry, dict) else {}
            errors = [e for e in entry.get("errors", []) if isinstance(e, dict)]
            detail = "; ".join(
                ": ".join(str(part) for part in (e.get("message"), e.get("details")) if part) for e in errors
            )
            problems.append(f"node '{node_id}' ({entry.get('class_type', 'unknown')}): {detail or 'invalid'}")
    if not problems:
        error = body.get("error")
        if isinstance(error, dict):
            problems.append(": ".join(str(p) for p in (error.get("message"), error.get("details")) if p))
        elif error:
            problems.append(str(error))
    return _clean("ComfyUI rejected the workflow: " + ("; ".join(problems) or "no reason given"))


COMFYUI = Upstream(
    name="ComfyUI",
    unreachable="the image service (ComfyUI) is unreachable",
    unreachable_code="comfyui_unavailable",
    timed_out="the image service (ComfyUI) timed out",
    failed="the image service (ComfyUI) failed to answer",
)


def _invalid_answer() -> ApiError:
    return bad_gateway("the image service (ComfyUI) returned an invalid answer")


class ComfyUIClient:
    def __init__(self, base_url: str, request_timeout: float = 30.0, connect_timeout: float = 5.0):
        self._base = base_url.rstrip("/")
        self._socket_base = re.sub(r"^http", "ws", self._base)
        self._connect_timeout = connect_timeout
        self._http = httpx.AsyncClient(
            base_url=self._base,
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise COMFYUI.transport_error(exc) from None

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        if response.status_code != 200:
            raise _invalid_answer()
        try:
            return response.json()
        except ValueError:
            raise _invalid_answer() from None

    async def queue_prompt(self, graph: dict[str, Any], client_id: str) -> PromptQueued:
        response = await self._request("POST", "/prompt", json={"prompt": graph, "client_id": client_id})
        if response.status_code == 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise bad_request(rejection_message(body), "workflow_rejected")
        if response.status_code != 200:
            raise _invalid_answer()
        try:
            return PromptQueued.model_validate(response.json())
        except (ValueError, ValidationError):
            raise _invalid_answer() from None

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """None while the prompt is queued or running (ComfyUI answers `{}`)."""
        body = await self._json("GET", f"/history/{quote(prompt_id, safe='')}")
        if not isinstance(body, dict):
            raise _invalid_answer()
        entry = body.get(prompt_id)
        if entry is None:
            return None
        try:
            return HistoryEntry.model_validate(entry)
        except ValidationError:
            raise _invalid_answer() from None

    async def view(self, image: ImageRef) -> bytes:
        params = {"filename": image.filename, "subfolder": image.subfolder, "type": image.type}
        response = await self._request("GET", "/view", params=params)
        if response.status_code != 200:
            raise _invalid_answer()
        return response.content

    async def queue(self) -> QueueState:
        body = await self._json("GET", "/queue")

        def ids(entries: Any) -> set[str]:
            return {str(e[1]) for e in entries or [] if isinstance(e, list) and len(e) > 1}

        if not isinstance(body, dict):
            raise _invalid_answer()
        return QueueState(running=ids(body.get("queue_running")), pending=ids(body.get("queue_pending")))

    async def interrupt(self, prompt_id: str) -> None:
        # Recent ComfyUI interrupts only this prompt; older releases ignore the body.
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def delete_queued(self, prompt_id: str) -> None:
        await self._request("POST", "/queue", json={"delete": [prompt_id]})

    async def open_socket(self, client_id: str) -> ClientConnection:
        """ComfyUI's event socket for one client id; raises OSError or a websockets error."""
        return await connect(
            f"{self._socket_base}/ws?clientId={quote(client_id, safe='')}",
            open_timeout=self._connect_timeout,
            max_size=SOCKET_MAX_BYTES,
        )

    async def aclose(self) -> None:
        await self._http.aclose()
