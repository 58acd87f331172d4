"""Open-WebUI ratings pulled into ClickHouse and joined to the gateway's own requests.

Real BFFs (uvicorn) poll the fake Open-WebUI's evaluation routes (tests/support/fake_openwebui.py,
shaped as 0.12.4 answers them) with the admin credential; chats go through the BFF as
Open-WebUI's connection sends them (service key, forwarded user JWT, chat id, message id), on
to the real LiteLLM. The feedback API then counts each rating against the model and variant
the gateway served.
"""

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bff.clickhouse import ClickHouseStore
from bff.usage.feedback_queries import wilson_interval
from conftest import FORWARD_SECRET, OUTPUT, ROOT, SERVICE_KEY, Bff, BffFactory, chat_body
from support.fake_openwebui import FakeOpenWebUIState
from support.tokens import forwarded_user_jwt

EXPERIMENT = "fb-exp"
EXPERIMENT_CONTEXT = "fb-exp-context"


def _experiments_file() -> Path:
    """An active 50/50 experiment on a context only these tests send: fake-mini against fake-mock."""
    path = OUTPUT / "experiments.feedback.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "experiments": [
                    {
                        "name": EXPERIMENT,
                        "target": {"context": EXPERIMENT_CONTEXT},
                        "variants": [
                            {"name": "control", "model": "fake-mini", "weight": 50},
                            {"name": "mock", "model": "fake-mock", "weight": 50},
                        ],
                        "start": "2020-01-01T00:00:00Z",
                        "end": "2099-01-01T00:00:00Z",
                    }
                ]
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def sync_bff(bff_factory: BffFactory, admin_token: str) -> Iterator[Bff]:
    """A BFF that polls Open-WebUI every 0.3 s and checks for deletions on every poll. Stopped
    with this module: a poller's deletion check tombstones every rating the fake Open-WebUI does
    not hold, including those that later tests store in the shared ClickHouse by other means."""
    bff = bff_factory(
        open_webui_admin_token=admin_token,
        feedback_sync_interval_seconds=0.3,
        feedback_sync_deletions_every=1,
        feedback_sync_timeout_seconds=1.0,
        experiments_file=_experiments_file(),
    )
    yield bff
    bff.stop()


@pytest.fixture(scope="module")
def store(clickhouse_url: str) -> ClickHouseStore:
    return ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")


@pytest.fixture()
def user_id(openwebui_state: FakeOpenWebUIState) -> str:
    user_id = f"fb-{uuid.uuid4().hex[:10]}"
    openwebui_state.add_user(user_id, "user")  # Open-WebUI knows its users (its list joins them)
    return user_id


def _chat(bff: Bff, user_id: str, chat_id: str, message_id: str, model: str = "fake-mini", **headers: str) -> httpx.Response:
    """One answer as Open-WebUI's connection asks for it (its custom header carries {{MESSAGE_ID}})."""
    user = {"id": user_id, "email": f"{user_id}@example.test", "name": user_id, "role": "user"}
    sent = {
        "X-OpenWebUI-User-Jwt": forwarded_user_jwt(user, FORWARD_SECRET),
        "X-OpenWebUI-Chat-Id": chat_id,
        "X-OpenWebUI-Message-Id": message_id,
        **headers,
    }
    with bff.client(SERVICE_KEY, headers=sent) as client:
        answer = client.post("/v1/chat/completions", json=chat_body(model))
    assert answer.status_code == 200, answer.text
    return answer


def _served(bff: Bff, user_id: str, count: int, model: str = "fake-mini", **headers: str) -> list[tuple[str, str]]:
    """`count` answered messages of one chat: [(chat id, message id)]."""
    chat_id = f"chat-{uuid.uuid4().hex[:8]}"
    messages = [(chat_id, f"msg-{uuid.uuid4().hex[:12]}") for _ in range(count)]
    for chat, message in messages:
        _chat(bff, user_id, chat, message, model, **headers)
    return messages


