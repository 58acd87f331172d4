"""Rate limits per user: requests and tokens per minute, requests in flight, OpenAI's headers,
in one process and shared by two BFFs through one real Redis."""

import asyncio
import concurrent.futures
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bff.clickhouse import ClickHouseStore
from bff.policy.early_retries import EarlyRetries
from bff.policy.rate_limits import duration, estimate_tokens
from conftest import ROOT, Bff, BffFactory, chat_body
from support.redis_server import RedisServer
from support.spans import spans_for
from test_usage import _as_user


def policy_with_limits(tmp_path: Path, limits: dict[str, Any], name: str = "policy.yaml") -> Path:
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy["limits"] = {"roles": {"user": limits, "admin": {}}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(policy))
    return path


def _user() -> str:
    return f"rl-{uuid.uuid4().hex[:8]}"


def _seconds_left_in_minute() -> float:
    return 60 - time.time() % 60


@pytest.fixture
def whole_window() -> None:
    """Windows are whole UTC minutes: a test that counts one window starts well inside it."""
    if _seconds_left_in_minute() < 15:
        time.sleep(_seconds_left_in_minute() + 0.1)


def test_requests_per_minute_refuses_the_request_that_crosses(bff_factory: BffFactory, tmp_path: Path, whole_window: None) -> None:
    bff = bff_factory(policy_file=policy_with_limits(tmp_path, {"requests_per_minute": 3}))
    with _as_user(bff, _user()) as client:
        answers = [client.post("/v1/chat/completions", json=chat_body()) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    # another user is not limited by this one
    with _as_user(bff, _user()) as other:
        assert other.post("/v1/chat/completions", json=chat_body()).status_code == 200


def test_requests_in_flight_are_bounded_per_user(bff_factory: BffFactory, tmp_path: Path) -> None:
    bff = bff_factory(policy_file=policy_with_limits(tmp_path, {"concurrent_requests": 2}))
    user = _user()
    started = threading.Barrier(3)

    def stream() -> int:
        with _as_user(bff, user) as client, client.stream(
            "POST", "/v1/chat/completions", json=chat_body("fake-slow-stream", stream=True)
        ) as answer:
            started.wait(10)  # both streams are in flight
            answer.read()
            return answer.status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        streams = [pool.submit(stream) for _ in range(2)]
        started.wait(10)
        with _as_user(bff, user) as client:
            third = client.post("/v1/chat/completions", json=chat_body())
        with _as_user(bff, _user()) as other:
            assert other.post("/v1/chat/completions", json=chat_body()).status_code == 200  # not this user's slots
        assert [s.result(30) for s in streams] == [200, 200]
    assert third.status_code == 429 and third.json()["error"]["code"] == "concurrency_limit_exceeded"
    assert third.headers["retry-after"] == "1"
    with _as_user(bff, user) as client:  # the streams ended: their slots are free
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200


def test_tokens_per_minute_reserves_the_prompt_and_settles_usage(
    bff_factory: BffFactory, tmp_path: Path, whole_window: None, clickhouse_url: str
) -> None:
    bff = bff_factory(policy_file=policy_with_limits(tmp_path, {"tokens_per_minute": 60}))
    with _as_user(bff, _user()) as client:
        first = client.post("/v1/chat/completions", json=chat_body())
        assert first.status_code == 200
        used = first.json()["usage"]["total_tokens"]
        # the answer carries the reservation (the prompt's estimate); the next one shows the settled usage
        second = client.post("/v1/chat/completions", json=chat_body())
        assert second.status_code == 200
        estimate = estimate_tokens({"messages": chat_body()["messages"]})
        assert int(second.headers["x-ratelimit-remaining-tokens"]) == 60 - used - estimate
        assert second.headers["x-ratelimit-limit-tokens"] == "60"
        too_big = client.post("/v1/chat/completions", json=chat_body(messages=[{"role": "user", "content": "x" * 400}]))
        assert too_big.status_code == 429 and too_big.headers["x-should-retry"] == "false"
        while True:  # fill the window, then the next request is refused until it resets
            answer = client.post("/v1/chat/completions", json=chat_body())
            if answer.status_code != 200:
                break
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        again = client.post("/v1/chat/completions", json=chat_body())  # did not wait: held (at most 1 s)
    assert again.status_code == 429 and again.json()["error"]["code"] == "rate_limit_exceeded"
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    assert 0 < int(spans_for(store, again.headers["x-request-id"])[0]["SpanAttributes"]["gateway.refusal.held_ms"]) <= 1000


def test_a_caller_back_before_retry_after_is_answered_when_it_is_over(
    bff_factory: BffFactory, tmp_path: Path, clickhouse_url: str
) -> None:
    """The refusal that says `Retry-After: 1` goes out at once; the next one, a retry that did
    not wait, is held until that second is over; a caller who waited is answered at once, and
    nobody else waits meanwhile."""
    bff = bff_factory(policy_file=policy_with_limits(tmp_path, {"concurrent_requests": 1}))
    user = _user()
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")

    def held_ms(answer: httpx.Response) -> Any:
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert answer.headers["retry-after"] == "1"
        return spans_for(store, answer.headers["x-request-id"])[0]["SpanAttributes"].get("gateway.refusal.held_ms")

    with _as_user(bff, user) as streaming, streaming.stream(
        "POST", "/v1/chat/completions", json=chat_body("fake-long-stream", stream=True)
    ) as stream:  # the user's one slot, for the whole test
        assert stream.status_code == 200
        chunks = stream.iter_bytes()  # kept: a generator dropped here would close the stream
        next(chunks)
        with _as_user(bff, user) as client, _as_user(bff, _user()) as other, concurrent.futures.ThreadPoolExecutor(1) as pool:
            told = client.post("/v1/chat/completions", json=chat_body())
            began = time.monotonic()
            early = pool.submit(client.post, "/v1/chat/completions", json=chat_body())
            time.sleep(0.1)
            assert other.post("/v1/chat/completions", json=chat_body()).status_code == 200  # while it is held
            assert not early.done()
            retried = early.result(10)
            waited_for = time.monotonic() - began
            time.sleep(1.05)  # honours Retry-After
            patient = client.post("/v1/chat/completions", json=chat_body())
    assert held_ms(told) is None and held_ms(patient) is None
    held = held_ms(retried)
    assert held is not None and 500 <= int(held) <= 1000  # until the second `told` announced was over
    assert waited_for >= int(held) / 1000


def test_held_refusals_are_bounded() -> None:
    async def scenario() -> None:
        retries = EarlyRetries(max_hold_seconds=0.3, max_held_per_user=2, max_held=3)
        assert await retries.refusing("a", 5) == 0  # told to wait: at once
        assert await retries.refusing(None, 5) == 0  # no user: nobody to hold
        holds = [asyncio.ensure_future(retries.refusing("a", 5)) for _ in range(3)]  # two held, the third at once
        others = [asyncio.ensure_future(retries.refusing("b", 5)) for _ in range(3)]  # b's first told, one held: 3 in all
        await asyncio.sleep(0.05)
        assert retries.held == 3
        results = await asyncio.gather(*holds, *others)
        assert sorted(results[:3]) == [0, 0.3, 0.3]  # capped at max_hold_seconds, not Retry-After's 5 s
        assert sorted(results[3:]) == [0, 0, 0.3]
        assert retries.held == 0
        short = EarlyRetries(max_hold_seconds=5, max_held_per_user=8, max_held=8)
        assert await short.refusing("c", 0.2) == 0
        assert 0 < await short.refusing("c", 0.2) <= 0.2  # held only until the wait that was told ends
        await asyncio.sleep(0.05)
        assert await short.refusing("c", 0.2) == 0  # the wait is over: told again, at once
        off = EarlyRetries(max_hold_seconds=0, max_held_per_user=8, max_held=8)
        assert [await off.refusing("d", 5) for _ in range(3)] == [0, 0, 0]

    asyncio.run(scenario())


def test_the_shipped_policy_limits_users(bff_factory: BffFactory) -> None:
    bff = bff_factory(policy_file=ROOT / "config" / "policy.yaml")
    with _as_user(bff, _user()) as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-limit-requests"] == "60"
    assert answer.headers["x-ratelimit-limit-tokens"] == "200000"


def test_units() -> None:
    assert [duration(s) for s in (0.02, 1, 6.2, 59.5, 60, 75)] == ["20ms", "1s", "7s", "1m0s", "1m0s", "1m15s"]
    assert estimate_tokens({"messages": [{"role": "user", "content": "x" * 40}]}) == 11  # "user" + 40 x: 44 characters
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}}
    assert estimate_tokens({"messages": [{"role": "user", "content": [image]}]}) < 100  # an image is not its base64


