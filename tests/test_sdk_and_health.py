"""The official openai SDK against the BFF; health, readiness and CORS."""

import openai
import pytest

from conftest import Bff, BffFactory
from support.fake_openai import REPLY
from support.servers import free_port


def _sdk(bff: Bff, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{bff.url}/v1", api_key=token, max_retries=0)


def test_openai_sdk_non_streaming(bff: Bff, user_token: str) -> None:
    completion = _sdk(bff, user_token).chat.completions.create(
        model="fake-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == REPLY
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_openai_sdk_streaming(bff: Bff, user_token: str) -> None:
    stream = _sdk(bff, user_token).chat.completions.create(
        model="fake-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake provider."
    assert chunks[-1].usage is not None


def test_openai_sdk_models_and_errors(bff: Bff, user_token: str) -> None:
    client = _sdk(bff, user_token)
    assert "fake-mini" in {model.id for model in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="fake-premium", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        _sdk(bff, "bad-token").models.list()


def test_health_and_readiness(bff: Bff, bff_factory: BffFactory) -> None:
    with bff.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["dependencies"] == {
        "litellm": {"status": "ok", "detail": None},
        "open_webui_api": {"status": "ok", "detail": None},
        "clickhouse": {"status": "ok", "detail": None},
    }
    assert ready.json()["spans"]["dropped"] == 0
    broken = bff_factory(litellm_url=f"http://127.0.0.1:{free_port()}", open_webui_url=f"http://127.0.0.1:{free_port()}")
    with broken.client() as client:
        not_ready = client.get("/health/ready")
    assert not_ready.status_code == 503
    dependencies = not_ready.json()["dependencies"]
    assert dependencies["litellm"]["status"] == "down" and dependencies["open_webui_api"]["status"] == "down"


def test_readiness_reports_the_otel_collector(bff_factory: BffFactory) -> None:
    """Compose cannot probe the collector's distroless image; the BFF reports its health_check extension."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from support.servers import ThreadServer

    async def healthy(_: object) -> JSONResponse:
        return JSONResponse({"status": "Server available"})

    extension = ThreadServer(Starlette(routes=[Route("/", healthy)])).start()
    try:
        with bff_factory(otel_collector_health_url=extension.url + "/").client() as client:
            up = client.get("/health/ready").json()
    finally:
        extension.stop()
    with bff_factory(otel_collector_health_url=f"http://127.0.0.1:{free_port()}/").client() as client:
        down = client.get("/health/ready")
    assert up["status"] == "ready" and up["dependencies"]["otel_collector"] == {"status": "ok", "detail": None}
    assert down.status_code == 200 and down.json()["status"] == "degraded"  # chat still works
    assert down.json()["dependencies"]["otel_collector"] == {"status": "down", "detail": "unreachable (ConnectError)"}


def test_cors_allowlist(bff_factory: BffFactory) -> None:
    bff = bff_factory(cors_allow_origins=["https://chat.example.test"])
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with bff.client() as client:
        allowed = client.options("/v1/chat/completions", headers={"Origin": "https://chat.example.test", **preflight})
        other = client.options("/v1/chat/completions", headers={"Origin": "https://evil.example.test", **preflight})
    assert allowed.headers.get("access-control-allow-origin") == "https://chat.example.test"
    assert "access-control-allow-origin" not in other.headers


def test_unknown_route_uses_the_error_shape(bff: Bff) -> None:
    with bff.client() as client:
        answer = client.get("/no/such/route")
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "not_found_error"
