"""Budget alerts reach a loopback webhook exactly once per user, period and threshold: across a
restart, with retries, with two replicas racing on one Redis; the answers carry x-budget-warning."""

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from conftest import FORWARD_SECRET, MASTER_KEY, ROOT, SERVICE_KEY, WEBUI_SECRET, Bff, BffFactory, chat_body
from support.redis_server import RedisServer
from support.servers import ThreadServer
from test_usage import _as_user, _wait_for

# One fake-mini call costs ~0.000025 USD (tests/fixtures/litellm.test.yaml): 12.5 % of this limit.
DAILY = "0.0002"
CALL_USD = 0.000025


@dataclass
class Receiver:
    """A webhook receiver on loopback that records what it is posted."""

    url: str = ""
    fail_first: int = 0  # answer 503 to this many posts first
    delay_seconds: float = 0.0  # answer this late (a slow Slack)
    posts: list[dict[str, Any]] = field(default_factory=list)  # accepted (2xx) posts
    raw: list[bytes] = field(default_factory=list)  # every post's body, refused ones too
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self, user_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [post for post in self.posts if post.get("user_id") == user_id]

    def attempts(self) -> int:
        with self.lock:
            return len(self.raw)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    async def hook(request: Request) -> PlainTextResponse:
        body = await request.body()
        with state.lock:
            state.raw.append(body)
            state.headers.append(dict(request.headers))
            failing = len(state.raw) <= state.fail_first
            if not failing:
                state.posts.append(json.loads(body))
        if state.delay_seconds:
            await asyncio.sleep(state.delay_seconds)
        return PlainTextResponse("no", status_code=503) if failing else PlainTextResponse("ok")

    server = ThreadServer(Starlette(routes=[Route("/services/{rest:path}", hook, methods=["POST"])])).start()
    state.url = server.url
    yield state
    server.stop()


def _hook_url(receiver: Receiver) -> tuple[str, str]:
    """A Slack-like incoming-webhook URL whose last part is the secret."""
    secret = f"hooksecret{uuid.uuid4().hex}"
    return f"{receiver.url}/services/T0GATEWAY/B0ALERTS/{secret}", secret


