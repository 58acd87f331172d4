"""Every delivered token is billed: how a stream ends decides its outcome, tokens and cost.

Raw httpx streaming clients hang up at chosen points; the fake provider
(tests/support/fake_openai.py) streams normally, slowly, with a late usage event
(fake-usage-late) or breaks the connection mid-way (fake-drop-stream). The span of each
request is read back from the embedded ClickHouse the BFF writes to.
"""

import json
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from bff.clickhouse import ClickHouseStore
from conftest import FORWARD_SECRET, ROOT, SERVICE_KEY, Bff, BffFactory, chat_body
from support.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS, FakeProviderState, StreamRecord
from support.spans import spans_for
from support.tokens import forwarded_user_jwt

# fake-mini and every stream deployment derived from it (tests/fixtures/litellm.test.yaml)
INPUT_PRICE, OUTPUT_PRICE = Decimal("0.000001"), Decimal("0.000002")
EXACT_COST = PROMPT_TOKENS * INPUT_PRICE + COMPLETION_TOKENS * OUTPUT_PRICE
LEAKS = ("litellm.", "Exception", "http://", "https://", "127.0.0.1", "Traceback", "sk-test-master", "fake-provider-key")


@pytest.fixture(scope="module")
def store(clickhouse_url: str) -> ClickHouseStore:
    return ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")


def _request_id(kind: str) -> str:
    return f"bill-{kind}-{uuid.uuid4().hex[:8]}"


def _span(store: ClickHouseStore, request_id: str) -> dict[str, str]:
    spans = spans_for(store, request_id, timeout=20)
    assert len(spans) == 1, f"{request_id}: {len(spans)} spans"
    return spans[0]["SpanAttributes"]


def _data(line: str) -> dict[str, Any] | None:
    if not line.startswith("data: {"):
        return None
    return json.loads(line[6:], parse_float=Decimal)


def _content(event: dict[str, Any] | None) -> str | None:
    for choice in (event or {}).get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            return content
    return None


def _finished(event: dict[str, Any] | None) -> bool:
    return any(choice.get("finish_reason") for choice in (event or {}).get("choices") or ())


def _new_stream(state: FakeProviderState, before: int, model: str, timeout: float = 5) -> StreamRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [record for record in state.streams[before:] if record.model == model]
        if records:
            return records[-1]
        time.sleep(0.02)
    raise AssertionError(f"the provider never streamed {model}")


def _wait_closed_early(record: StreamRecord, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while record.closed_early_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record.closed_early_at is not None, "the provider kept streaming after the client left"
    assert not record.finished


def _as_user(bff: Bff, user_id: str, headers: dict[str, str] | None = None) -> httpx.Client:
    """The Open-WebUI path: service key plus the signed forwarded user."""
    user = {"id": user_id, "email": f"{user_id}@example.test", "name": user_id, "role": "user"}
    return bff.client(SERVICE_KEY, headers={"X-OpenWebUI-User-Jwt": forwarded_user_jwt(user, FORWARD_SECRET), **(headers or {})})


def _assert_billed(attributes: dict[str, str]) -> None:
    """The invariant: a span with tokens delivered carries a cost above zero."""
    if int(attributes.get("gen_ai.usage.output_tokens", "0")) > 0:
        assert Decimal(attributes.get("gateway.cost.usd", "0")) > 0, attributes


# --- how a stream ends --------------------------------------------------------------------------


def _hang_up(client: httpx.Client, model: str, stop: str, request_id: str) -> list[str]:
    """Streams `model` and closes the connection at `stop`: `headers`, `2 chunks` or `finish`.

    Returns the content pieces read. Closing an unread httpx stream closes its connection.
    """
    pieces: list[str] = []
    with client.stream("POST", "/v1/chat/completions", json=chat_body(model, stream=True), headers={"x-request-id": request_id}) as answer:
        assert answer.status_code == 200, answer.read()
        if stop == "headers":
            return pieces
        for line in answer.iter_lines():
            event = _data(line)
            if (content := _content(event)) is not None:
                pieces.append(content)
            if stop == "2 chunks" and len(pieces) == 2:
                return pieces
            if stop == "finish" and _finished(event):
                return pieces
    raise AssertionError(f"the stream ended before {stop}")


@pytest.mark.parametrize("stop", ["headers", "2 chunks"], ids=["before the first chunk", "mid-generation"])
@pytest.mark.parametrize("identity", ["session", "openwebui"])
def test_hang_up_before_usage_is_charged_an_estimate(
    bff: Bff, user_token: str, provider_state: FakeProviderState, store: ClickHouseStore, stop: str, identity: str
) -> None:
    request_id, before = _request_id("cut"), len(provider_state.streams)
    client = bff.client(user_token) if identity == "session" else _as_user(bff, "user-1")
    with client:
        pieces = _hang_up(client, "fake-long-stream", stop, request_id)
    _wait_closed_early(_new_stream(provider_state, before, "fake-long-stream"))
    attributes = _span(store, request_id)
    assert attributes["gateway.outcome"] == "client_disconnected", attributes
    assert attributes["http.response.status_code"] == "200"
    assert attributes.get("gateway.cost.estimated") == "true", attributes
    assert "error.type" not in attributes
    assert int(attributes["gen_ai.usage.input_tokens"]) > 0
    assert int(attributes["gen_ai.usage.output_tokens"]) >= len(pieces)
    assert Decimal(attributes["gateway.cost.usd"]) > 0
    assert attributes["gen_ai.response.model"] == "fake-long-stream"
    _assert_billed(attributes)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
def test_hang_up_before_litellm_answers_is_a_disconnect(bff_factory: BffFactory, user_token: str, store: ClickHouseStore, stream: bool) -> None:
    """The caller leaves while LiteLLM has not answered yet (fake-hang): the call ends then, as a
    disconnect, instead of waiting out the upstream timeout and recording a 504 nobody received."""
    patient = bff_factory(upstream_timeout_seconds=10.0)
    request_id = _request_id("early")
    with patient.client(user_token, headers={"x-request-id": request_id}) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=chat_body("fake-hang", stream=stream), timeout=1.0)
    left = time.monotonic()
    attributes = _span(store, request_id)
    recorded_after = time.monotonic() - left
    assert attributes["gateway.outcome"] == "client_disconnected", (
        f"recorded {recorded_after:.1f} s after the caller left as {attributes['gateway.outcome']} "
        f"{attributes['http.response.status_code']} {attributes.get('error.type')}"
    )
    assert recorded_after < 5


