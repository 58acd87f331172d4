"""What one connection may hold: the request head's size (431) and time, and the time to send a
body (408), against a real BFF run as `python -m bff` runs it (bff/serving.py), over raw sockets.

The bounds are small here (head 8 KiB, body 2 s whole and 1 s idle, keep-alive 2 s) so that
each case takes about as long as its bound.
"""

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bff.clickhouse import ClickHouseStore
from conftest import ROOT, WEBUI_SECRET, Bff, BffFactory, chat_body
from support.spans import spans_for
from support.tokens import session_token

HEAD_LIMIT = 8192
WHOLE_SECONDS = 2.0
IDLE_SECONDS = 1.0
KEEPALIVE_SECONDS = 2
SLACK = 1.0  # scheduling and the round trips of a loopback test


@pytest.fixture(scope="module")
def bounded(bff_factory: BffFactory) -> Bff:
    return bff_factory(
        max_header_bytes=HEAD_LIMIT,
        body_receive_timeout_seconds=WHOLE_SECONDS,
        body_idle_timeout_seconds=IDLE_SECONDS,
        bff_keepalive_seconds=KEEPALIVE_SECONDS,
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after it

    def error(self) -> dict[str, str]:
        error: dict[str, str] = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "code"}, error
        assert "Traceback" not in self.body.decode() and "Exception" not in self.body.decode()
        return error