def _policy(tmp_path: Path, user_id: str, alerts: list[float], daily: str = DAILY) -> Path:
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy.pop("limits", None)  # the suites call far more often than the shipped rate limits allow
    policy["budgets"]["alerts"] = alerts
    policy["budgets"]["users"] = {user_id: {"daily_usd": daily, "monthly_usd": "10"}}
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def _recorded(bff: Bff, admin_token: str, user_id: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The user's alerts in GET /api/usage/alerts, once there are `count` (the record follows the delivery)."""
    deadline = time.monotonic() + timeout
    with bff.client(admin_token) as admin:
        while True:
            answer = admin.get("/api/usage/alerts", params={"user": user_id, "limit": "100"})
            assert answer.status_code == 200, answer.text
            alerts: list[dict[str, Any]] = answer.json()["alerts"]
            if len(alerts) >= count or time.monotonic() > deadline:
                return sorted(alerts, key=lambda alert: alert["threshold"])
            time.sleep(0.2)


def _chat(client: httpx.Client) -> httpx.Response:
    answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code in (200, 429), answer.text
    return answer


def _assert_no_secret(receiver: Receiver, url: str, secret: str) -> None:
    for body in receiver.raw:
        text = body.decode()
        for forbidden in (secret, url, MASTER_KEY, WEBUI_SECRET, SERVICE_KEY, FORWARD_SECRET, "Say hello", "Bearer", "sk-"):
            assert forbidden not in text, forbidden
    for headers in receiver.headers:
        assert "authorization" not in headers


def test_one_alert_per_threshold_and_none_again_after_a_restart(
    bff_factory: BffFactory, receiver: Receiver, tmp_path: Path, admin_token: str
) -> None:
    user_id = f"alerts-{uuid.uuid4().hex[:8]}"
    url, secret = _hook_url(receiver)
    settings = {
        "policy_file": _policy(tmp_path, user_id, [0.2, 0.45, 0.85]),
        "budget_alert_webhook_url": url,
        "budget_cache_seconds": 0,
    }
    first = bff_factory(**settings)
    with _as_user(first, user_id) as client:
        answers = [_chat(client) for _ in range(4)]  # 12.5 % each: 50 % after the fourth
    assert [answer.status_code for answer in answers] == [200] * 4
    # Each answer reports the spend before its request: past 0.2 from the third on.
    assert [answer.headers.get("x-budget-warning") for answer in answers] == [None, None, "daily=0.2", "daily=0.2"]

    recorded = _recorded(first, admin_token, user_id, 2)
    assert [alert["threshold"] for alert in recorded] == [0.2, 0.45]
    assert {alert["delivery"] for alert in recorded} == {"sent"}
    posts = receiver.accepted(user_id)
    assert sorted(post["threshold"] for post in posts) == [0.2, 0.45]
    today = datetime.now(UTC).date()
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    for post in posts:
        assert post["event"] == "budget_alert"
        assert (post["user_id"], post["user_email"], post["user_name"]) == (user_id, f"{user_id}@example.test", user_id)
        assert (post["period"], post["limit_usd"], post["period_start"]) == ("daily", DAILY, today.isoformat())
        assert datetime.fromisoformat(post["resets_at"]) == tomorrow
        assert post["threshold"] * float(DAILY) <= float(post["spent_usd"]) <= 4 * CALL_USD * 1.01
        percent = round(post["threshold"] * 100)
        assert re.fullmatch(
            rf"user {re.escape(user_id)}@example\.test \(id {re.escape(user_id)}\) passed {percent}% of their daily budget: "
            rf"\$0\.000\d+ of \$0\.0002, resets {tomorrow:%Y-%m-%d} 00:00 UTC",
            post["text"],
        ), post["text"]
    assert {post["alert_id"] for post in posts} == {alert["alert_id"] for alert in recorded}
    _assert_no_secret(receiver, url, secret)

    # A restart knows only ClickHouse: the spend is there, so are the alerts.
    with first.client(admin_token) as admin:
        _wait_for(admin, {"user": user_id}, 4)
    restarted = bff_factory(**settings)
    with _as_user(restarted, user_id) as client:
        later = [_chat(client) for _ in range(3)]  # 62.5, 75 and 87.5 %
    assert [answer.status_code for answer in later] == [200] * 3
    assert [answer.headers.get("x-budget-warning") for answer in later] == ["daily=0.45"] * 3
    recorded = _recorded(restarted, admin_token, user_id, 3)
    time.sleep(1.0)  # a resend would be on its way by now
    assert [alert["threshold"] for alert in _recorded(restarted, admin_token, user_id, 4, timeout=0)] == [0.2, 0.45, 0.85]
    assert sorted(post["threshold"] for post in receiver.accepted(user_id)) == [0.2, 0.45, 0.85]  # no resend of 0.2, 0.45
    with _as_user(restarted, user_id) as client:
        assert _chat(client).headers["x-budget-warning"] == "daily=0.85"


def test_one_request_passing_several_thresholds_sends_one_alert_each(
    bff_factory: BffFactory, receiver: Receiver, tmp_path: Path, admin_token: str
) -> None:
    user_id = f"alerts-{uuid.uuid4().hex[:8]}"
    url, _ = _hook_url(receiver)
    bff = bff_factory(policy_file=_policy(tmp_path, user_id, [0.3, 0.6, 0.9], daily="0.00004"), budget_alert_webhook_url=url)
    with _as_user(bff, user_id) as client:
        first = _chat(client)  # 62.5 %: passes 0.3 and 0.6 at once
        assert "x-budget-warning" not in first.headers
        assert [alert["threshold"] for alert in _recorded(bff, admin_token, user_id, 2)] == [0.3, 0.6]
        second = _chat(client)  # 125 %: passes 0.9 (and the limit)
        third = _chat(client)
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert second.headers["x-budget-warning"] == "daily=0.6"
    assert third.headers["x-budget-warning"] == "daily=0.9" and third.json()["error"]["code"] == "budget_exceeded"
    assert [alert["threshold"] for alert in _recorded(bff, admin_token, user_id, 3)] == [0.3, 0.6, 0.9]
    assert sorted(post["threshold"] for post in receiver.accepted(user_id)) == [0.3, 0.6, 0.9]
    texts = {post["threshold"]: post["text"] for post in receiver.accepted(user_id)}
    assert "passed 30% of their daily budget: $0.000025 of $0.00004" in texts[0.3]
    assert "passed 60% of their daily budget: $0.000025 of $0.00004" in texts[0.6]


def test_a_failing_receiver_is_retried_and_gets_the_alert_once(
    bff_factory: BffFactory, receiver: Receiver, tmp_path: Path, admin_token: str
) -> None:
    receiver.fail_first = 2
    user_id = f"alerts-{uuid.uuid4().hex[:8]}"
    url, secret = _hook_url(receiver)
    bff = bff_factory(
        policy_file=_policy(tmp_path, user_id, [0.1]), budget_alert_webhook_url=url, budget_alert_attempts=3, budget_alert_timeout_seconds=2
    )
    with _as_user(bff, user_id) as client:
        _chat(client)
    [alert] = _recorded(bff, admin_token, user_id, 1)
    assert (alert["delivery"], alert["attempts"]) == ("sent", 3)
    assert receiver.attempts() == 3 and len(receiver.accepted(user_id)) == 1
    assert len({body for body in receiver.raw}) == 1  # the same alert each time
    _assert_no_secret(receiver, url, secret)


def test_a_dead_receiver_costs_bounded_attempts_once(bff_factory: BffFactory, receiver: Receiver, tmp_path: Path, admin_token: str) -> None:
    receiver.fail_first = 1000
    user_id = f"alerts-{uuid.uuid4().hex[:8]}"
    url, _ = _hook_url(receiver)
    bff = bff_factory(policy_file=_policy(tmp_path, user_id, [0.1]), budget_alert_webhook_url=url, budget_alert_attempts=2)
    with _as_user(bff, user_id) as client:
        _chat(client)
        [alert] = _recorded(bff, admin_token, user_id, 1)
        assert (alert["delivery"], alert["attempts"]) == ("failed", 2)
        assert _chat(client).headers["x-budget-warning"] == "daily=0.1"
        time.sleep(1.0)
    assert receiver.attempts() == 2  # recorded as failed: later requests do not retry it


def test_without_a_webhook_alerts_are_recorded_and_answers_warned(bff_factory: BffFactory, tmp_path: Path, admin_token: str) -> None:
    user_id = f"alerts-{uuid.uuid4().hex[:8]}"
    bff = bff_factory(policy_file=_policy(tmp_path, user_id, [0.1]))
    with _as_user(bff, user_id) as client:
        _chat(client)
        [alert] = _recorded(bff, admin_token, user_id, 1)
        warned = _chat(client)
    assert (alert["delivery"], alert["attempts"], alert["period"]) == ("no_webhook", 0, "daily")
    assert warned.headers["x-budget-warning"] == "daily=0.1"


@pytest.mark.parametrize("shared", [True, False], ids=["one Redis: one alert", "no Redis (control): each process sends"])
def test_two_replicas_racing(
    bff_factory: BffFactory, receiver: Receiver, redis_server: RedisServer, tmp_path: Path, admin_token: str, shared: bool
) -> None:
    receiver.delay_seconds = 1.0  # both replicas decide while the first delivery is still in flight
    user_id = f"alerts-{uuid.uuid4().hex[:8]}"
    url, _ = _hook_url(receiver)
    settings: dict[str, Any] = {"policy_file": _policy(tmp_path, user_id, [0.1]), "budget_alert_webhook_url": url}
    if shared:
        settings["redis_url"] = redis_server.url
    replicas = [bff_factory(**settings), bff_factory(**settings)]

    def call(bff: Bff) -> int:
        with _as_user(bff, user_id) as client:
            return _chat(client).status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(call, replicas)) == [200, 200]
    expected = 1 if shared else 2
    _recorded(replicas[0], admin_token, user_id, expected)
    time.sleep(2.0)  # any second delivery would have landed
    assert len(receiver.accepted(user_id)) == expected
    assert len(_recorded(replicas[0], admin_token, user_id, 3, timeout=0)) == expected


def test_only_admins_list_alerts_and_the_limit_is_bounded(bff: Bff, admin_token: str, user_token: str) -> None:
    with bff.client(user_token) as user:
        refused = user.get("/api/usage/alerts")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    with bff.client(admin_token) as admin:
        for limit in ("0", "501", "x"):
            bad = admin.get("/api/usage/alerts", params={"limit": limit})
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request", limit
        answer = admin.get("/api/usage/alerts", params={"limit": "1"})
    assert answer.status_code == 200 and len(answer.json()["alerts"]) <= 1
