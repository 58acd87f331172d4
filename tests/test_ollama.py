"""Ollama management routes against a loopback server speaking Ollama's API (tests/support/fake_ollama.py)."""

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest

from bff.clickhouse import ClickHouseStore
from conftest import ROOT, SERVICE_KEY, WEBUI_SECRET, Bff, BffFactory
from support.fake_ollama import (
    BROKEN_PULL,
    LONG_PULL,
    PULL_GAP_SECONDS,
    PULL_LAYERS,
    STALLED_PULL,
    UNKNOWN_PREFIX,
    FakeOllamaState,
    create_fake_ollama,
)
from support.servers import ThreadServer, free_port
from support.spans import spans_for
from support.tokens import session_token

NEW_MODEL = "llama3.2:1b"
TRAVERSAL_PATHS = [
    b"../../etc/passwd",
    b"..%2F..%2Fetc%2Fpasswd",
    b"..%2f..%2f",
    b"%2e%2e/%2e%2e/etc/passwd",
    b"%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"%252e%252e%252fetc%252fpasswd",
    b"llama3.1:8b/../../x",
    b"/etc/passwd",
    b"%2Fetc%2Fpasswd",
    b"..%5C..%5Cwindows%5Csystem32",
    b"C:%5CWindows%5CSystem32",
    b"llama3%00",
    b"llama3%0A",
    b"llama3%0Dx",
    b"llama3%09x",
    b"llama3%7F",
    b"llama3%20x",
    b".hidden",
    b"-rf",
    b"a" * 201,
    b"a" * 4000,
]
TRAVERSAL_BODIES: list[Any] = [
    "../../etc/passwd",
    "..%2F..%2F",
    "%2e%2e/",
    "x/../../y",
    "/etc/passwd",
    "C:\\Windows\\System32",
    "llama3\\x",
    "llama3\x00",
    "llama3\n",
    "llama3\x1b[31m",
    " llama3",
    "ｌlama3",
    "",
    "a" * 201,
    "a" * 10_000,
    123,
    None,
    ["llama3"],
]


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[tuple[ThreadServer, FakeOllamaState]]:
    state = FakeOllamaState()
    server = ThreadServer(create_fake_ollama(state)).start()
    yield server, state
    server.stop()


@pytest.fixture
def ollama(fake_ollama: tuple[ThreadServer, FakeOllamaState]) -> FakeOllamaState:
    state = fake_ollama[1]
    state.reset()
    return state


@pytest.fixture(scope="module")
def obff(bff_factory: BffFactory, fake_ollama: tuple[ThreadServer, FakeOllamaState]) -> Bff:
    return bff_factory(
        ollama_base_url=fake_ollama[0].url, ollama_timeout_seconds=1.0, ollama_pull_idle_timeout_seconds=0.6
    )


@pytest.fixture(scope="module")
def store(clickhouse_url: str) -> ClickHouseStore:
    return ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")


def _sse(answer: httpx.Response) -> list[tuple[float, dict[str, Any]]]:
    """Each `data:` event with the time it arrived."""
    return [(time.monotonic(), json.loads(line[6:])) for line in answer.iter_lines() if line.startswith("data: ")]


def _pull(bff: Bff, token: str, model: str, **headers: str) -> tuple[httpx.Response, list[tuple[float, dict[str, Any]]]]:
    with bff.client(token, headers=headers) as client, client.stream("POST", "/api/ollama/pull", json={"model": model}) as answer:
        if answer.status_code != 200:
            answer.read()
            return answer, []
        events = _sse(answer)
    return answer, events


