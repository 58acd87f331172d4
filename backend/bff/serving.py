"""How uvicorn serves the BFF: one place for `python -m bff` and for the tests' servers.

What one connection may hold is bounded here, below the app:

- the request head (request line and headers) by MAX_HEADER_BYTES: 431 and the connection
  closed. uvicorn's httptools protocol (what `uvicorn[standard]` picks) has no such bound at
  all, and llhttp buffers a header of any size; h11's `h11_max_incomplete_event_size` answers
  400 and costs h11's pure-Python parsing on every request. So the BFF keeps httptools and
  counts the head's bytes in a small subclass (BoundedHttpToolsProtocol).
- the time to send that head: it must be complete within BFF_KEEPALIVE_SECONDS of the
  connection going idle (opened, or its last answer sent), or the connection is closed.
  uvicorn arms no timer on a new connection and drops the keep-alive one at the first byte.

Bodies are bounded in time where they are read (pipeline/bodies.py), where the answer can be
the gateway's JSON error and the request's span records it.
"""

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from bff.errors import ApiError, headers_too_large
from bff.settings import Settings

log = logging.getLogger("bff.serving")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without [standard]: h11 applies the bound (as 400)
    HttpToolsProtocol = None  # type: ignore[assignment, misc]

# uvicorn passes its Config to the protocol, pickled to each worker process; this field is the
# one uvicorn already has for the bound (h11's), so both implementations read the same number.
_DEFAULT_HEAD_LIMIT = 64 * 1024


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops parsing the data it was fed."""


def error_bytes(error: ApiError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 answer carrying `error` in the gateway's JSON shape, closing the connection."""
    body = error.body().model_dump_json().encode()
    head = [b"HTTP/1.1 %d %s\r\n" % (error.status, HTTPStatus(error.status).phrase.encode())]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n"]
    return b"".join(head) + body


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the request head bounded in size and in time."""

        def __init__(
            self, config: Config, server_state: ServerState, app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self.head_limit = config.h11_max_incomplete_event_size or _DEFAULT_HEAD_LIMIT
            self.head_pending = True  # between a message's end (or the connection's start) and its headers' end
            # Raw bytes read while the head is incomplete: at most the head itself, so a head still
            # arriving is refused as soon as it passes the bound (llhttp would buffer any size).
            self.head_bytes = 0
            self.head_refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # A connection that never sends a request is idle like a kept-alive one.
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def data_received(self, data: bytes) -> None:
            if not self.head_pending:
                super().data_received(data)
                return
            self.head_bytes += len(data)
            # uvicorn cancels the idle timer at the first byte; while the head is incomplete it stays armed.
            idle, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
            super().data_received(data)
            if not self.head_pending or self.transport.is_closing():
                if idle is not None:
                    idle.cancel()
            elif self.head_bytes > self.head_limit:
                if idle is not None:
                    idle.cancel()
                self.refuse_head()
            else:
                self.timeout_keep_alive_task = idle

        def on_headers_complete(self) -> None:
            # Exact, for a head that arrived whole within one read (the raw count sees only reads
            # that end with the head still incomplete): the target and each "name: value" line.
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.head_limit:
                self.head_refused = True
                raise _HeadTooLarge()
            self.head_pending = False
            self.head_bytes = 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.head_pending = True
            self.head_bytes = 0
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            # uvicorn answers 400 to any parser error, ours (_HeadTooLarge from a callback) included.
            if self.head_refused:
                self.refuse_head()
            else:
                super().send_400_response(msg)

        def refuse_head(self) -> None:
            log.warning("request head over %d bytes refused", self.head_limit)
            self.transport.write(error_bytes(headers_too_large(self.head_limit), self.server_state.default_headers))
            self.transport.close()


def http_protocol() -> type[asyncio.Protocol] | str:
    """BoundedHttpToolsProtocol, or h11 (which bounds the head itself) without httptools."""
    return BoundedHttpToolsProtocol if HttpToolsProtocol is not None else "h11"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run / uvicorn.Config keyword arguments (but the app) for these settings."""
    return {
        "host": settings.bff_host,
        "port": settings.bff_port,
        "access_log": False,  # the BFF writes its own structured access log
        "log_level": settings.log_level.lower(),
        # Behind Kong the BFF is /gateway/*, stripped: URLs it hands out (images, docs) carry the prefix.
        "root_path": settings.public_path_prefix,
        # X-Forwarded-Proto/-For are trusted from FORWARDED_ALLOW_IPS (uvicorn's setting; compose: Kong).
        "proxy_headers": True,
        "timeout_keep_alive": settings.bff_keepalive_seconds,
        "http": http_protocol(),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