@pytest.fixture
def redis_pair(bff_factory: BffFactory, redis_server: RedisServer, tmp_path: Path) -> tuple[Bff, Bff]:
    path = policy_with_limits(tmp_path, {"requests_per_minute": 5, "concurrent_requests": 1})
    first = bff_factory(policy_file=path, redis_url=redis_server.url)
    second = bff_factory(policy_file=path, redis_url=redis_server.url)
    return first, second


def test_two_bffs_sharing_redis_enforce_one_limit(redis_pair: tuple[Bff, Bff], whole_window: None) -> None:
    user = _user()
    statuses = []
    for number in range(7):
        with _as_user(redis_pair[number % 2], user) as client:
            statuses.append(client.post("/v1/chat/completions", json=chat_body()).status_code)
    assert statuses == [200] * 5 + [429, 429]


def test_two_bffs_sharing_redis_share_the_slots_in_flight(redis_pair: tuple[Bff, Bff]) -> None:
    user = _user()
    with _as_user(redis_pair[0], user) as first, first.stream(
        "POST", "/v1/chat/completions", json=chat_body("fake-slow-stream", stream=True)
    ) as streaming:
        assert streaming.status_code == 200
        with _as_user(redis_pair[1], user) as second:
            answer = second.post("/v1/chat/completions", json=chat_body())
        streaming.read()
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "concurrency_limit_exceeded"


