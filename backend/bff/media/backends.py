"""Image backends: ComfyUI, and a mock that renders a small PNG without ComfyUI.

Both go through the same steps (submit, follow with progress, cancel) and return PNG
bytes, so everything above them answers in one shape. Which backend serves a workflow
is decided once at start-up (`resolve_backends`), never per request. A job runs one
`JobRun`: a workflow on its backend here, or a LiteLLM image model (media/litellm.py).
"""

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from PIL import Image
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import WebSocketException

from bff.errors import ApiError, bad_gateway
from bff.media.workflows import BackendName, ImageParams, WorkflowCatalog
from bff.settings import Settings
from bff.upstream.comfyui import ComfyUIClient, HistoryEntry, SocketMessage

log = logging.getLogger("bff.images")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MOCK_MAX_SIDE = 256
MOCK_PROGRESS_EVENTS = 4
MOCK_STEP_SECONDS = 0.05
FINAL_MESSAGES = frozenset({"execution_success", "execution_error", "execution_interrupted"})


class ProgressSink(Protocol):
    async def running(self) -> None: ...

    async def progress(self, value: int, maximum: int) -> None: ...


@dataclass
class Submission:
    id: str  # ComfyUI's prompt_id, or the mock's own
    params: ImageParams
    socket: ClientConnection | None = None


class ImageBackend(Protocol):
    name: BackendName
    timeout_seconds: float

    async def submit(self, graph: dict[str, Any], params: ImageParams) -> Submission: ...

    async def follow(self, submission: Submission, sink: ProgressSink) -> list[bytes]: ...

    async def cancel(self, submission: Submission) -> None: ...

    async def release(self, submission: Submission) -> None: ...

    async def aclose(self) -> None: ...


class JobRun(Protocol):
    """What one job runs, whoever serves it: the images, a way to stop, and their cost."""

    @property
    def timeout_seconds(self) -> float: ...

    async def images(self, sink: ProgressSink) -> list[bytes]:
        """PNG bytes; raises ApiError for a failure the caller may see, TimeoutError for a timeout."""
        ...

    async def stop(self) -> None:
        """After a timeout or at shutdown: stop the generation upstream, best effort."""
        ...

    async def close(self) -> None:
        """Always, once the job ended: free what the run holds."""
        ...

    def cost(self, images: int) -> Decimal | None:
        """What the call cost, once it answered (None: nothing was priced)."""
        ...

    def timeout_message(self) -> str: ...


def as_png(data: bytes) -> bytes:
    """PNG bytes as they are, anything else Pillow can read converted; garbage is refused."""
    if data.startswith(PNG_SIGNATURE):
        return data
    try:
        with Image.open(io.BytesIO(data)) as image:
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()
    except (OSError, ValueError):
        raise bad_gateway("the image service returned something that is not an image") from None


def _failure_error(failure: dict[str, Any]) -> ApiError:
    if failure.get("event") == "execution_interrupted":
        return ApiError(502, "the generation was interrupted in ComfyUI", "upstream_error", "generation_interrupted")
    node = f"node '{failure.get('node_id', '?')}' ({failure.get('node_type', 'unknown')})"
    reason = str(failure.get("exception_message") or "execution failed").strip()[:300]
    return ApiError(502, f"ComfyUI failed in {node}: {reason}", "upstream_error", "generation_failed")


