"""The BFF run with the environment docker-compose.yml gives the `bff` service, host names
swapped for loopback (support/compose_env.py): PUBLIC_PATH_PREFIX=/gateway behind a Kong
stand-in that strips it, ROLE_SOURCE=api against the Open-WebUI stand-in, and spans either
written to the store by the BFF itself or exported over OTLP to a collector stand-in.

Each variant is one real `python -m bff` process (cwd: the repository root, as in the
image), started once for this module:

    own store   compose's environment, but CLICKHOUSE_URL=chdb://... and no
                OTEL_EXPORTER_OTLP_ENDPOINT: the BFF writes its spans to ClickHouse itself
    otlp        compose's environment as it is: spans over OTLP to the collector stand-in;
                CLICKHOUSE_URL=chdb://... (another path) for usage and budget reads

Chats go through the prefix with an Open-WebUI session token (Kong's route) and the way
Open-WebUI's backend calls (straight to the BFF: service key + signed user JWT).
"""

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from conftest import FORWARD_SECRET, MASTER_KEY, OUTPUT, ROOT, SERVICE_KEY, WEBUI_SECRET, chat_body
from support.compose_env import CollectorStandIn, ComposeShapeError, KongStandIn, bff_environment, service_environment
from support.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS, SLOW_STREAM_CHUNKS, FakeProviderState
from support.fake_openwebui import FakeOpenWebUIState
from support.otlp_receiver import attributes
from support.redis_server import RedisServer
from support.servers import ProcessServer, ThreadServer, free_port
from support.tokens import forwarded_user_jwt, session_token

PREFIX = "/gateway"
CHAT_ROUTE = "/v1/chat/completions"
# tests/fixtures/litellm.test.yaml prices fake-mini at 1e-6 / 2e-6 USD per input / output token;
# LiteLLM reports it as a float's text (2.4999999999999998e-05), which the gateway keeps exactly.
FAKE_MINI_COST = Decimal(PROMPT_TOKENS) * Decimal("0.000001") + Decimal(COMPLETION_TOKENS) * Decimal("0.000002")
STORE_PATIENCE_SECONDS = 15.0
START_SECONDS = 90.0

# The .env values compose would read: the test secrets of conftest.py.
COMPOSE_VARIABLES = {
    "LITELLM_MASTER_KEY": MASTER_KEY,
    "WEBUI_SECRET_KEY": WEBUI_SECRET,
    "FORWARD_USER_INFO_HEADER_JWT_SECRET": FORWARD_SECRET,
    "OPENWEBUI_BFF_SERVICE_KEY": SERVICE_KEY,
    "CLICKHOUSE_USER": "gateway",
    "CLICKHOUSE_PASSWORD": "test-clickhouse-password",
}


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


@dataclass
class ComposeBff:
    name: str
    direct: str  # the BFF's own port: how Open-WebUI's backend reaches it (http://bff:8080)
    public: str  # through the Kong stand-in, prefix included
    environment: dict[str, str]
    process: ProcessServer
    kong: KongStandIn

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(timeout=30, **kwargs)


@pytest.fixture(scope="module")
def collector() -> Iterator[CollectorStandIn]:
    receiver = CollectorStandIn().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def compose_hosts(
    litellm_url: str, openwebui: tuple[ThreadServer, FakeOpenWebUIState], collector: CollectorStandIn, redis_server: RedisServer
) -> dict[str, str]:
    """compose's service:port -> the loopback server standing in for it."""
    nowhere = f"127.0.0.1:{free_port()}"  # profiles not started: nothing listens, as on a stack without them
    return {
        "litellm:4000": _host_port(litellm_url),
        "redis:6379": _host_port(redis_server.url),  # a real redis-server: both BFFs share it, as compose's replicas do
        "open-webui:8080": _host_port(openwebui[0].url),
        "otel-collector:4318": _host_port(collector.url),
        "otel-collector:13133": _host_port(collector.health_url),
        "comfyui:8188": nowhere,
        "ollama:11434": nowhere,
    }


def _clean_base_environment() -> dict[str, str]:
    """Only what a process needs to run: nothing of this machine's settings reaches the BFF."""
    return {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}