def _feedback(bff: Bff, admin_token: str, **params: str) -> dict[str, Any]:
    with bff.client(admin_token) as admin:
        answer = admin.get("/api/usage/feedback", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _wait(check: Callable[[], Any], timeout: float = 20, what: str = "the feedback") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not arrive within {timeout:.0f} s (last: {value!r})")
        time.sleep(0.2)


def _rows_when(bff: Bff, admin_token: str, expected: Callable[[list[dict[str, Any]]], bool], **params: str) -> list[dict[str, Any]]:
    last: list[list[dict[str, Any]]] = [[]]

    def check() -> bool:
        last[0] = _feedback(bff, admin_token, **params)["rows"]
        return expected(last[0])

    try:
        _wait(check)
    except AssertionError:
        raise AssertionError(f"feedback rows never matched; last: {last[0]}") from None
    return last[0]


def _counts(rows: list[dict[str, Any]], key: str = "model") -> dict[str, tuple[int, int]]:
    return {row[key]: (row["up"], row["down"]) for row in rows}


def _stored(store: ClickHouseStore, feedback_id: str) -> list[dict[str, Any]]:
    return store.query(
        "SELECT Rating, DetailRating, Reason, Tags, HasComment, ModelId, Deleted FROM otel.gateway_feedback FINAL "
        "WHERE FeedbackId = {id:String}",
        {"id": feedback_id},
    )


# --- the fake answers as 0.12.4 does ------------------------------------------------------------


def test_fake_evaluations_api_is_admin_only_paged_and_html_elsewhere(
    openwebui: Any, openwebui_state: FakeOpenWebUIState, admin_token: str, user_token: str, user_id: str
) -> None:
    server, _ = openwebui
    for index in range(31):
        openwebui_state.add_feedback(user_id, 1, "chat-x", f"paged-{index}")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        admin = {"Authorization": f"Bearer {admin_token}"}
        first = client.get("/api/v1/evaluations/feedbacks/list", params={"order_by": "updated_at", "direction": "desc"}, headers=admin)
        assert first.status_code == 200 and len(first.json()["items"]) == 30 and first.json()["total"] >= 31
        item = first.json()["items"][0]
        assert "snapshot" not in item and item["user"]["id"] and item["data"]["rating"] in (1, -1)
        assert client.get("/api/v1/evaluations/feedbacks/list", headers={"Authorization": f"Bearer {user_token}"}).status_code == 401
        assert client.get("/api/v1/evaluations/feedbacks/all/ids", headers={"Authorization": f"Bearer {user_token}"}).status_code == 401
        html = client.get("/api/v1/evaluations/feedbacks/all", headers=admin)  # no such route in 0.12.4
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")


# --- the join -----------------------------------------------------------------------------------


def test_up_share_by_model_counts_the_served_model(
    sync_bff: Bff, admin_token: str, openwebui_state: FakeOpenWebUIState, user_id: str
) -> None:
    mini = _served(sync_bff, user_id, 5)
    mock = _served(sync_bff, user_id, 2, model="fake-mock")
    for index, (chat, message) in enumerate(mini):  # 3 up, 2 down; detail ratings on two
        rating = 1 if index < 3 else -1
        detail = {0: 8, 3: 2}.get(index)
        openwebui_state.add_feedback(user_id, rating, chat, message, model_id="smart", detail=detail, reason="too_verbose" if rating < 0 else None)
    openwebui_state.add_feedback(user_id, "-1", *mock[0], model_id="smart")  # Open-WebUI allows str ratings
    rows = _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (3, 2), "fake-mock": (0, 1)}, user=user_id)
    mini_row = next(row for row in rows if row["model"] == "fake-mini")
    low, high = wilson_interval(3, 5)  # type: ignore[misc]
    assert mini_row["rated"] == 5 and mini_row["up_share"] == pytest.approx(0.6)
    assert mini_row["up_share_low"] == pytest.approx(low, abs=1e-6) and mini_row["up_share_high"] == pytest.approx(high, abs=1e-6)
    assert (round(low, 4), round(high, 4)) == (0.2307, 0.8824)  # Wilson 95 % of 3/5, by hand
    assert mini_row["detail_rating_mean"] == pytest.approx(5.0) and mini_row["detail_ratings"] == 2
    assert rows[0]["model"] == "fake-mini"  # most rated first