class ComfyUIBackend:
    """One websocket per job (its own client id), falling back to /history polling.

    A socket per job keeps jobs independent: ComfyUI sends a prompt's progress only to
    the client id that queued it, so nothing needs routing, and a dropped socket
    affects one job, which then polls /history until the prompt is finished.
    """

    name: BackendName = "comfyui"

    def __init__(self, client: ComfyUIClient, timeout_seconds: float, poll_seconds: float):
        self.client = client
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

    async def submit(self, graph: dict[str, Any], params: ImageParams) -> Submission:
        client_id = uuid.uuid4().hex
        socket: ClientConnection | None = None
        try:
            socket = await self.client.open_socket(client_id)  # before queueing, so no event is missed
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("ComfyUI socket unavailable (%s); polling /history instead", type(exc).__name__)
        try:
            queued = await self.client.queue_prompt(graph, client_id)
        except BaseException:
            if socket is not None:
                await socket.close()
            raise
        return Submission(id=queued.prompt_id, params=params, socket=socket)

    async def follow(self, submission: Submission, sink: ProgressSink) -> list[bytes]:
        if submission.socket is not None:
            try:
                await self._watch(submission, sink)
            except (OSError, WebSocketException) as exc:
                log.warning("ComfyUI socket dropped (%s); polling /history", type(exc).__name__)
            finally:
                await self.release(submission)
        entry = await self._finished_entry(submission.id)
        failure = entry.failure()
        if failure is not None:
            raise _failure_error(failure)
        refs = entry.output_images()
        if not refs:
            raise bad_gateway("ComfyUI finished without output images")
        return [as_png(await self.client.view(ref)) for ref in refs]

    async def _watch(self, submission: Submission, sink: ProgressSink) -> None:
        """Returns when ComfyUI says the prompt is done; raises when the socket drops."""
        assert submission.socket is not None
        async for raw in submission.socket:
            if isinstance(raw, bytes):
                continue  # preview images
            try:
                message = SocketMessage.model_validate(json.loads(raw))
            except ValueError:
                continue
            if message.data.get("prompt_id") != submission.id:
                continue
            if message.type == "execution_start" or (message.type == "executing" and message.data.get("node")):
                await sink.running()
            elif message.type == "progress":
                value, maximum = message.data.get("value"), message.data.get("max")
                if isinstance(value, int) and isinstance(maximum, int):
                    await sink.progress(value, maximum)
            elif message.type in FINAL_MESSAGES or (message.type == "executing" and message.data.get("node") is None):
                return  # the outcome is read from /history
        raise ConnectionError("the socket closed before the prompt finished")

    async def _finished_entry(self, prompt_id: str) -> HistoryEntry:
        """ComfyUI writes the history entry when the prompt is finished; until then it answers {}."""
        while True:
            entry = await self.client.history(prompt_id)
            if entry is not None:
                return entry
            await asyncio.sleep(self.poll_seconds)

    async def cancel(self, submission: Submission) -> None:
        """Interrupt the prompt if it runs, delete it from the queue if it waits; best effort."""
        try:
            state = await self.client.queue()
            running, pending = submission.id in state.running, submission.id in state.pending
        except ApiError:
            running = pending = True
        try:
            if pending:
                await self.client.delete_queued(submission.id)
            if running:
                await self.client.interrupt(submission.id)
        except ApiError as exc:
            log.warning("could not stop ComfyUI prompt: %s", exc.message)

    async def release(self, submission: Submission) -> None:
        if submission.socket is not None:
            socket, submission.socket = submission.socket, None
            with contextlib.suppress(Exception):
                await socket.close()

    async def aclose(self) -> None:
        await self.client.aclose()


def render_mock_png(params: ImageParams, index: int) -> bytes:
    """A flat colour from the prompt's hash, at the requested size capped at MOCK_MAX_SIDE."""
    digest = hashlib.sha256(f"{params.prompt}\n{params.seed}\n{index}".encode()).digest()
    size = (min(params.width, MOCK_MAX_SIDE), min(params.height, MOCK_MAX_SIDE))
    out = io.BytesIO()
    Image.new("RGB", size, (digest[0], digest[1], digest[2])).save(out, format="PNG")
    return out.getvalue()


class MockImageBackend:
    """Same states and progress events as ComfyUI, a few short steps, real PNG bytes."""

    name: BackendName = "mock"

    def __init__(self, timeout_seconds: float, step_seconds: float = MOCK_STEP_SECONDS):
        self.timeout_seconds = timeout_seconds
        self.step_seconds = step_seconds

    async def submit(self, graph: dict[str, Any], params: ImageParams) -> Submission:
        return Submission(id=uuid.uuid4().hex, params=params)

    async def follow(self, submission: Submission, sink: ProgressSink) -> list[bytes]:
        params = submission.params
        total = params.steps or MOCK_PROGRESS_EVENTS
        await asyncio.sleep(self.step_seconds)
        await sink.running()
        events = min(total, MOCK_PROGRESS_EVENTS)
        for event in range(1, events + 1):
            await asyncio.sleep(self.step_seconds)
            await sink.progress(total * event // events, total)
        return [await asyncio.to_thread(render_mock_png, params, index) for index in range(params.batch_size)]

    async def cancel(self, submission: Submission) -> None:
        return None

    async def release(self, submission: Submission) -> None:
        return None

    async def aclose(self) -> None:
        return None


def build_backends(settings: Settings, names: set[BackendName]) -> dict[BackendName, ImageBackend]:
    """Only the backends some workflow uses; in mock mode that is the mock alone."""
    backends: dict[BackendName, ImageBackend] = {}
    if "mock" in names:
        backends["mock"] = MockImageBackend(settings.mock_image_timeout_seconds)
    if "comfyui" in names:
        backends["comfyui"] = ComfyUIBackend(
            ComfyUIClient(settings.comfyui_url), settings.comfyui_timeout_seconds, settings.comfyui_poll_interval_seconds
        )
    return backends


def backend_names(catalog: WorkflowCatalog, mode: str) -> dict[str, BackendName]:
    """workflow -> backend name: the configured one in live mode, the mock for all in mock mode."""
    return {workflow.name: "mock" if mode == "mock" else workflow.config.backend for workflow in catalog}


def resolve_backends(
    catalog: WorkflowCatalog, mode: str, settings: Settings
) -> tuple[dict[str, ImageBackend], list[ImageBackend]]:
    """Each workflow's backend object, and the distinct backends (to close them)."""
    names = backend_names(catalog, mode)
    backends: Mapping[BackendName, ImageBackend] = build_backends(settings, set(names.values()))
    return {workflow: backends[name] for workflow, name in names.items()}, list(backends.values())