def _full_stream(client: httpx.Client, model: str, request_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    answer = client.post("/v1/chat/completions", json=chat_body(model, stream=True), headers={"x-request-id": request_id})
    assert answer.status_code == 200, answer.text
    lines = [line for line in answer.text.splitlines() if line.startswith("data: ")]
    return [event for line in lines if (event := _data(line)) is not None], lines


def test_hang_up_after_finish_waits_for_litellms_usage(
    bff: Bff, user_token: str, provider_state: FakeProviderState, store: ClickHouseStore
) -> None:
    with bff.client(user_token) as client:
        # What LiteLLM charges for this stream when read to its end
        events, _ = _full_stream(client, "fake-usage-late", _request_id("late-full"))
        litellm_cost = Decimal(events[-1]["usage"]["cost"])
        assert litellm_cost == pytest.approx(EXACT_COST)
        request_id, before = _request_id("late-cut"), len(provider_state.streams)
        started = time.monotonic()
        _hang_up(client, "fake-usage-late", "finish", request_id)
        hung_up_after = time.monotonic() - started
    record = _new_stream(provider_state, before, "fake-usage-late")
    assert record.finish_sent_at is not None
    attributes = _span(store, request_id)
    assert hung_up_after < 0.9, "the finish_reason chunk must arrive before the usage event (test premise)"
    assert attributes["gateway.outcome"] == "client_disconnected", attributes
    assert "gateway.cost.estimated" not in attributes, attributes
    assert attributes["gen_ai.usage.input_tokens"] == str(PROMPT_TOKENS)
    assert attributes["gen_ai.usage.output_tokens"] == str(COMPLETION_TOKENS)
    assert Decimal(attributes["gateway.cost.usd"]) == litellm_cost
    _assert_billed(attributes)


@pytest.mark.parametrize("identity", ["session", "openwebui"])
def test_mid_stream_upstream_failure(bff: Bff, user_token: str, provider_state: FakeProviderState, store: ClickHouseStore, identity: str) -> None:
    request_id, before = _request_id("drop"), len(provider_state.streams)
    client = bff.client(user_token) if identity == "session" else _as_user(bff, "user-1")
    with client:
        events, lines = _full_stream(client, "fake-drop-stream", request_id)
    assert _new_stream(provider_state, before, "fake-drop-stream").dropped
    assert [piece for event in events if (piece := _content(event))] == ["piece0 ", "piece1 "]
    assert "data: [DONE]" not in lines
    last = events[-1]
    assert set(last) == {"error"} and set(last["error"]) == {"message", "type", "code"}, last
    assert last["error"]["type"] == "upstream_error"
    for leak in LEAKS:
        assert leak not in lines[-1], (leak, lines[-1])
    attributes = _span(store, request_id)
    assert attributes["gateway.outcome"] == "upstream_failed", attributes
    assert attributes["error.type"] == last["error"]["code"]
    assert attributes.get("gateway.cost.estimated") == "true"
    assert int(attributes["gen_ai.usage.input_tokens"]) > 0 and int(attributes["gen_ai.usage.output_tokens"]) >= 2
    assert Decimal(attributes["gateway.cost.usd"]) > 0
    _assert_billed(attributes)


@pytest.mark.parametrize("model", ["fake-mini", "fake-slow-stream", "fake-usage-late"])
def test_complete_stream_is_billed_exactly(bff: Bff, user_token: str, store: ClickHouseStore, model: str) -> None:
    request_id = _request_id("full")
    with bff.client(user_token) as client:
        events, lines = _full_stream(client, model, request_id)
    assert lines[-1] == "data: [DONE]"
    usage = events[-1]["usage"]
    attributes = _span(store, request_id)
    assert attributes["gateway.outcome"] == "completed", attributes
    assert "gateway.cost.estimated" not in attributes and "error.type" not in attributes
    assert attributes["gen_ai.usage.input_tokens"] == str(usage["prompt_tokens"]) == str(PROMPT_TOKENS)
    assert attributes["gen_ai.usage.output_tokens"] == str(usage["completion_tokens"]) == str(COMPLETION_TOKENS)
    assert Decimal(attributes["gateway.cost.usd"]) == Decimal(usage["cost"])
    _assert_billed(attributes)


def test_complete_answer_is_billed_exactly(bff: Bff, user_token: str, store: ClickHouseStore) -> None:
    request_id = _request_id("plain")
    with bff.client(user_token) as client:
        answer = client.post("/v1/chat/completions", json=chat_body(), headers={"x-request-id": request_id})
    assert answer.status_code == 200
    attributes = _span(store, request_id)
    assert attributes["gateway.outcome"] == "completed"
    assert Decimal(attributes["gateway.cost.usd"]) == Decimal(answer.headers["x-litellm-response-cost"])
    assert attributes["gen_ai.usage.output_tokens"] == str(COMPLETION_TOKENS)


# --- the charge reaches the budget ------------------------------------------------------------


def _remaining(client: httpx.Client) -> Decimal:
    answer = client.get("/v1/models")
    assert answer.status_code == 200
    return Decimal(answer.headers["x-budget-remaining-usd"])


@pytest.mark.parametrize(
    ("model", "stop"),
    [("fake-long-stream", "2 chunks"), ("fake-long-stream", "headers"), ("fake-usage-late", "finish"), ("fake-drop-stream", None)],
    ids=["estimate mid-generation", "estimate before the first chunk", "exact after finish", "estimate after a provider failure"],
)
def test_next_request_sees_the_charge_in_its_budget(bff: Bff, store: ClickHouseStore, model: str, stop: str | None) -> None:
    user_id = f"bill-{uuid.uuid4().hex[:8]}"
    request_id = _request_id("budget")
    with _as_user(bff, user_id) as client:
        before = _remaining(client)
        if stop is None:
            _full_stream(client, model, request_id)
        else:
            _hang_up(client, model, stop, request_id)
        cost = Decimal(_span(store, request_id)["gateway.cost.usd"])  # recorded: the budget is charged before the span ends
        assert cost > 0
        after = _remaining(client)
        time.sleep(1.0)  # the span reaches the rollup: the charge must not count twice
        later = _remaining(client)
    assert before - after == cost, (before, after, cost)
    assert later == after, (after, later)


# --- the invariant over everything this run recorded -------------------------------------------


def test_no_span_delivered_tokens_for_free(store: ClickHouseStore) -> None:
    time.sleep(0.5)  # the last spans of this module reach the store
    rows = store.query(
        "SELECT SpanAttributes AS attributes FROM otel.otel_traces "
        "WHERE SpanAttributes['http.response.status_code'] = '200' "
        "AND toInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens']) > 0",
        {},
    )
    assert rows, "no span with delivered tokens at all"
    free = [row["attributes"] for row in rows if Decimal(row["attributes"].get("gateway.cost.usd") or "0") <= 0]
    assert not free, "\n".join(
        f"{a.get('gateway.request_id')} {a.get('gen_ai.request.model')} {a.get('gateway.outcome')} out={a.get('gen_ai.usage.output_tokens')} cost={a.get('gateway.cost.usd')}"
        for a in free
    )