@contextmanager
def _connection(bff: Bff) -> Iterator[socket.socket]:
    address = urlsplit(bff.url)
    sock = socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def _read_answer(sock: socket.socket) -> Answer:
    """One HTTP/1.1 answer (Content-Length bodies), and whether the connection was closed after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without an answer: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body, closed=_closed_soon(sock))


def _closed_soon(sock: socket.socket, timeout: float = 1.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chat_head(length: int, request_id: str = "") -> bytes:
    headers = {"Authorization": f"Bearer {session_token('user-1', WEBUI_SECRET)}", "Content-Type": "application/json"}
    if request_id:
        headers["X-Request-Id"] = request_id
    return _head("POST", "/v1/chat/completions", {**headers, "Content-Length": str(length)})


def _live(bff: Bff) -> None:
    """The BFF still answers another caller, promptly."""
    started = time.monotonic()
    assert httpx.get(f"{bff.url}/health", timeout=5).status_code == 200
    assert time.monotonic() - started < 0.5


def _recorded(request_id: str, clickhouse_url: str) -> dict[str, Any]:
    spans = spans_for(ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse"), request_id)
    assert len(spans) == 1, spans
    attributes: dict[str, Any] = spans[0]["SpanAttributes"]
    return attributes


# --- the request head ---------------------------------------------------------------------------


def test_a_head_within_the_bound_is_served(bounded: Bff) -> None:
    with _connection(bounded) as sock:
        sock.sendall(_head("GET", "/health", {"X-Padding": "a" * (HEAD_LIMIT - 200)}))
        assert _read_answer(sock).status == 200


@pytest.mark.parametrize("complete", [True, False], ids=["whole-head-in-one-read", "head-still-arriving"])
def test_a_head_over_the_bound_gets_431_and_the_connection_is_closed(bounded: Bff, complete: bool) -> None:
    head = _head("GET", "/health", {"X-Padding": "a" * (HEAD_LIMIT + 100)})
    with _connection(bounded) as sock:
        sock.sendall(head if complete else head[: HEAD_LIMIT + 50])
        answer = _read_answer(sock)
    assert answer.status == 431 and answer.closed
    assert answer.headers["content-type"] == "application/json"
    assert answer.error()["code"] == "request_headers_too_large"
    _live(bounded)


def test_an_8_mb_header_is_not_read(bounded: Bff) -> None:
    """The BFF stops reading at the bound: the client cannot send its 8 MB (the socket is closed)."""
    sent = 0
    with _connection(bounded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        with pytest.raises(ConnectionError):
            for _ in range(8 * 1024 // 64):
                sock.sendall(b"a" * 65536)
                sent += 65536
    # Kernel buffers on both sides of the loopback hold a few MB at most.
    assert sent < 8 * 1024 * 1024
    _live(bounded)


def test_a_head_trickled_past_the_keepalive_time_is_dropped(bounded: Bff) -> None:
    started = time.monotonic()
    with _connection(bounded) as sock:
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except ConnectionError:
                break
            if _closed_soon(sock, 0.2):
                break
        elapsed = time.monotonic() - started
    assert KEEPALIVE_SECONDS - 0.1 < elapsed < KEEPALIVE_SECONDS + SLACK


def test_a_connection_that_sends_nothing_is_dropped(bounded: Bff) -> None:
    started = time.monotonic()
    with _connection(bounded) as sock:
        assert _closed_soon(sock, KEEPALIVE_SECONDS + SLACK)
    assert time.monotonic() - started > KEEPALIVE_SECONDS - 0.1


# --- the request body ---------------------------------------------------------------------------


def test_a_normal_body_passes_also_in_chunks_within_the_bounds(bounded: Bff, user_token: str) -> None:
    body = json.dumps(chat_body()).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 20):
            time.sleep(0.05)
            yield body[start : start + 20]

    with bounded.client(user_token) as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
        answer = client.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text


def test_a_trickled_body_is_cut_at_the_whole_body_bound(bounded: Bff, clickhouse_url: str) -> None:
    """1 byte every 0.3 s never trips the idle bound; the whole-body bound ends it, and another
    user is served meanwhile."""
    request_id = f"trickle-{uuid.uuid4().hex[:8]}"
    others: list[float] = []
    stop = threading.Event()

    def other_user() -> None:
        with bounded.client(session_token("admin-1", WEBUI_SECRET)) as client:
            while not stop.is_set():
                started = time.monotonic()
                assert client.get("/v1/models").status_code == 200
                others.append(time.monotonic() - started)
                time.sleep(0.2)

    thread = threading.Thread(target=other_user)
    thread.start()
    try:
        with _connection(bounded) as sock:
            sock.sendall(_chat_head(1000, request_id))
            started = time.monotonic()
            answer = None
            for _ in range(int(WHOLE_SECONDS / 0.3) + 10):
                sock.sendall(b" ")
                sock.settimeout(0.3)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        sock.settimeout(10)
                        answer = _read_answer(sock)
                        break
                except TimeoutError:
                    continue
            elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    assert answer is not None and answer.status == 408 and answer.closed
    assert answer.error()["code"] == "request_timeout" and "within" in answer.error()["message"]
    assert WHOLE_SECONDS - 0.1 < elapsed < WHOLE_SECONDS + SLACK
    assert others and max(others) < 0.5, others
    attributes = _recorded(request_id, clickhouse_url)
    assert attributes["error.type"] == "request_timeout" and attributes["http.response.status_code"] == "408"
    assert attributes["enduser.id"] == "user-1"


def test_a_stalled_body_is_cut_at_the_idle_bound(bounded: Bff, clickhouse_url: str) -> None:
    request_id = f"stall-{uuid.uuid4().hex[:8]}"
    with _connection(bounded) as sock:
        sock.sendall(_chat_head(1000, request_id) + b'{"model": ')
        started = time.monotonic()
        answer = _read_answer(sock)
        elapsed = time.monotonic() - started
    assert answer.status == 408 and answer.closed
    assert answer.error()["code"] == "request_timeout" and "no request body data" in answer.error()["message"]
    assert IDLE_SECONDS - 0.1 < elapsed < IDLE_SECONDS + SLACK
    assert _recorded(request_id, clickhouse_url)["error.type"] == "request_timeout"
    _live(bounded)


def test_a_stalled_upload_gets_408(bounded: Bff) -> None:
    boundary = "bounds-test-boundary"
    start = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nfake-stt\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\nRIFF"
    ).encode()
    headers = {
        "Authorization": f"Bearer {session_token('user-1', WEBUI_SECRET)}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": "100000",
    }
    with _connection(bounded) as sock:
        sock.sendall(_head("POST", "/v1/audio/transcriptions", headers) + start)
        started = time.monotonic()
        answer = _read_answer(sock)
        elapsed = time.monotonic() - started
    assert answer.status == 408 and answer.error()["code"] == "request_timeout"
    assert IDLE_SECONDS - 0.1 < elapsed < IDLE_SECONDS + SLACK
