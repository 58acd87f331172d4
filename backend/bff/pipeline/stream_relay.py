"""Relays a LiteLLM stream to the client as it arrives, and knows how it ended.

A reader task reads LiteLLM and meters each event; the response writes what it
reads, so the client's pace still throttles the upstream (a small queue). When the
client leaves, the reader is not cut mid-read: after the last content it keeps
reading for a short grace to get LiteLLM's usage event, otherwise it is cancelled
and the upstream request closed at once (LiteLLM stops the provider).
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from bff.errors import ApiError
from bff.pipeline.stream_meter import StreamMeter
from bff.upstream.errors import error_from_transport, stream_error_event
from bff.upstream.litellm import LiteLLMResponse, UpstreamError

log = logging.getLogger("bff.stream")

QUEUE_EVENTS = 32


class StreamRelay:
    def __init__(
        self, upstream: LiteLLMResponse, meter: StreamMeter, on_first_byte: Callable[[], None], grace_seconds: float
    ):
        self.meter = meter
        self.failure: ApiError | None = None  # the upstream broke off (transport), or sent an error event
        self.client_gone = False  # the response ended before the client had everything
        self.delivered_all = False
        self._upstream = upstream
        self._on_first_byte = on_first_byte
        self._grace = grace_seconds
        # (data, whether it holds the stream's last event); None: the end
        self._queue: asyncio.Queue[tuple[bytes, bool] | None] = asyncio.Queue(QUEUE_EVENTS)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for chunk in self._upstream.iter_raw():
                await self._put(self.meter.feed(chunk))
                if self.client_gone and self.meter.usage is not None:
                    return  # billed exactly; nobody is reading the rest
            await self._put(self.meter.flush())
        except UpstreamError as exc:
            self.failure = error_from_transport(exc)
            await self._put([stream_error_event(self.failure)])
        finally:
            if self.meter.error is not None and self.failure is None:
                self.failure = self.meter.error
            if not self.client_gone:
                await self._queue.put(None)

    async def _put(self, events: list[bytes]) -> None:
        for number, event in enumerate(events, 1):
            if self.client_gone:
                return
            # only the stream's very last event ([DONE]) means the client had everything
            await self._queue.put((event, self.meter.done and number == len(events)))

    async def body(self) -> AsyncIterator[bytes]:
        item = await self._queue.get()
        if item is not None:
            self._on_first_byte()
        while item is not None:
            data, last = item
            yield data
            if last:  # a client may hang up once it has the last event (the OpenAI SDKs do)
                self.delivered_all = True
            item = await self._queue.get()
        self.delivered_all = True

    async def finish(self) -> None:
        """After the response: how long to keep reading, then the upstream closed."""
        self.client_gone = not self.delivered_all
        if not self._reader.done():
            while not self._queue.empty():  # frees a reader blocked on a full queue
                self._queue.get_nowait()
            if self.meter.finished and self.meter.usage is None and self._grace > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._reader), self._grace)
            if not self._reader.done():
                self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._upstream.aclose()


class PassThroughStream(StreamingResponse):
    """Streams as chunks arrive and stops as soon as the client goes away.

    Starlette only notices a disconnect on the next write; watching for it ends the
    response at once, so the background step (accounting, closing the upstream) runs
    without waiting for a slow or hung upstream.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream_then_stop() -> None:
                with contextlib.suppress(OSError):  # the client is gone; the disconnect watcher ends the group
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream_then_stop)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()
        if self.background is not None:
            await self.background()


def stream_response(
    relay: StreamRelay, headers: dict[str, str], settle: BackgroundTask, media_type: str = "text/event-stream"
) -> PassThroughStream:
    return PassThroughStream(
        relay.body(),
        media_type=media_type,
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
        background=settle,
    )
