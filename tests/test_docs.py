"""/docs and /openapi.json: Swagger UI from the BFF's own pinned files (no CDN, so it works
air-gapped), a bearer scheme on every authenticating route, and the 400s the BFF really sends."""

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from bff import docs
from bff.monitoring.assets import Asset
from conftest import OUTPUT, WEBUI_SECRET, Bff, BffFactory
from support.browser import chromium
from support.fake_openai import REPLY
from support.servers import ThreadServer, strip_prefix
from support.tokens import session_token
from test_monitoring import _problems
from test_public_prefix import _forward_to

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
CHAT_BODY = {"model": "fake-mini", "messages": [{"role": "user", "content": "Hello"}]}
# Chromium reaches nothing but loopback: every name but 127.0.0.1 fails to resolve, and anything
# that would still go out is sent to a proxy that refuses connections (loopback bypasses it).
OFFLINE_FLAGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
]


@pytest.fixture(scope="module")
def behind_prefix(bff_factory: BffFactory) -> Iterator[str]:
    """A BFF published at /gateway through a proxy that strips the prefix, as Kong does."""
    direct = bff_factory(public_path_prefix="/gateway")
    proxy = ThreadServer(strip_prefix("/gateway", _forward_to(direct.url))).start()
    yield proxy.url + "/gateway"
    proxy.stop()