def _start_bff(name: str, hosts: dict[str, str], overrides: dict[str, str | None]) -> ComposeBff:
    environment = bff_environment(COMPOSE_VARIABLES, hosts, overrides)
    port = free_port()
    test_files = {  # what conftest's BFFs use, instead of the image's /app/config
        "BFF_HOST": "127.0.0.1",
        "BFF_PORT": str(port),
        "POLICY_FILE": str(ROOT / "config" / "policy.yaml"),
        "ROUTING_FILE": str(ROOT / "tests" / "fixtures" / "routing.test.yaml"),
        "COMFYUI_WORKFLOWS_DIR": str(ROOT / "config" / "comfyui"),
        "MEDIA_DIR": str(OUTPUT / f"compose-{name}-media"),
    }
    process = ProcessServer(
        [sys.executable, "-m", "bff"],
        {**environment, **test_files},
        OUTPUT / f"compose-{name}-bff.log",
        base_env=_clean_base_environment(),
        cwd=ROOT,
    )
    direct = f"http://127.0.0.1:{port}"
    kong: KongStandIn | None = None
    try:
        _wait_ready(process, direct)
        kong = KongStandIn(PREFIX, direct).start()
    except BaseException:
        if kong is not None:
            kong.stop()
        process.stop()
        raise
    return ComposeBff(name, direct, kong.url, environment, process, kong)


def _wait_ready(process: ProcessServer, url: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"the BFF exited with {process.process.returncode}:\n{process.log_tail()}")
        try:
            answer = httpx.get(f"{url}/health/ready", timeout=5)
            if answer.status_code == 200 and answer.json()["status"] == "ready":
                return
            last = answer.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"the BFF was not ready within {START_SECONDS:.0f} s ({last}):\n{process.log_tail()}")


def _stop(bff: ComposeBff) -> None:
    try:
        bff.kong.stop()
    finally:
        bff.process.stop()


@pytest.fixture(scope="module")
def own_store(compose_hosts: dict[str, str]) -> Iterator[ComposeBff]:
    path = OUTPUT / "compose-clickhouse"
    shutil.rmtree(path, ignore_errors=True)
    bff = _start_bff("own-store", compose_hosts, {"CLICKHOUSE_URL": f"chdb://{path}", "OTEL_EXPORTER_OTLP_ENDPOINT": None})
    yield bff
    _stop(bff)


@pytest.fixture(scope="module")
def otlp(compose_hosts: dict[str, str]) -> Iterator[ComposeBff]:
    path = OUTPUT / "compose-otlp-clickhouse"
    shutil.rmtree(path, ignore_errors=True)
    bff = _start_bff("otlp", compose_hosts, {"CLICKHOUSE_URL": f"chdb://{path}"})
    yield bff
    _stop(bff)


# --- callers ------------------------------------------------------------------------


@dataclass
class Caller:
    """One way in: `kong` (a browser or SDK with a session token, through /gateway) or
    `openwebui` (Open-WebUI's backend: service key + signed user JWT, straight to the BFF)."""

    kind: str
    user_id: str
    bff: ComposeBff

    @property
    def session_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {session_token(self.user_id, WEBUI_SECRET)}"}

    def chat_url(self) -> str:
        return (self.bff.public if self.kind == "kong" else self.bff.direct) + CHAT_ROUTE

    def chat_headers(self) -> dict[str, str]:
        if self.kind == "kong":
            return self.session_headers
        user = {"id": self.user_id, "email": f"{self.user_id}@example.test", "name": f"User {self.user_id}", "role": "user"}
        return {
            "Authorization": f"Bearer {SERVICE_KEY}",
            "X-OpenWebUI-User-Jwt": forwarded_user_jwt(user, FORWARD_SECRET),
            "X-OpenWebUI-Chat-Id": f"chat-{self.user_id}",
        }

    def spent_today(self) -> Decimal:
        """What the BFF counts against the caller's daily budget (asked through the prefix)."""
        with self.bff.client(headers=self.session_headers) as client:
            answer = client.get(f"{self.bff.public}/api/usage/budget")
        assert answer.status_code == 200, answer.text
        daily = next(period for period in answer.json()["periods"] if period["period"] == "daily")
        return Decimal(daily["spent_usd"])


@dataclass
class ChatResult:
    status: int
    headers: httpx.Headers
    usage: dict[str, Any] | None
    text: str

    @property
    def request_id(self) -> str:
        return self.headers["x-request-id"]