def test_redis_down_refuses_paid_calls_and_readiness_says_so(bff_factory: BffFactory, tmp_path: Path) -> None:
    from support.servers import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    bff = bff_factory(policy_file=policy_with_limits(tmp_path, {"requests_per_minute": 5}), redis_url=dead)
    with _as_user(bff, _user()) as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "shared_state_unavailable"
    assert "Traceback" not in answer.text and "127.0.0.1" not in answer.text
    ready = httpx.get(f"{bff.url}/health/ready", timeout=10)
    assert ready.status_code == 503 and ready.json()["dependencies"]["redis"]["status"] == "down"


def _counters_cases(redis_server: RedisServer) -> list[Any]:
    import redis.asyncio as aioredis

    from bff.policy.rate_counters import MemoryCounters, RedisCounters

    return [MemoryCounters(), RedisCounters(aioredis.Redis.from_url(redis_server.url))]


def test_admit_takes_a_slot_and_a_request_together_or_neither(redis_server: RedisServer, whole_window: None) -> None:
    """One step (one Redis round trip): a request refused by its requests per minute holds no slot,
    one refused by its slots counts no request; finish frees the slot and settles tokens."""
    import asyncio

    from bff.policy.rate_counters import AdmitKeys

    async def scenario(counters: Any) -> None:
        user = _user()

        def keys(member: str) -> AdmitKeys:
            return AdmitKeys(f"{user}:inflight", member, 2, 60, f"{user}:req", 3, f"{user}:tok")

        first, second = await counters.admit(keys("a"), 60), await counters.admit(keys("b"), 60)
        assert (first.refused, first.requests.used, second.refused, second.requests.used) == (None, 1, None, 2)
        assert first.tokens.used == 0
        full = await counters.admit(keys("c"), 60)
        assert full.refused == "concurrency" and full.requests is None
        await counters.finish(f"{user}:inflight", "a", None, None, 0, 60)
        third = await counters.admit(keys("c"), 60)  # a's slot is free; the 'full' refusal counted no request
        assert third.refused is None and third.requests.used == 3
        await counters.finish(f"{user}:inflight", "b", None, None, 0, 60)
        over = await counters.admit(keys("d"), 60)
        assert over.refused == "requests" and over.requests.used == 3 and not over.requests.allowed
        await counters.finish(f"{user}:inflight", "c", None, None, 0, 60)
        # 'over' took no slot: with c freed both slots are free again, checked by a user without a request limit
        unlimited = AdmitKeys(f"{user}:inflight", "e", 2, 60, f"{user}:req", None, None)
        assert (await counters.admit(unlimited, 60)).refused is None
        assert (await counters.admit(AdmitKeys(f"{user}:inflight", "f", 2, 60, f"{user}:req", None, None), 60)).refused is None
        # tokens: settled in the reservation's window, never below 0; an ended window's excess counts now
        from bff.policy.rate_counters import window_start

        now = window_start(60)
        await counters.take(f"{user}:tok", 10, 100, 60)
        await counters.finish(f"{user}:inflight", "e", f"{user}:tok", now, 5, 60)
        assert (await counters.used(f"{user}:tok", 60)).used == 15
        await counters.finish(f"{user}:inflight", "f", f"{user}:tok", now, -50, 60)
        assert (await counters.used(f"{user}:tok", 60)).used == 0
        await counters.finish(f"{user}:inflight", None, f"{user}:tok", now - 60, 7, 60)
        assert (await counters.used(f"{user}:tok", 60)).used == 7
        await counters.finish(f"{user}:inflight", None, f"{user}:tok", now - 60, -7, 60)  # less used: nothing to add
        assert (await counters.used(f"{user}:tok", 60)).used == 7

    for counters in _counters_cases(redis_server):
        asyncio.run(scenario(counters))
