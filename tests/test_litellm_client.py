"""The pooled client to LiteLLM never turns a connection LiteLLM closed into a false 502.

A loopback HTTP/1.1 server plays a keep-alive server that closes idle connections: it
answers the first request on a connection, then, like uvicorn at its keep-alive timeout,
drops the connection as the next request arrives, without answering. The client must send
that request again on a new connection, once, and expire idle connections by itself.
"""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bff.settings import Settings
from bff.upstream.litellm import CHAT_PATH, LiteLLMClient
from conftest import MASTER_KEY, WEBUI_SECRET

ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: keep-alive\r\n\r\n{"ok":true}'


class ClosingServer:
    """Answers one request per connection; a second request on it is met by a close."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.answered = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            if not self._read_request(conn):
                return
            self.answered += 1
            conn.sendall(ANSWER)
            self._read_request(conn)  # the next request on this connection: closed unanswered

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def closing_server() -> Iterator[ClosingServer]:
    server = ClosingServer()
    yield server
    server.close()


def _client(port: int, keepalive: float) -> LiteLLMClient:
    settings = Settings(
        litellm_url=f"http://127.0.0.1:{port}",
        litellm_master_key=MASTER_KEY,
        webui_secret_key=WEBUI_SECRET,
        litellm_pool_keepalive_seconds=keepalive,
    )  # type: ignore[call-arg]
    return LiteLLMClient(settings)


def test_a_request_on_a_connection_closed_under_it_is_sent_again(closing_server: ClosingServer) -> None:
    async def run() -> list[int]:
        client = _client(closing_server.port, keepalive=60)
        try:
            return [(await client.post(CHAT_PATH, b"{}", {"content-type": "application/json"})).status_code for _ in range(5)]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [200] * 5  # each reused connection was closed: sent again, no 502
    assert closing_server.answered == 5 and closing_server.connections == 5


def test_idle_connections_expire_before_the_server_closes_them(closing_server: ClosingServer) -> None:
    async def run() -> None:
        client = _client(closing_server.port, keepalive=0.5)
        try:
            await client.post(CHAT_PATH, b"{}", {})
            await asyncio.sleep(0.8)  # longer than the pool's expiry: the idle connection is dropped
            started = time.monotonic()
            await client.post(CHAT_PATH, b"{}", {})
            assert time.monotonic() - started < 1
        finally:
            await client.aclose()

    asyncio.run(run())
    # two connections, and no request was ever met by a close (each connection answered once)
    assert closing_server.connections == 2 and closing_server.answered == 2