def test_wilson_interval() -> None:
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 10)  # type: ignore[misc]
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(50, 100)  # type: ignore[misc]
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert math.isclose(sum(wilson_interval(7, 9) or ()), 2 * (7 / 9 + 1.96**2 / 18) / (1 + 1.96**2 / 9), rel_tol=1e-3)


def test_changed_rating_is_one_row_with_the_new_value(
    sync_bff: Bff, admin_token: str, openwebui_state: FakeOpenWebUIState, store: ClickHouseStore, user_id: str
) -> None:
    [(chat, message)] = _served(sync_bff, user_id, 1)
    feedback = openwebui_state.add_feedback(user_id, 1, chat, message, detail=9, comment="free text never stored")
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (1, 0)}, user=user_id)
    time.sleep(1.1)  # a newer updated_at (Open-WebUI's times are in seconds)
    openwebui_state.update_feedback(feedback.id, rating=-1, details={"rating": None}, reason="not_helpful", tags=["style"])
    rows = _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (0, 1)}, user=user_id)
    assert rows[0]["detail_ratings"] == 0 and rows[0]["detail_rating_mean"] is None
    stored = _stored(store, feedback.id)
    assert len(stored) == 1
    assert {k: stored[0][k] for k in ("Rating", "DetailRating", "Reason", "Tags", "HasComment", "Deleted")} == {
        "Rating": -1, "DetailRating": None, "Reason": "not_helpful", "Tags": ["style"], "HasComment": True, "Deleted": 0,
    }  # fmt: skip
    text = store.query("SELECT count() AS n FROM otel.gateway_feedback WHERE position(toString(tuple(*)), 'free text') > 0")
    assert text[0]["n"] == 0  # the comment itself is never stored


def test_changed_within_the_same_second_is_still_picked_up(
    sync_bff: Bff, admin_token: str, openwebui_state: FakeOpenWebUIState, user_id: str
) -> None:
    [(chat, message)] = _served(sync_bff, user_id, 1)
    feedback = openwebui_state.add_feedback(user_id, 1, chat, message)
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (1, 0)}, user=user_id)
    feedback.data = {**feedback.data, "rating": -1}  # same updated_at: the overlap re-reads it
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (0, 1)}, user=user_id)


def test_resent_and_resynced_is_idempotent_and_the_latest_row_per_message_counts(
    sync_bff: Bff, bff_factory: BffFactory, admin_token: str, openwebui_state: FakeOpenWebUIState, store: ClickHouseStore, user_id: str
) -> None:
    (chat_a, message_a), (chat_b, message_b) = _served(sync_bff, user_id, 2)
    first = openwebui_state.add_feedback(user_id, 1, chat_a, message_a)
    openwebui_state.add_feedback(user_id, 1, chat_b, message_b)
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (2, 0)}, user=user_id)
    # The UI creates a second row for a message when its update fails: the newer one counts.
    time.sleep(1.1)
    second = openwebui_state.add_feedback(user_id, -1, chat_a, message_a)
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (1, 1)}, user=user_id)
    # A second BFF starts: its first poll is a full resync, writing every row again.
    twin = bff_factory(open_webui_admin_token=admin_token, feedback_sync_interval_seconds=0.3)
    _wait(lambda: _feedback(twin, admin_token)["sync"]["last_success_at"], what="the twin's first sync")
    assert _counts(_feedback(twin, admin_token, user=user_id)["rows"]) == {"fake-mini": (1, 1)}
    assert _counts(_feedback(sync_bff, admin_token, user=user_id)["rows"]) == {"fake-mini": (1, 1)}
    twin.stop()
    for feedback in (first, second):
        assert len(_stored(store, feedback.id)) == 1


def test_deleted_rating_disappears(
    sync_bff: Bff, admin_token: str, openwebui_state: FakeOpenWebUIState, store: ClickHouseStore, user_id: str
) -> None:
    (chat_a, message_a), (chat_b, message_b) = _served(sync_bff, user_id, 2)
    kept = openwebui_state.add_feedback(user_id, 1, chat_a, message_a)
    deleted = openwebui_state.add_feedback(user_id, -1, chat_b, message_b)
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (1, 1)}, user=user_id)
    del openwebui_state.feedbacks[deleted.id]  # Open-WebUI leaves no tombstone
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (1, 0)}, user=user_id)
    assert _stored(store, deleted.id) == [] and len(_stored(store, kept.id)) == 1


