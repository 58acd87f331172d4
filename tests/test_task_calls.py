"""Open-WebUI's own task calls (title, tags, follow-ups ...) told apart and routed.

Open-WebUI 0.12.4 strips `metadata` from the body of a task call: the only signal is the
connection's custom header `X-OpenWebUI-Task: {{TASK}}` (webui-integration/openwebui.env).
The BFF reads it only from Open-WebUI's backend (the service key), records it as the task
(span gateway.task, typed column Task, breakdown?by=task) and serves the call by the model
config/routing.yaml's `openwebui_tasks` names (tests/fixtures/routing.test.yaml:
title_generation and tags_generation -> cheap, LiteLLM's alias of fake-mini), when the caller
may use it. Everything runs against real BFFs, the real LiteLLM and the loopback provider.
"""

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bff.clickhouse import ClickHouseStore
from bff.telemetry import attributes as attr
from conftest import ROOT, WEBUI_SECRET, Bff, BffFactory, chat_body
from support.spans import spans_for
from support.tokens import session_token
from test_role_sources import OPEN_WEBUI_SCHEMA
from test_usage import _as_user

TASK = "X-OpenWebUI-Task"
MESSAGE = "X-OpenWebUI-Message-Id"
# routing.test.yaml: title_generation and tags_generation -> cheap, which LiteLLM names in
# x-litellm-model-group; the span records the group it points to (tests/fixtures/litellm.test.yaml)
ROUTED, ROUTED_GROUP = "cheap", "fake-mini"


@pytest.fixture(scope="module")
def store(clickhouse_url: str) -> ClickHouseStore:
    return ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")


def _user() -> str:
    return f"task-{uuid.uuid4().hex[:8]}"


def _span(store: ClickHouseStore, answer: httpx.Response) -> dict[str, str]:
    spans = spans_for(store, answer.headers["x-request-id"])
    assert spans, f"no span for {answer.headers['x-request-id']}"
    return spans[0]["SpanAttributes"]


