"""Behind Kong the BFF is published at /gateway with the prefix stripped: the URLs it hands
out (OpenAPI docs, image URLs) must carry the prefix, and direct calls keep working."""

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from conftest import Bff, BffFactory
from support.servers import ThreadServer, strip_prefix


@pytest.fixture(scope="module")
def behind_kong(bff_factory: BffFactory) -> Iterator[tuple[Bff, str]]:
    """The same BFF reached directly and through a proxy that strips /gateway."""
    direct = bff_factory(public_path_prefix="/gateway", generator_mode="mock")
    proxy = ThreadServer(strip_prefix("/gateway", _forward_to(direct.url))).start()
    yield direct, proxy.url + "/gateway"
    proxy.stop()


def _forward_to(upstream: str) -> ASGIApp:
    """A minimal reverse proxy keeping the Host header, as Kong does with preserve_host."""
    client = httpx.AsyncClient(base_url=upstream, timeout=30)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        upstream_answer = await client.request(
            request.method,
            scope["path"],
            params=request.query_params,
            headers=[(k, v) for k, v in request.headers.items() if k != "content-length"],
            content=await request.body(),
        )
        headers = {k: v for k, v in upstream_answer.headers.items() if k not in ("content-length", "content-encoding")}
        await Response(upstream_answer.content, upstream_answer.status_code, headers)(scope, receive, send)

    return app


def test_openapi_docs_load_under_the_prefix(behind_kong: tuple[Bff, str]) -> None:
    _, public = behind_kong
    with httpx.Client() as browser:
        docs = browser.get(f"{public}/docs")
        assert docs.status_code == 200 and "'/gateway/openapi.json'" in docs.text
        schema = browser.get(f"{public}/openapi.json")
    assert schema.status_code == 200
    assert schema.json()["servers"] == [{"url": "/gateway"}]  # "Try it out" calls go through Kong too
    assert "/v1/chat/completions" in schema.json()["paths"]


def test_image_urls_point_through_the_prefix(behind_kong: tuple[Bff, str], user_token: str) -> None:
    direct, public = behind_kong
    headers = {"Authorization": f"Bearer {user_token}"}
    with httpx.Client(headers=headers, timeout=30) as client:
        answer = client.post(
            f"{public}/v1/images/generations", json={"model": "mock-image", "prompt": "a lighthouse", "response_format": "url"}
        )
        assert answer.status_code == 200, answer.text
        url = answer.json()["data"][0]["url"]
        assert url.startswith(f"{public}/api/media/images/")
        image = client.get(url)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        # Open-WebUI's backend reaches the BFF directly, on the same paths without the prefix
        assert client.get(f"{direct.url}{urlsplit(url).path.removeprefix('/gateway')}").status_code == 200
        assert client.get(f"{direct.url}/v1/models").status_code == 200


def test_a_bad_prefix_is_refused_at_start() -> None:
    from pydantic import ValidationError

    from bff.settings import Settings

    for bad in ("gateway", "/gateway/", "/a b"):
        with pytest.raises(ValidationError, match="public_path_prefix"):
            Settings(public_path_prefix=bad, litellm_master_key="k", webui_secret_key="s")  # type: ignore[call-arg]