def test_rating_of_a_message_the_gateway_never_served_is_stored_but_joins_nothing(
    sync_bff: Bff, admin_token: str, openwebui_state: FakeOpenWebUIState, store: ClickHouseStore, user_id: str
) -> None:
    [(chat, message)] = _served(sync_bff, user_id, 1)
    stray = openwebui_state.add_feedback(user_id, -1, chat, f"never-served-{uuid.uuid4().hex[:8]}")
    served = openwebui_state.add_feedback(user_id, 1, chat, message)
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (1, 0)}, user=user_id)
    _wait(lambda: _stored(store, stray.id), what="the stray rating's row")
    assert _stored(store, stray.id)[0]["Rating"] == -1 and len(_stored(store, served.id)) == 1


def test_forged_model_and_another_users_message_change_nothing(
    sync_bff: Bff, admin_token: str, openwebui_state: FakeOpenWebUIState, store: ClickHouseStore, user_id: str
) -> None:
    [(chat, message)] = _served(sync_bff, user_id, 1)
    forged = openwebui_state.add_feedback(user_id, -1, chat, message, model_id="fake-premium")
    # Another user posts a rating naming this user's chat and message: Open-WebUI sets its user.
    intruder = f"fb-intruder-{uuid.uuid4().hex[:6]}"
    openwebui_state.add_user(intruder, "user")
    foreign = openwebui_state.add_feedback(intruder, 1, chat, message, model_id="fake-mock")
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (0, 1)}, user=user_id)
    _wait(lambda: _stored(store, foreign.id), what="the intruder's rating")
    assert _stored(store, forged.id)[0]["ModelId"] == "fake-premium"  # kept, but only as the browser's word
    everyone = _feedback(sync_bff, admin_token, model="fake-premium")["rows"]
    assert everyone == []
    assert _feedback(sync_bff, admin_token, user=intruder)["rows"] == []


def test_by_variant_and_by_task(sync_bff: Bff, admin_token: str, openwebui_state: FakeOpenWebUIState) -> None:
    served: dict[str, list[tuple[str, str, str]]] = {}
    for _ in range(6):  # a few users, sticky per user: both variants get some
        user_id = f"fb-var-{uuid.uuid4().hex[:8]}"
        openwebui_state.add_user(user_id, "user")
        chat, message = f"chat-{uuid.uuid4().hex[:8]}", f"msg-{uuid.uuid4().hex[:12]}"
        answer = _chat(sync_bff, user_id, chat, message, **{"X-LLM-Context": EXPERIMENT_CONTEXT})
        assert answer.headers["x-gateway-experiment"] == EXPERIMENT
        served.setdefault(answer.headers["x-gateway-variant"], []).append((user_id, chat, message))
    expected: dict[str, tuple[int, int]] = {}
    for variant, messages in served.items():
        for index, (user_id, chat, message) in enumerate(messages):
            rating = 1 if index % 2 == 0 else -1
            openwebui_state.add_feedback(user_id, rating, chat, message, model_id="smart")
            up, down = expected.get(variant, (0, 0))
            expected[variant] = (up + (rating == 1), down + (rating == -1))
    rows = _rows_when(
        sync_bff, admin_token, lambda rows: _counts(rows, "variant") == expected, by="variant", experiment=EXPERIMENT
    )
    assert {row["experiment"] for row in rows} == {EXPERIMENT}
    by_model = _feedback(sync_bff, admin_token, by="model", experiment=EXPERIMENT)["rows"]
    model_of = {"control": "fake-mini", "mock": "fake-mock"}
    assert _counts(by_model) == {model_of[variant]: counts for variant, counts in expected.items()}
    by_task = _feedback(sync_bff, admin_token, by="task", experiment=EXPERIMENT)["rows"]
    assert [row["task"] for row in by_task] == [""]  # the user's own chat, not a task call
    assert by_task[0]["rated"] == sum(up + down for up, down in expected.values())


