"""A thumbs-down given in Open-WebUI 0.12.4, pulled by the BFF and counted against the served model.

The user's chat goes through Open-WebUI as the browser sends it: the chat saved first
(POST /api/v1/chats/new), then POST /api/chat/completions with its chat id, the assistant
message id the browser made and a socket session. Open-WebUI calls the BFF with the custom
header X-OpenWebUI-Message-Id: {{MESSAGE_ID}} (webui-integration/openwebui.env) and
X-OpenWebUI-Chat-Id, so the span holds both. The thumbs-down is the JSON the UI's
feedbackHandler posts (ResponseMessage.svelte) to POST /api/v1/evaluations/feedback; its
model_id is forged on purpose: the BFF counts it against the model it served. A BFF polling
every 0.5 s with the admin's API key (OPEN_WEBUI_ADMIN_TOKEN) pulls it from Open-WebUI's
evaluations API into otel.gateway_feedback.
"""

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bff.clickhouse import ClickHouseStore
from conftest import ROOT, Bff
from openwebui.api import Account
from openwebui.conftest import Stack, serving

CHAT_MODEL = "fake-mock"  # tier mini (users may use it), answered by LiteLLM's mock_response


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def feedback_bff(stack: Stack) -> Iterator[Bff]:
    """The shared BFF's settings (its ClickHouse, the admin's API key), polling the real Open-WebUI
    every 0.5 s; stopped with this module (openwebui.conftest.serving says why)."""
    settings = stack.bff.settings.model_copy(update={"feedback_sync_interval_seconds": 0.5, "feedback_sync_deletions_every": 1})
    with serving(settings) as bff:
        yield bff


def _ui_chat(stack: Stack, account: Account, model: str, content: str) -> tuple[str, str, dict[str, Any]]:
    """A saved chat and its first answer, as the 0.12.4 browser makes them: (chat id, assistant message id, chat)."""
    user_id, assistant_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = int(time.time())
    user_message = {"id": user_id, "parentId": None, "childrenIds": [assistant_id], "role": "user", "content": content,
                    "timestamp": now, "models": [model]}  # fmt: skip
    assistant = {"id": assistant_id, "parentId": user_id, "childrenIds": [], "role": "assistant", "content": "",
                 "model": model, "modelName": model, "modelIdx": 0, "timestamp": now}  # fmt: skip
    chat = {
        "id": "", "title": "New Chat", "models": [model], "params": {},
        "history": {"messages": {user_id: user_message, assistant_id: assistant}, "currentId": assistant_id},
        "messages": [user_message, assistant], "tags": [], "timestamp": now * 1000,
    }  # fmt: skip
    chat_id = stack.openwebui.new_chat(account, chat)
    body = {
        "stream": True, "model": model, "messages": [{"role": "user", "content": content}], "params": {},
        "features": {}, "variables": {}, "session_id": f"socket-{uuid.uuid4().hex[:12]}", "chat_id": chat_id,
        "id": assistant_id, "message_ids": [{"model_id": model, "message_id": assistant_id, "modelIdx": 0}],
        "parent_id": user_id, "user_message": user_message, "background_tasks": {},
    }  # fmt: skip
    answer = stack.openwebui.call(account, "POST", "/api/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    return chat_id, assistant_id, chat


def _thumbs_down(stack: Stack, account: Account, chat_id: str, message_id: str, chat: dict[str, Any], model_id: str) -> dict[str, Any]:
    """What ResponseMessage.svelte's feedbackHandler(-1) posts, then its RateComment edit (reason, 1-10, comment)."""
    form = {
        "type": "rating",
        "data": {"rating": -1, "model_id": model_id, "reason": None, "comment": "", "tags": [], "details": {"rating": None}},
        "meta": {"arena": False, "model_id": model_id, "message_id": message_id, "message_index": 1, "chat_id": chat_id,
                 "base_models": {model_id: None}},
        "snapshot": {"chat": {"id": chat_id, "chat": chat}},
    }  # fmt: skip
    created = stack.openwebui.call(account, "POST", "/api/v1/evaluations/feedback", json=form)
    assert created.status_code == 200, created.text
    feedback: dict[str, Any] = created.json()
    assert feedback["user_id"] == account.id  # set by Open-WebUI from the session
    time.sleep(1.1)  # the edit gets a newer updated_at (seconds)
    form["data"] = {**form["data"], "reason": "not_helpful", "comment": "wrong answer", "details": {"rating": 2}}
    edited = stack.openwebui.call(account, "POST", f"/api/v1/evaluations/feedback/{feedback['id']}", json=form)
    assert edited.status_code == 200, edited.text
    return feedback


def test_a_thumbs_down_in_openwebui_counts_against_the_served_model(
    stack: Stack, admin: Account, feedback_bff: Bff, clickhouse_url: str
) -> None:
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    person = stack.openwebui.add_user(admin, "Rater", f"rater-{uuid.uuid4().hex[:6]}@example.test", role="user")
    assert CHAT_MODEL in stack.openwebui.model_ids(person)
    chat_id, message_id, chat = _ui_chat(stack, person, CHAT_MODEL, "What is the capital of France?")

    # the answer's request, with the chat and message ids Open-WebUI sent
    served = _wait(
        lambda: store.query(
            "SELECT ModelGroup, SessionId, Task FROM otel.gateway_requests WHERE UserId = {u:String} AND MessageId = {m:String}",
            {"u": person.id, "m": message_id},
        ),
        60,
        "the answer's span",
    )
    assert served == [{"ModelGroup": CHAT_MODEL, "SessionId": chat_id, "Task": ""}]

    # a thumbs-down naming another model: the browser's word, not what the gateway served
    feedback = _thumbs_down(stack, person, chat_id, message_id, chat, model_id="fake-premium")

    def counted() -> list[dict[str, Any]]:
        with feedback_bff.client(admin.token) as client:
            answer = client.get("/api/usage/feedback", params={"by": "model", "user": person.id})
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()["rows"]
        return rows if rows and rows[0]["detail_ratings"] == 1 else []

    rows = _wait(counted, 30, "the thumbs-down in the feedback API")
    assert [(row["model"], row["up"], row["down"]) for row in rows] == [(CHAT_MODEL, 0, 1)]
    assert rows[0]["up_share"] == 0.0 and rows[0]["up_share_high"] > 0 and rows[0]["detail_rating_mean"] == 2.0
    stored = store.query(
        "SELECT Rating, DetailRating, Reason, HasComment, ModelId, ChatId, MessageId FROM otel.gateway_feedback FINAL "
        "WHERE FeedbackId = {id:String}",
        {"id": feedback["id"]},
    )
    assert stored == [{"Rating": -1, "DetailRating": 2, "Reason": "not_helpful", "HasComment": True,
                       "ModelId": "fake-premium", "ChatId": chat_id, "MessageId": message_id}]  # fmt: skip
    print(f"\nthumbs-down in Open-WebUI -> {rows[0]['model']}: up {rows[0]['up']}, down {rows[0]['down']}")

    # deleted in Open-WebUI: gone from the results
    deleted = stack.openwebui.call(person, "DELETE", f"/api/v1/evaluations/feedback/{feedback['id']}")
    assert deleted.status_code == 200, deleted.text
    with feedback_bff.client(admin.token) as client:
        _wait(
            lambda: client.get("/api/usage/feedback", params={"user": person.id}).json()["rows"] == [],
            30,
            "the deletion",
        )