def _raw(bff: Bff, method: str, target: bytes, token: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """A request with its target sent exactly as given (httpx would normalise `..` away)."""
    url = httpx.URL(bff.url)
    headers = [(b"host", url.netloc), (b"authorization", f"Bearer {token}".encode())]
    with httpcore.ConnectionPool() as pool:
        answer = pool.request(method, httpcore.URL(scheme=b"http", host=url.raw_host, port=url.port, target=target), headers=headers, content=body)
    return answer.status, json.loads(answer.content)


def test_installed_models_for_chat_users(obff: Bff, user_token: str, ollama: FakeOllamaState) -> None:
    with obff.client(user_token) as client:
        answer = client.get("/api/ollama/models")
    assert answer.status_code == 200, answer.text
    models = {entry["name"]: entry for entry in answer.json()["models"]}
    assert set(models) == {"llama3.1:8b", "library/qwen2.5:7b-instruct-q4_K_M"}
    llama = models["llama3.1:8b"]
    assert set(llama) == {"name", "size", "digest", "modified_at", "details"}
    assert llama["size"] == 4920753328 and llama["digest"].startswith("46e0c10c")
    assert llama["modified_at"].startswith("2024-07-25T10:51:04.123456")
    assert llama["details"] == {"family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_K_M"}
    assert [(r.method, r.path) for r in ollama.received] == [("GET", "/api/tags")]


def test_running_models(obff: Bff, user_token: str, ollama: FakeOllamaState) -> None:
    with obff.client(user_token) as client:
        answer = client.get("/api/ollama/running")
    assert answer.status_code == 200, answer.text
    [running] = answer.json()["models"]
    assert set(running) == {"name", "size", "size_vram", "expires_at"}
    assert running["name"] == "llama3.1:8b" and running["size_vram"] == 3_000_000_000
    assert running["expires_at"].startswith("2024-07-25T11:00:04.5")


def test_listing_needs_a_chat_user(obff: Bff, ollama: FakeOllamaState) -> None:
    pending_token = session_token("pending-1", WEBUI_SECRET)
    with obff.client() as anonymous, obff.client(SERVICE_KEY) as service, obff.client(pending_token) as pending:
        assert anonymous.get("/api/ollama/models").status_code == 401
        assert service.get("/api/ollama/models").status_code == 403
        assert pending.get("/api/ollama/running").status_code == 403
    assert ollama.received == []


def test_pull_relays_progress_as_it_arrives(obff: Bff, admin_token: str, ollama: FakeOllamaState) -> None:
    finished_when_first_arrived: list[bool] = []
    with obff.client(admin_token) as client, client.stream("POST", "/api/ollama/pull", json={"model": NEW_MODEL}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events: list[tuple[float, dict[str, Any]]] = []
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append((time.monotonic(), json.loads(line[6:])))
                if len(events) == 1:
                    finished_when_first_arrived.append(ollama.pulls[-1].finished)
    statuses = [event["status"] for _, event in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[1 : 1 + PULL_LAYERS] == ["pulling abababababab"] * PULL_LAYERS
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert len(events) == PULL_LAYERS + 4
    layers = [event for _, event in events[1 : 1 + PULL_LAYERS]]
    assert all(set(event) == {"status", "digest", "total", "completed"} for event in layers)
    assert [event["completed"] for event in layers] == sorted(event["completed"] for event in layers)
    assert layers[-1]["completed"] == layers[-1]["total"]
    # incremental: the first event came while Ollama was still pulling, the rest spread over its pace
    assert finished_when_first_arrived == [False]
    arrivals = [at for at, _ in events[: 1 + PULL_LAYERS]]
    assert arrivals[-1] - arrivals[0] >= PULL_LAYERS * PULL_GAP_SECONDS * 0.7
    assert [(r.method, r.path, r.body) for r in ollama.received] == [("POST", "/api/pull", {"model": NEW_MODEL, "stream": True})]


def test_pull_of_an_unknown_model_ends_with_an_error_event(obff: Bff, admin_token: str, ollama: FakeOllamaState) -> None:
    answer, events = _pull(obff, admin_token, f"{UNKNOWN_PREFIX}:7b")
    assert answer.status_code == 200
    assert [event.get("status") for _, event in events[:-1]] == ["pulling manifest"]
    error = events[-1][1]
    assert error == {
        "error": {
            "message": "Ollama could not pull the model: pull model manifest: file does not exist",
            "type": "not_found_error",
            "code": "model_not_found",
        }
    }


@pytest.mark.parametrize(
    ("model", "status_type", "code"),
    [(BROKEN_PULL, "upstream_error", "bad_gateway"), (STALLED_PULL, "timeout_error", "upstream_timeout")],
)
def test_pull_failures_mid_stream(obff: Bff, admin_token: str, ollama: FakeOllamaState, model: str, status_type: str, code: str) -> None:
    answer, events = _pull(obff, admin_token, model)
    assert answer.status_code == 200
    assert events[0][1] == {"status": "pulling manifest"}
    error = events[-1][1]["error"]
    assert (error["type"], error["code"]) == (status_type, code)
    assert "127.0.0.1" not in error["message"] and "http" not in error["message"]


def test_users_may_not_pull_or_delete_admins_may(obff: Bff, user_token: str, admin_token: str, ollama: FakeOllamaState) -> None:
    with obff.client(user_token) as user:
        refused = [user.post("/api/ollama/pull", json={"model": NEW_MODEL}), user.delete("/api/ollama/models/llama3.1:8b")]
    for answer in refused:
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "permission_denied" and "models.manage" in answer.json()["error"]["message"]
    assert ollama.received == []

    with obff.client(admin_token) as admin:
        deleted = admin.delete("/api/ollama/models/llama3.1:8b")
        nested = admin.delete("/api/ollama/models/library/qwen2.5:7b-instruct-q4_K_M")
        again = admin.delete("/api/ollama/models/llama3.1:8b")
        listed = admin.get("/api/ollama/models")
    assert deleted.status_code == 200 and deleted.json() == {"model": "llama3.1:8b", "deleted": True}
    assert nested.status_code == 200 and nested.json()["model"] == "library/qwen2.5:7b-instruct-q4_K_M"
    assert again.status_code == 404
    assert again.json()["error"] == {
        "message": "model 'llama3.1:8b' is not installed in Ollama", "type": "not_found_error", "code": "model_not_found"
    }
    assert listed.json() == {"models": []}
    assert [r.body for r in ollama.received if r.method == "DELETE"] == [
        {"model": "llama3.1:8b"}, {"model": "library/qwen2.5:7b-instruct-q4_K_M"}, {"model": "llama3.1:8b"}
    ]

    _, events = _pull(obff, admin_token, NEW_MODEL)
    assert events[-1][1] == {"status": "success"}


def test_ollama_down_is_503_without_its_address(bff_factory: BffFactory, user_token: str, admin_token: str) -> None:
    port = free_port()
    down = bff_factory(ollama_base_url=f"http://127.0.0.1:{port}")
    with down.client(user_token) as user, down.client(admin_token) as admin:
        answers = [
            user.get("/api/ollama/models"),
            user.get("/api/ollama/running"),
            admin.post("/api/ollama/pull", json={"model": NEW_MODEL}),
            admin.delete("/api/ollama/models/llama3.1:8b"),
        ]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {
            "error": {"message": "the Ollama server is unreachable", "type": "service_unavailable", "code": "ollama_unavailable"}
        }
        assert str(port) not in answer.text and "127.0.0.1" not in answer.text and "Traceback" not in answer.text


@pytest.mark.parametrize(("mode", "status"), [("http500", 502), ("garbage", 502), ("hang", 504)])
def test_bad_or_slow_ollama_answers(obff: Bff, user_token: str, admin_token: str, ollama: FakeOllamaState, mode: str, status: int) -> None:
    ollama.mode = mode  # type: ignore[assignment]
    with obff.client(user_token) as user, obff.client(admin_token) as admin:
        answers = [user.get("/api/ollama/models")]
        if mode == "garbage":  # Ollama answers a delete with an empty 200: only its status counts
            answers.append(user.get("/api/ollama/running"))
        else:
            answers.append(admin.delete("/api/ollama/models/llama3.1:8b"))
    for answer in answers:
        assert answer.status_code == status, answer.text
        assert set(answer.json()["error"]) == {"message", "type", "code"}
        assert "Ollama server" in answer.json()["error"]["message"]
        assert "127.0.0.1" not in answer.text and "something broke" not in answer.text


@pytest.mark.parametrize("target", TRAVERSAL_PATHS, ids=lambda t: t.decode()[:40])
def test_delete_refuses_traversal_names(obff: Bff, admin_token: str, ollama: FakeOllamaState, target: bytes) -> None:
    status, body = _raw(obff, "DELETE", b"/api/ollama/models/" + target, admin_token)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request" and "'name'" in body["error"]["message"]
    assert ollama.received == []


def test_delete_with_a_newline_inside_the_name_matches_no_route(obff: Bff, admin_token: str, ollama: FakeOllamaState) -> None:
    status, body = _raw(obff, "DELETE", b"/api/ollama/models/llama3%0Ax", admin_token)
    assert status == 404 and body["error"]["code"] == "not_found"
    assert ollama.received == []


@pytest.mark.parametrize("model", TRAVERSAL_BODIES, ids=lambda m: repr(m)[:40])
def test_pull_refuses_traversal_names(obff: Bff, admin_token: str, ollama: FakeOllamaState, model: Any) -> None:
    with obff.client(admin_token) as admin:
        answer = admin.post("/api/ollama/pull", json={"model": model})
    assert answer.status_code == 400, answer.text
    assert "invalid field 'model'" in answer.json()["error"]["message"]
    assert ollama.received == []


def test_pull_body_must_be_exactly_a_model(obff: Bff, admin_token: str, ollama: FakeOllamaState) -> None:
    with obff.client(admin_token) as admin:
        missing = admin.post("/api/ollama/pull", json={})
        extra = admin.post("/api/ollama/pull", json={"model": NEW_MODEL, "insecure": True})
        not_json = admin.post("/api/ollama/pull", content=b"model=llama3", headers={"content-type": "application/json"})
    assert missing.status_code == 400 and "'model'" in missing.json()["error"]["message"]
    assert extra.status_code == 400 and "'insecure'" in extra.json()["error"]["message"]
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    assert ollama.received == []


def test_client_disconnect_closes_the_pull(obff: Bff, admin_token: str, ollama: FakeOllamaState) -> None:
    with obff.client(admin_token) as client, client.stream("POST", "/api/ollama/pull", json={"model": LONG_PULL}) as answer:
        lines = answer.iter_lines()
        received = [line for line in (next(lines) for _ in range(6)) if line]
        assert json.loads(received[-1][6:])["status"].startswith("pulling")
        pull = ollama.pulls[-1]
    closed_at = time.monotonic()
    deadline = closed_at + 5
    while pull.closed_early_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pull.closed_early_at is not None, "Ollama kept streaming after the client left"
    assert not pull.finished and pull.closed_early_at - closed_at < 3


def test_one_models_span_per_request(obff: Bff, user_token: str, admin_token: str, ollama: FakeOllamaState, store: ClickHouseStore) -> None:
    def rid(name: str) -> str:
        return f"ollama-{name}-{uuid.uuid4().hex[:6]}"

    cases: list[tuple[str, int, str | None]] = []

    def call(name: str, token: str, method: str, path: str, model: str | None, body: Any = None) -> None:
        request_id = rid(name)
        with obff.client(token, headers={"x-request-id": request_id}) as client:
            answer = client.request(method, path, json=body)
            answer.read()
        cases.append((request_id, answer.status_code, model))

    call("list", user_token, "GET", "/api/ollama/models", None)
    call("running", user_token, "GET", "/api/ollama/running", None)
    call("pull", admin_token, "POST", "/api/ollama/pull", NEW_MODEL, {"model": NEW_MODEL})
    call("pull-unknown", admin_token, "POST", "/api/ollama/pull", f"{UNKNOWN_PREFIX}:1b", {"model": f"{UNKNOWN_PREFIX}:1b"})
    call("pull-refused", user_token, "POST", "/api/ollama/pull", None, {"model": NEW_MODEL})
    call("pull-invalid", admin_token, "POST", "/api/ollama/pull", None, {"model": "../x"})
    call("delete", admin_token, "DELETE", "/api/ollama/models/library/qwen2.5:7b-instruct-q4_K_M", "library/qwen2.5:7b-instruct-q4_K_M")
    call("delete-missing", admin_token, "DELETE", "/api/ollama/models/gone:1b", "gone:1b")
    statuses = [status for _, status, _ in cases]
    assert statuses == [200, 200, 200, 200, 403, 400, 200, 404]

    for request_id, status, model in cases:
        spans = spans_for(store, request_id)
        assert len(spans) == 1, request_id
        span = spans[0]
        attributes = span["SpanAttributes"]
        assert span["SpanName"] == "gateway models" and attributes["gateway.operation"] == "models", request_id
        assert attributes["http.response.status_code"] == str(status)
        assert attributes.get("gen_ai.request.model") == model, request_id
    unknown = spans_for(store, cases[3][0])[0]["SpanAttributes"]
    assert unknown["error.type"] == "model_not_found" and unknown["gateway.stream"] == "true"
