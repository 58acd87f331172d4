"""Open-WebUI 0.12.4's own task calls at the BFF: a new chat's title, told apart and routed.

The chat's first message goes through Open-WebUI's /api/chat/completions as the browser sends
it (a new chat, background tasks on). Open-WebUI starts the title call at once, with no task
model set (openwebui.env leaves TASK_MODEL_EXTERNAL unset), so it asks the BFF for the chat's
own model; the only thing that tells it apart is the connection's custom header
X-OpenWebUI-Task: {{TASK}} from webui-integration/openwebui.env (OPENAI_API_CONFIGS). The BFF
records Task=title_generation and serves it by config/routing.yaml's openwebui_tasks
(the test table, tests/fixtures/routing.test.yaml: cheap, LiteLLM's alias of fake-mini).
"""

import json
import time
import uuid
from typing import Any

from bff.clickhouse import ClickHouseStore
from bff.policy.routing import load_router
from bff.telemetry import attributes as attr
from openwebui.api import Account
from openwebui.conftest import ENV_FILE, Stack
from openwebui.process import read_env_file

CHAT_MODEL = "fake-mock"  # tier mini (a user may use it), answered by LiteLLM's mock_response
ROUTED_GROUP = "fake-mini"  # what `cheap` points to in tests/fixtures/litellm.test.yaml


def _spans(store: ClickHouseStore, user_id: str, wanted: dict[str, str], timeout: float = 60) -> list[dict[str, str]]:
    """The user's gateway spans with the wanted attributes, waiting for Open-WebUI's background call and the exporter."""
    deadline = time.monotonic() + timeout
    while True:
        rows = store.query(
            "SELECT SpanAttributes FROM otel.otel_traces WHERE SpanAttributes['enduser.id'] = {id:String} "
            "AND SpanAttributes['gateway.operation'] != '' ORDER BY Timestamp",
            {"id": user_id},
        )
        matching = [row["SpanAttributes"] for row in rows if wanted.items() <= row["SpanAttributes"].items()]
        if matching:
            return matching
        assert time.monotonic() < deadline, f"no span of {user_id} with {wanted}: {[row['SpanAttributes'] for row in rows]}"
        time.sleep(0.3)


def _usage_by_task(stack: Stack, admin: Account, user_id: str, task: str, timeout: float = 15) -> dict[str, Any]:
    """GET /api/usage/breakdown?by=task&user=..., as Open-WebUI's admin with the session token it issued."""
    deadline = time.monotonic() + timeout
    with stack.bff.client(admin.token) as client:
        while True:
            answer = client.get("/api/usage/breakdown", params={"by": "task", "user": user_id})
            assert answer.status_code == 200, answer.text
            rows = {row["key"]: row for row in answer.json()["rows"]}
            if task in rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.3)


def test_the_connection_sends_the_task_and_message_id_headers() -> None:
    """openwebui.env gives the BFF connection (index 0) the two custom headers the BFF reads."""
    configs = json.loads(read_env_file(ENV_FILE)["OPENAI_API_CONFIGS"])
    assert configs["0"]["headers"] == {"X-OpenWebUI-Task": "{{TASK}}", "X-OpenWebUI-Message-Id": "{{MESSAGE_ID}}"}


def test_a_new_chats_title_call_is_recorded_as_a_task_and_served_by_the_routed_model(
    stack: Stack, admin: Account, store: ClickHouseStore
) -> None:
    # the connection Open-WebUI saved from openwebui.env carries the headers
    config = stack.openwebui.call(admin, "GET", "/openai/config")
    assert config.status_code == 200, config.text
    assert config.json()["OPENAI_API_CONFIGS"]["0"]["headers"]["X-OpenWebUI-Task"] == "{{TASK}}"

    routed = load_router(stack.bff.settings.routing_file, stack.bff.settings.generator_mode).model_for_openwebui_task("title_generation")
    assert routed == "cheap"  # tests/fixtures/routing.test.yaml
    person = stack.openwebui.add_user(admin, "Tasks", f"tasks-{uuid.uuid4().hex[:6]}@example.test", role="user")
    assert CHAT_MODEL in stack.openwebui.model_ids(person)
    chat = stack.openwebui.ui_chat(person, CHAT_MODEL, "What is the capital of France?")
    assert chat.answer.status_code == 200, chat.answer.text

    # the answer: the user's chat, served as asked, no task, its assistant message id recorded
    (answer,) = _spans(store, person.id, {attr.MESSAGE_ID: chat.assistant_message_id})
    assert attr.TASK not in answer and answer[attr.RESPONSE_MODEL] == CHAT_MODEL
    # the title: Open-WebUI asked for the chat's model; the BFF served it by routing.yaml's model
    (title,) = _spans(store, person.id, {attr.TASK: "title_generation"})
    assert title[attr.REQUEST_MODEL] == CHAT_MODEL  # what Open-WebUI asked for
    assert title[attr.TASK_ROUTED_FROM] == CHAT_MODEL
    assert title[attr.RESPONSE_MODEL] == ROUTED_GROUP  # what served (cheap -> fake-mini)
    assert title[attr.AUTH_METHOD] == "forwarded_jwt" and title[attr.HTTP_STATUS] == "200"
    assert title[attr.SESSION_ID] == answer[attr.SESSION_ID]  # the same chat
    assert attr.MESSAGE_ID not in title  # {{MESSAGE_ID}} is empty for a task call: no rating joins it
    print(
        f"\ntitle call: Open-WebUI asked for {title[attr.REQUEST_MODEL]}, served by {title[attr.RESPONSE_MODEL]} "
        f"(routing.yaml: {routed}); chat {title[attr.SESSION_ID]}"
    )

    # the usage API and the typed table count it as a task call, apart from the chat
    rows = _usage_by_task(stack, admin, person.id, "title_generation")
    assert rows["title_generation"]["requests"] == 1 and rows[""]["requests"] == 1
    typed = store.query(
        "SELECT ModelGroup, Task FROM otel.gateway_requests WHERE UserId = {u:String} AND Task = 'title_generation'",
        {"u": person.id},
    )
    assert typed == [{"ModelGroup": ROUTED_GROUP, "Task": "title_generation"}]