@pytest.fixture(scope="module")
def schema(bff: Bff) -> dict[str, Any]:
    with bff.client() as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return dict(answer.json())


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def _resolved(schema: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    reference = fragment.get("$ref", "")
    if not reference:
        return fragment
    assert reference.startswith("#/components/schemas/"), reference
    return _resolved(schema, schema["components"]["schemas"][reference.rsplit("/", 1)[1]])


# --- The page and its files -----------------------------------------------------------------


def _check_page(client: httpx.Client, page_url: str) -> str:
    """The docs page at page_url: only relative references, each of which loads."""
    page = client.get(page_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    references = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(references) == 3, references  # stylesheet, icon, script
    for reference in references:
        assert not reference.startswith("/") and ":" not in reference, reference
        asset = client.get(urljoin(page_url, reference))
        assert asset.status_code == 200, reference
        assert asset.headers["content-type"].startswith(CONTENT_TYPES[Path(reference).suffix]), reference
        assert asset.headers["x-content-type-options"] == "nosniff"
    bundle = client.get(urljoin(page_url, "docs/assets/swagger-ui-bundle.js"))
    assert "SwaggerUIBundle" in bundle.text[:2000] or "SwaggerUIBundle" in bundle.text
    return page.text


def _csp(headers: httpx.Headers) -> dict[str, list[str]]:
    directives = [part.split() for part in headers["content-security-policy"].split(";") if part.strip()]
    return {name: values for name, *values in directives}


def test_docs_page_loads_only_the_bffs_own_files(bff: Bff) -> None:
    with bff.client() as client:
        text = _check_page(client, f"{bff.url}/docs")
        headers = client.get("/docs").headers
        redoc = client.get("/redoc")
        unknown = client.get("/docs/assets/..%2F..%2Fsettings.py")
    assert "'/openapi.json'" in text
    assert '"validatorUrl": null' in text  # no badge fetched from validator.swagger.io
    csp = _csp(headers)
    assert csp["default-src"] == ["'none'"] and csp["connect-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    inline = re.findall(r"<script>(.*?)</script>", text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert csp["script-src"] == ["'self'", f"'sha256-{digest}'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert redoc.status_code == 404  # ReDoc would load from a CDN
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_docs_page_loads_behind_the_prefix(behind_prefix: str) -> None:
    with httpx.Client(timeout=30) as client:
        text = _check_page(client, f"{behind_prefix}/docs")
        assert "'/gateway/openapi.json'" in text
        assert client.get(f"{behind_prefix}/openapi.json").json()["servers"] == [{"url": "/gateway"}]


def test_missing_swagger_ui_files_are_reported(bff: Bff, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(docs.ASSETS, "swagger-ui-bundle.js", Asset(Path("/nonexistent/swagger-ui-bundle.js"), "text/javascript"))
    with bff.client() as client:
        page = client.get("/docs")
        asset = client.get("/docs/assets/swagger-ui-bundle.js")
        schema = client.get("/openapi.json")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "not installed" in page.text and "npm ci" in page.text and "swagger-ui-bundle.js" in page.text
    assert "<script" not in page.text and _csp(page.headers)["default-src"] == ["'none'"]
    assert asset.status_code == 503 and asset.json()["error"]["code"] == "docs_assets_missing"
    assert "npm ci" in asset.json()["error"]["message"]
    assert schema.status_code == 200  # the schema does not need the files


# --- The schema -----------------------------------------------------------------------------


def test_bearer_scheme_on_authenticating_routes_only(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "Open-WebUI" in scheme["description"] and "X-OpenWebUI-User-Jwt" in scheme["description"]
    paths = schema["paths"]
    assert paths["/v1/chat/completions"]["post"]["security"] == [{"bearer": []}]
    assert paths["/api/usage/summary"]["get"]["security"] == [{"bearer": []}]
    for public in ("/health", "/health/ready"):
        operation = paths[public]["get"]
        assert "security" not in operation and not {"401", "403"} & set(operation["responses"])
    assert "security" not in schema  # no global requirement: the health probes are open
    assert not {"/docs", "/openapi.json", "/redoc"} & set(paths) and not any(p.startswith("/docs/") for p in paths)
    assert not any(p.startswith("/monitoring/static") for p in paths)


def test_documented_security_matches_what_the_bff_does(bff: Bff, schema: dict[str, Any]) -> None:
    """Every operation that declares the scheme refuses a caller without credentials (401), every
    other one answers them."""
    with bff.client() as anonymous:
        for path, method, operation in _operations(schema):
            url = re.sub(r"\{[^}]+\}", "x1", path)
            answer = anonymous.request(method, url, json={} if method == "post" else None)
            if "security" in operation:
                assert answer.status_code == 401, (method, path, answer.text)
                assert answer.json()["error"]["type"] == "authentication_error"
                assert "401" in operation["responses"]
            else:
                assert answer.status_code in (200, 503), (method, path, answer.text)


def test_no_422_and_the_real_400(schema: dict[str, Any]) -> None:
    text = json.dumps(schema)
    assert '"422"' not in text and "HTTPValidationError" not in text and '"ValidationError"' not in text
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        if operation.get("parameters") or "requestBody" in operation:
            assert responses["400"]["content"]["application/json"]["schema"] == error, (method, path)
            assert responses["400"]["description"] != "Bad Request", (method, path)
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == error, (method, path, status)
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "403", "413", "429", "502", "503", "504"} <= set(chat)
    assert set(schema["components"]["schemas"]["ErrorResponse"]["properties"]) == {"error"}


def test_every_post_documents_its_body(bff: Bff, admin_token: str, schema: dict[str, Any]) -> None:
    posts = [(path, operation) for path, method, operation in _operations(schema) if method == "post"]
    assert len(posts) >= 6
    for path, operation in posts:
        body = operation.get("requestBody")
        if body is None:  # only a route that serves nothing (501 whatever the body) may take none
            with bff.client(admin_token) as admin:
                answer = admin.post(path, json=CHAT_BODY)
            assert answer.status_code == 501, (path, "documents no request body", answer.text)
            continue
        assert body["required"] is True and body["content"], path
        for media_type, content in body["content"].items():
            body_schema = _resolved(schema, content["schema"])
            assert body_schema.get("properties") and body_schema.get("type") == "object", (path, media_type)
    chat = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages"} <= set(chat["required"])


# --- In a browser with no network -----------------------------------------------------------


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[webdriver.Chrome]:
    with chromium(*OFFLINE_FLAGS, "--window-size=1360,3000") as driver:
        yield driver


def _assert_offline(driver: webdriver.Chrome, base: str) -> None:
    """The browser cannot fetch the CDN copy that FastAPI's default page would load."""
    driver.get(f"{base}/docs/assets/favicon.png")  # a page of the BFF without a CSP of its own
    outcome = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css', {mode: 'no-cors'})"
        ".then(() => done('reached'), (error) => done('failed: ' + error));"
    )
    assert outcome.startswith("failed"), outcome
    driver.get_log("browser")  # drop that failure's console line


def _wait_for(driver: webdriver.Chrome, css: str, scope: WebElement | None = None, seconds: float = 15) -> WebElement:
    root = scope or driver
    WebDriverWait(driver, seconds).until(
        lambda _: root.find_elements(By.CSS_SELECTOR, css) and root.find_element(By.CSS_SELECTOR, css).is_displayed()
    )
    return root.find_element(By.CSS_SELECTOR, css)


def _click(driver: webdriver.Chrome, element: WebElement) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    WebDriverWait(driver, 10).until(expected_conditions.element_to_be_clickable(element))
    element.click()


@pytest.mark.parametrize("published", ["direct", "behind_prefix"])
def test_docs_work_offline_and_try_it_out_sends_a_chat(
    offline_browser: webdriver.Chrome, bff: Bff, published: str, request: pytest.FixtureRequest
) -> None:
    driver = offline_browser
    base = bff.url if published == "direct" else str(request.getfixturevalue("behind_prefix"))
    origin = re.match(r"https?://[^/]+", base)
    assert origin is not None
    _assert_offline(driver, base)

    driver.get(f"{base}/docs")
    operations = WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
    assert len(operations) >= 20 and operations[0].is_displayed()
    chat = _wait_for(driver, "#operations-openai-compatible-chat_completions_v1_chat_completions_post")
    assert "/v1/chat/completions" in chat.text

    _click(driver, _wait_for(driver, ".scheme-container button.authorize"))
    dialog = _wait_for(driver, ".dialog-ux .modal-ux")
    assert "bearer" in dialog.text and "X-OpenWebUI-User-Jwt" in dialog.text
    dialog.find_element(By.ID, "auth-bearer-value").send_keys(session_token("user-1", WEBUI_SECRET))
    _click(driver, dialog.find_element(By.CSS_SELECTOR, "button.modal-btn.authorize"))
    _wait_for(driver, "code", dialog)  # the value, masked: authorized
    _click(driver, dialog.find_element(By.CSS_SELECTOR, "button.btn-done"))
    WebDriverWait(driver, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".dialog-ux .modal-ux"))

    _click(driver, chat.find_element(By.CSS_SELECTOR, ".opblock-summary-control"))
    _click(driver, _wait_for(driver, "button.try-out__btn", chat))
    editor = _wait_for(driver, "textarea.body-param__text", chat)
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    editor.send_keys(json.dumps(CHAT_BODY))
    _click(driver, _wait_for(driver, "button.execute", chat))

    status = _wait_for(driver, ".live-responses-table tr.response .response-col_status", chat, seconds=30)
    body = chat.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description pre").text
    assert status.text.strip() == "200", body
    answer = json.loads(body)
    assert answer["choices"][0]["message"]["content"] == REPLY and answer["model"]
    curl = chat.find_element(By.CSS_SELECTOR, ".curl-command").text
    assert "Authorization: Bearer ey" in curl and f"{base}/v1/chat/completions" in curl
    driver.execute_script("window.scrollTo(0, 0)")  # Authorize (now locked), the operations, the answer
    driver.save_screenshot(str(OUTPUT / ("docs.png" if published == "direct" else "docs-behind-prefix.png")))

    resources = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert resources and all(url.startswith(base + "/") for url in resources), resources
    assert _problems(driver) == []