def _chat(caller: Caller, stream: bool, model: str = "fake-mini") -> ChatResult:
    with caller.bff.client(headers=caller.chat_headers()) as client:
        if not stream:
            answer = client.post(caller.chat_url(), json=chat_body(model))
            usage = answer.json().get("usage") if answer.status_code == 200 else None
            return ChatResult(answer.status_code, answer.headers, usage, answer.text)
        with client.stream("POST", caller.chat_url(), json=chat_body(model, stream=True)) as answer:
            lines = [line for line in answer.iter_lines() if line]
        assert lines and lines[-1] == "data: [DONE]", lines[-3:]
        usage = json.loads(lines[-2].removeprefix("data: ")).get("usage")  # the usage event, last before [DONE]
        return ChatResult(answer.status_code, answer.headers, usage, "\n".join(lines))


def _stored_request(caller: Caller, request_id: str) -> dict[str, Any]:
    """GET /gateway/api/usage/requests/{id} as the caller, until the span is stored."""
    deadline = time.monotonic() + STORE_PATIENCE_SECONDS
    with caller.bff.client(headers=caller.session_headers) as client:
        while True:
            answer = client.get(f"{caller.bff.public}/api/usage/requests/{request_id}")
            if answer.status_code == 200:
                stored: dict[str, Any] = answer.json()
                return stored
            assert answer.status_code == 404, answer.text
            if time.monotonic() > deadline:
                pytest.fail(f"request {request_id} not stored within {STORE_PATIENCE_SECONDS:.0f} s")
            time.sleep(0.2)


def _received_span(collector: CollectorStandIn, request_id: str) -> tuple[str, dict[str, str], Any]:
    found = collector.wait_for(
        lambda _, span: attributes(span).get("gateway.request_id") == request_id, timeout=STORE_PATIENCE_SECONDS
    )
    assert len(found) == 1, f"{len(found)} spans with gateway.request_id {request_id} reached the collector"
    service, span = found[0]
    return service, attributes(span), span


def _fresh_user(openwebui_state: FakeOpenWebUIState) -> str:
    """A user of its own: over OTLP a finished cost counts until the collector stores its row, which
    the collector stand-in never does, so one user's spend across tests would depend on their order."""
    user_id = f"compose-{uuid.uuid4().hex[:10]}"
    openwebui_state.add_user(user_id, "user")
    return user_id


CALLERS = ["kong", "openwebui"]
STREAMS = [pytest.param(False, id="json"), pytest.param(True, id="stream")]


# --- the environment ------------------------------------------------------------------


def test_the_bff_runs_with_composes_environment(own_store: ComposeBff, otlp: ComposeBff, collector: CollectorStandIn) -> None:
    env = otlp.environment
    assert env["PUBLIC_PATH_PREFIX"] == PREFIX and env["ROLE_SOURCE"] == "api"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == collector.url
    assert env["OTEL_COLLECTOR_HEALTH_URL"] == collector.health_url + "/"
    assert env["BFF_SERVICE_KEYS"].split(",")[0] == SERVICE_KEY
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in own_store.environment
    assert env["REDIS_URL"] == own_store.environment["REDIS_URL"] and urlsplit(env["REDIS_URL"]).path == "/0"  # one Redis, compose's db
    for bff, exporting_over_otlp in ((own_store, False), (otlp, True)):
        ready = httpx.get(f"{bff.public}/health/ready", timeout=10).json()
        assert ready["status"] == "ready", ready
        assert ready["dependencies"]["otel_collector"]["status"] == "ok"  # the health URL compose gives reaches it
        assert ready["dependencies"]["open_webui_api"]["status"] == "ok"  # ROLE_SOURCE=api: the Open-WebUI stand-in
        assert ready["dependencies"]["redis"]["status"] == "ok"  # REDIS_URL: compose's redis service, here redis-server
        assert (ready["spans"] is None) is exporting_over_otlp  # no ClickHouse exporter when spans go over OTLP
        docs = httpx.get(f"{bff.public}/openapi.json", timeout=10)
        assert docs.json()["servers"] == [{"url": PREFIX}]


