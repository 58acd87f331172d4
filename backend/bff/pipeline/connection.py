"""Waiting on LiteLLM only while the client is still there.

A client that hangs up while the BFF waits for LiteLLM's first answer byte (a slow model,
a hung provider) must not keep the upstream request open until the timeout: the wait is
cancelled, which closes the connection to LiteLLM, and LiteLLM stops the provider call.
Streams are watched by their response (stream_relay.PassThroughStream) once they start.
"""

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client left before the answer was ready."""


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def while_connected(receive: Receive, work: Awaitable[T]) -> T:
    """`work`'s result, or ClientDisconnected (with `work` cancelled) if the client leaves first.

    Call it only once the request body has been read: then the next ASGI message is the disconnect.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected()
    return task.result()