def _by_task(client: httpx.Client, requests: int, timeout: float = 15) -> dict[str, dict[str, Any]]:
    """GET /api/usage/breakdown?by=task (the caller's own rows), once it counts `requests` calls."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get("/api/usage/breakdown", params={"by": "task"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["source"] == "requests"  # Task is in no rollup: the typed table
        rows = {row["key"]: row for row in answer.json()["rows"]}
        if sum(row["requests"] for row in rows.values()) >= requests or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_a_title_call_from_openwebuis_backend_is_recorded_and_served_by_the_routed_model(bff: Bff, store: ClickHouseStore) -> None:
    user = _user()
    title = {TASK: "title_generation", MESSAGE: ""}  # {{MESSAGE_ID}} is empty for task calls
    with _as_user(bff, user, chat_id=f"chat-{user}") as client:
        # fake-premium: a model the user's role may not use (downgraded, never upgraded); fake-mock: a mini one
        asked = {model: client.post("/v1/chat/completions", json=chat_body(model), headers=title) for model in ("fake-premium", "fake-mock")}
        tags = client.post("/v1/chat/completions", json=chat_body("fake-mock", stream=True), headers={TASK: "tags_generation"})
        plain = client.post("/v1/chat/completions", json=chat_body("fake-mock"), headers={TASK: "", MESSAGE: "msg-1"})
        rows = _by_task(client, 4)
    for model, answer in asked.items():
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-litellm-model-group"] == ROUTED
        assert "Mock answer" not in answer.text  # fake-mock's mock_response did not answer it
        span = _span(store, answer)
        assert span[attr.TASK] == "title_generation"
        assert span[attr.TASK_ROUTED_FROM] == model
        assert span[attr.REQUEST_MODEL] == model and span[attr.RESPONSE_MODEL] == ROUTED_GROUP
        assert attr.MESSAGE_ID not in span
    assert tags.status_code == 200 and tags.headers["x-litellm-model-group"] == ROUTED
    assert "data: [DONE]" in tags.text  # a streamed task call is routed too
    assert _span(store, tags)[attr.TASK] == "tags_generation"
    # the user's own chat: no task, served as asked, its message id recorded
    assert plain.status_code == 200 and plain.headers["x-litellm-model-group"] == "fake-mock"
    span = _span(store, plain)
    assert attr.TASK not in span and attr.TASK_ROUTED_FROM not in span
    assert span[attr.MESSAGE_ID] == "msg-1"
    # usage by task: the task calls apart from the chat ('' bucket)
    assert {key: row["requests"] for key, row in rows.items()} == {"title_generation": 2, "tags_generation": 1, "": 1}
    assert rows["title_generation"]["cost_usd"] > 0
    typed = store.query(
        "SELECT Task, ModelGroup, count() AS n FROM otel.gateway_requests WHERE UserId = {u:String} GROUP BY Task, ModelGroup ORDER BY Task",
        {"u": user},
    )
    assert [(row["Task"], row["ModelGroup"], row["n"]) for row in typed] == [
        ("", "fake-mock", 1), ("tags_generation", ROUTED_GROUP, 1), ("title_generation", ROUTED_GROUP, 2),
    ]


def test_url_quoted_header_values_are_decoded(bff: Bff, store: ClickHouseStore) -> None:
    """Open-WebUI URL-quotes every custom header value after filling the placeholders."""
    with _as_user(bff, _user()) as client:
        answer = client.post(
            "/v1/chat/completions", json=chat_body("fake-mock"), headers={TASK: "%74itle%5Fgeneration", MESSAGE: "msg%3A42"}
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-litellm-model-group"] == ROUTED
    span = _span(store, answer)
    assert (span[attr.TASK], span[attr.MESSAGE_ID]) == ("title_generation", "msg:42")


@pytest.mark.parametrize(
    ("header", "value"),
    [(TASK, "Title Generation"), (TASK, "title/../x"), (TASK, "t%0Ax"), (TASK, "x" * 65), (MESSAGE, "a b"), (MESSAGE, "m" * 129)],
)
def test_a_malformed_value_from_openwebui_is_refused(bff: Bff, header: str, value: str) -> None:
    with _as_user(bff, _user()) as client:
        answer = client.post("/v1/chat/completions", json=chat_body("fake-mock"), headers={header: value})
    assert answer.status_code == 400, answer.text
    assert header.lower() in answer.json()["error"]["message"]


def test_a_task_not_in_the_table_is_recorded_and_served_as_asked(bff: Bff, store: ClickHouseStore) -> None:
    with _as_user(bff, _user()) as client:
        answer = client.post("/v1/chat/completions", json=chat_body("fake-mock"), headers={TASK: "emoji_generation"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-litellm-model-group"] == "fake-mock"
    span = _span(store, answer)
    assert span[attr.TASK] == "emoji_generation" and attr.TASK_ROUTED_FROM not in span


def _api_key_db(tmp_path: Path, user_id: str, key: str) -> Path:
    """An Open-WebUI 0.12.4 database with one user and their API key (ROLE_SOURCE=db)."""
    path = tmp_path / "webui.db"
    now = int(time.time())
    with sqlite3.connect(path) as db:
        db.executescript(OPEN_WEBUI_SCHEMA)
        db.execute('INSERT INTO "user" (id, email, role, name) VALUES (?, ?, ?, ?)', (user_id, f"{user_id}@x", "user", user_id))
        db.execute("INSERT INTO auth (id, email, active, session_stamp) VALUES (?, ?, 1, 'stamp-1')", (user_id, f"{user_id}@x"))
        db.execute("INSERT INTO api_key VALUES ('k1', ?, ?, NULL, NULL, NULL, ?, ?)", (user_id, key, now, now))
    return path


def test_the_headers_from_a_users_own_token_or_api_key_change_nothing(
    bff: Bff, bff_factory: BffFactory, tmp_path: Path, store: ClickHouseStore
) -> None:
    """Only Open-WebUI's backend holds the service key; a user calling the BFF directly can
    neither label their calls as tasks nor pick the routed model (nor get a 400 for junk)."""
    key = "sk-" + uuid.uuid4().hex
    with_keys = bff_factory(role_source="db", open_webui_database_url=f"sqlite:///{_api_key_db(tmp_path, 'key-user', key)}")
    callers = [(bff, session_token("user-1", WEBUI_SECRET)), (with_keys, key)]
    for server, token in callers:
        with server.client(token) as client:
            forged = client.post("/v1/chat/completions", json=chat_body("fake-mock"), headers={TASK: "title_generation", MESSAGE: "m-1"})
            junk = client.post("/v1/chat/completions", json=chat_body("fake-mock"), headers={TASK: "Not A Task!"})
            premium = client.post("/v1/chat/completions", json=chat_body("fake-premium"), headers={TASK: "title_generation"})
        assert forged.status_code == 200, forged.text
        assert forged.headers["x-litellm-model-group"] == "fake-mock"  # served as asked
        span = _span(store, forged)
        assert span[attr.AUTH_METHOD] != "forwarded_jwt"
        assert attr.TASK not in span and attr.TASK_ROUTED_FROM not in span and attr.MESSAGE_ID not in span
        assert junk.status_code == 200, junk.text
        assert premium.status_code == 403  # no way around the policy through the routing table
        assert premium.json()["error"]["code"] == "model_not_allowed"


def test_the_routed_model_must_be_one_the_caller_may_use(bff_factory: BffFactory, tmp_path: Path, store: ClickHouseStore) -> None:
    """A policy that denies the user the routed model (cheap -> fake-mini): served as asked."""
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy["roles"]["user"]["models"]["exclude"] = ["fake-mini"]
    policy.pop("limits", None)
    policy.pop("groups", None)  # the premium group's downgrade_to (fast -> fake-mini) would be refused at start-up
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    strict = bff_factory(policy_file=path)
    with _as_user(strict, _user()) as client:
        answer = client.post("/v1/chat/completions", json=chat_body("fake-mock"), headers={TASK: "title_generation"})
        premium = client.post("/v1/chat/completions", json=chat_body("fake-premium"), headers={TASK: "title_generation"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-litellm-model-group"] == "fake-mock"
    span = _span(store, answer)
    assert span[attr.TASK] == "title_generation" and attr.TASK_ROUTED_FROM not in span
    assert premium.status_code == 403 and premium.json()["error"]["code"] == "model_not_allowed"  # the policy judges as asked