def test_a_compose_variable_pointing_at_an_unmapped_service_fails_loudly(tmp_path: Path, compose_hosts: dict[str, str]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose["services"]["bff"]["environment"]["SEARCH_URL"] = "http://searxng:8080/search"
    changed = tmp_path / "docker-compose.yml"
    changed.write_text(yaml.safe_dump(compose))
    overrides = {"CLICKHOUSE_URL": "chdb:///nowhere"}
    with pytest.raises(ComposeShapeError, match="'searxng:8080'"):
        service_environment("bff", COMPOSE_VARIABLES, compose_hosts, overrides, path=changed)
    with pytest.raises(ComposeShapeError, match="clickhouse:8123"):  # no ClickHouse server here: it must be replaced
        bff_environment(COMPOSE_VARIABLES, compose_hosts)
    with pytest.raises(ComposeShapeError, match="WEBUI_SECRET_KEY"):  # compose's :? refusal holds here too
        bff_environment({k: v for k, v in COMPOSE_VARIABLES.items() if k != "WEBUI_SECRET_KEY"}, compose_hosts, overrides)
    with pytest.raises(ComposeShapeError, match="no bff variable points at"):
        bff_environment(COMPOSE_VARIABLES, {**compose_hosts, "searxng:8080": "127.0.0.1:1"}, overrides)


# --- the BFF writes to the store itself -------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("kind", CALLERS)
def test_own_store_a_chat_behind_the_prefix_is_stored_and_charged(
    own_store: ComposeBff, collector: CollectorStandIn, kind: str, stream: bool
) -> None:
    caller = Caller(kind, "user-1", own_store)
    spent_before = caller.spent_today()
    kong_ids = len(own_store.kong.generated_request_ids)
    chat = _chat(caller, stream)
    assert chat.status == 200, chat.text
    assert chat.usage is not None and (chat.usage["prompt_tokens"], chat.usage["completion_tokens"]) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    if kind == "kong":  # the BFF adopted the id Kong's correlation-id plugin gave the request
        assert own_store.kong.generated_request_ids[kong_ids:] == [chat.request_id]

    stored = _stored_request(caller, chat.request_id)
    row = stored["request"]
    assert row["user_id"] == "user-1" and row["role"] == "user"
    assert row["requested_model"] == "fake-mini" and row["model"] == "fake-mini"
    assert (row["input_tokens"], row["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert row["cost_usd"] > 0 and row["cost_usd"] == pytest.approx(float(FAKE_MINI_COST), rel=1e-9)
    assert row["outcome"] == "completed" and row["status"] == 200 and row["cost_estimated"] is False
    assert row["stream"] is stream
    assert row["route"] == CHAT_ROUTE  # the route template: no /gateway, whoever called
    assert row["session_id"] == ("chat-user-1" if kind == "openwebui" else "")
    assert any(span["service_name"] == "llm-bff" for span in stored["spans"])
    # Charged exactly once: the finished cost, then the stored one, never both or neither.
    charged = caller.spent_today() - spent_before
    assert float(charged) == pytest.approx(row["cost_usd"], rel=1e-12)
    if not stream:
        assert charged == Decimal(chat.headers["x-litellm-response-cost"])  # exactly LiteLLM's figure
    received = [attributes(span).get("gateway.request_id") for _, span in collector.spans()]
    assert chat.request_id not in received, "without OTEL_EXPORTER_OTLP_ENDPOINT no span goes to the collector"


def test_own_store_budget_headers_go_down_after_each_chat(own_store: ComposeBff) -> None:
    caller = Caller("kong", "user-1", own_store)
    remaining = []
    for stream in (False, True, False):
        chat = _chat(caller, stream)
        assert chat.status == 200, chat.text
        remaining.append(Decimal(chat.headers["x-budget-remaining-usd"]))  # before this chat's cost
    with own_store.client(headers=caller.session_headers) as client:
        remaining.append(Decimal(client.get(f"{own_store.public}/v1/models").headers["x-budget-remaining-usd"]))
    charges = [before - after for before, after in zip(remaining, remaining[1:], strict=False)]
    assert charges == [pytest.approx(FAKE_MINI_COST, rel=Decimal("1e-9"))] * 3, charges


def test_own_store_a_refused_chat_is_recorded(own_store: ComposeBff) -> None:
    caller = Caller("kong", "user-1", own_store)
    spent_before = caller.spent_today()
    refused = _chat(caller, stream=False, model="fake-premium")
    assert refused.status == 403, refused.text
    row = _stored_request(caller, refused.request_id)["request"]
    assert row["user_id"] == "user-1" and row["requested_model"] == "fake-premium"
    assert row["status"] == 403 and row["outcome"] == "refused" and row["error_type"] == json.loads(refused.text)["error"]["code"]
    assert row["route"] == CHAT_ROUTE and row["cost_usd"] == 0
    assert caller.spent_today() == spent_before


def test_own_store_streams_are_relayed_as_they_arrive_through_the_prefix(own_store: ComposeBff, provider_state: FakeProviderState) -> None:
    caller = Caller("kong", "user-1", own_store)
    received = 0
    with caller.bff.client(headers=caller.chat_headers()) as client:
        with client.stream("POST", caller.chat_url(), json=chat_body("fake-lockstep-stream", stream=True)) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if '"content": "part' in line or '"content":"part' in line:
                    received += 1
                    if received < SLOW_STREAM_CHUNKS:
                        provider_state.release_next_chunk()  # the next piece leaves the provider only now
    assert received == SLOW_STREAM_CHUNKS
    record = [stream for stream in provider_state.streams if stream.model == "fake-lockstep-stream"][-1]
    assert record.finished and record.waited_out == 0


# --- spans over OTLP to the collector ---------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("kind", CALLERS)
def test_otlp_a_chat_span_reaches_the_collector_and_the_budget_counts_it(
    otlp: ComposeBff, collector: CollectorStandIn, openwebui_state: FakeOpenWebUIState, kind: str, stream: bool
) -> None:
    caller = Caller(kind, _fresh_user(openwebui_state), otlp)
    assert caller.spent_today() == 0
    chat = _chat(caller, stream)
    assert chat.status == 200, chat.text
    assert chat.usage is not None and (chat.usage["prompt_tokens"], chat.usage["completion_tokens"]) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )

    service, span_attributes, span = _received_span(collector, chat.request_id)
    assert service == "llm-bff" and span.name == "gateway chat"
    expected = {
        "enduser.id": caller.user_id,
        "gen_ai.request.model": "fake-mini",
        "gen_ai.response.model": "fake-mini",
        "gen_ai.usage.input_tokens": str(PROMPT_TOKENS),
        "gen_ai.usage.output_tokens": str(COMPLETION_TOKENS),
        "gateway.outcome": "completed",
        "gateway.route": CHAT_ROUTE,  # no prefix
        "gateway.request_id": chat.request_id,
        "gateway.stream": str(stream).lower(),
        "http.response.status_code": "200",
        "gateway.auth.method": "forwarded_jwt" if kind == "openwebui" else "session_token",
    }
    assert {key: span_attributes.get(key) for key in expected} == expected
    cost = Decimal(span_attributes["gateway.cost.usd"])
    assert cost == pytest.approx(FAKE_MINI_COST, rel=Decimal("1e-9"))
    if not stream:
        assert cost == Decimal(chat.headers["x-litellm-response-cost"])
    if kind == "openwebui":
        assert span_attributes["session.id"] == f"chat-{caller.user_id}"

    # The collector writes it to ClickHouse later; until then the BFF itself counts it.
    assert caller.spent_today() == cost
    with otlp.client(headers=caller.session_headers) as client:
        models = client.get(f"{otlp.public}/v1/models")
    assert Decimal(models.headers["x-budget-limit-usd"]) - Decimal(models.headers["x-budget-remaining-usd"]) == cost


def test_otlp_a_refused_chat_reaches_the_collector(
    otlp: ComposeBff, collector: CollectorStandIn, openwebui_state: FakeOpenWebUIState
) -> None:
    caller = Caller("kong", _fresh_user(openwebui_state), otlp)
    refused = _chat(caller, stream=False, model="fake-premium")
    assert refused.status == 403, refused.text
    _, span_attributes, _ = _received_span(collector, refused.request_id)
    assert span_attributes["enduser.id"] == caller.user_id
    assert span_attributes["gen_ai.request.model"] == "fake-premium"
    assert span_attributes["http.response.status_code"] == "403" and span_attributes["gateway.outcome"] == "refused"
    assert span_attributes["gateway.route"] == CHAT_ROUTE
    assert "gateway.cost.usd" not in span_attributes
    assert caller.spent_today() == 0