def test_feedback_api_is_for_admins_and_checks_its_fields(sync_bff: Bff, user_token: str, admin_token: str) -> None:
    with sync_bff.client(user_token) as user:
        assert user.get("/api/usage/feedback").status_code == 403
    with sync_bff.client(admin_token) as admin:
        wrong = admin.get("/api/usage/feedback", params={"by": "user"})
        assert wrong.status_code == 400 and "'query.by'" in wrong.text
        bad = admin.get("/api/usage/feedback", params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
        assert bad.status_code == 400
        injected = admin.get("/api/usage/feedback", params={"experiment": "x' OR 1=1 --", "model": "') UNION SELECT 1 --"})
        assert injected.status_code == 200 and injected.json()["rows"] == []


# --- off, and Open-WebUI failing ----------------------------------------------------------------


def test_without_a_token_the_sync_is_off_with_a_warning(
    bff_factory: BffFactory, admin_token: str, user_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bff.usage.feedback_sync")
    plain = bff_factory(feedback_sync_interval_seconds=0.2)  # no OPEN_WEBUI_ADMIN_TOKEN
    assert any("OPEN_WEBUI_ADMIN_TOKEN is not set" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    _served(plain, user_id, 1)  # chat is unaffected
    sync = _feedback(plain, admin_token)["sync"]
    assert sync == {"enabled": False, "last_success_at": None, "last_error": None}
    off = bff_factory(open_webui_admin_token=admin_token, feedback_sync_interval_seconds=0)
    assert _feedback(off, admin_token)["sync"]["enabled"] is False


@pytest.fixture()
def faulty(openwebui_state: FakeOpenWebUIState) -> Iterator[FakeOpenWebUIState]:
    yield openwebui_state
    openwebui_state.evaluations_fault = None


@pytest.mark.parametrize("fault", ["503", "hang", "html"])
def test_openwebui_failing_is_retried_and_requests_are_unaffected(
    sync_bff: Bff, admin_token: str, faulty: FakeOpenWebUIState, user_id: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bff.usage.feedback_sync")
    faulty.evaluations_fault = fault
    error = _wait(lambda: _feedback(sync_bff, admin_token)["sync"]["last_error"], what="the failed poll")
    assert admin_token not in error
    expected = {"503": "HTTP 503", "hang": "unreachable (ReadTimeout)", "html": "text/html"}[fault]
    assert expected in error
    started = time.monotonic()
    [(chat, message)] = _served(sync_bff, user_id, 1)  # chat while the poller fails
    assert time.monotonic() - started < 5
    faulty.add_feedback(user_id, -1, chat, message)
    time.sleep(0.5)
    assert _feedback(sync_bff, admin_token, user=user_id)["rows"] == []
    faulty.evaluations_fault = None
    _rows_when(sync_bff, admin_token, lambda rows: _counts(rows) == {"fake-mini": (0, 1)}, user=user_id)
    assert _feedback(sync_bff, admin_token)["sync"]["last_error"] is None
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "feedback sync failed" in logged and admin_token not in logged


def test_first_sync_pages_through_everything(
    bff_factory: BffFactory, admin_token: str, openwebui_state: FakeOpenWebUIState, store: ClickHouseStore, user_id: str
) -> None:
    made = [openwebui_state.add_feedback(user_id, 1, "chat-p", f"page-{index}") for index in range(65)]
    before = len(openwebui_state.evaluation_calls)
    fresh = bff_factory(open_webui_admin_token=admin_token, feedback_sync_interval_seconds=30)
    _wait(lambda: _feedback(fresh, admin_token)["sync"]["last_success_at"], what="the first sync")
    ids = [feedback.id for feedback in made]
    stored = store.query("SELECT count() AS n FROM otel.gateway_feedback FINAL WHERE has({ids:Array(String)}, FeedbackId)", {"ids": ids})
    assert stored[0]["n"] == 65
    calls = openwebui_state.evaluation_calls[before:]
    assert any("page=3" in call and "order_by=updated_at" in call and "direction=desc" in call for call in calls)
    assert any(call.endswith("/feedbacks/all/ids") for call in calls)  # deletions checked at start
    fresh.stop()
