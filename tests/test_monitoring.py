"""The monitoring pages in a real browser (Debian's Chromium driven by Selenium) over real recorded traffic."""

import math
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from bff.app import create_app
from bff.clickhouse import ClickHouseStore
from bff.monitoring import assets
from conftest import FORWARD_SECRET, OUTPUT, ROOT, SERVICE_KEY, WEBUI_SECRET, Bff, BffFactory, chat_body
from support.browser import chromium
from support.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS
from support.servers import ThreadServer, strip_prefix
from support.tokens import forwarded_user_jwt, session_token
from test_usage import _as_user, _wait_for

SIGN_IN = "Sign in to Open-WebUI first, then reload"
# Everything the page shows, as the browser sees it: Chart.js's own chart objects, the
# numbers in the cards (text and raw value) and the table cells.
SNAPSHOT_JS = """
const charts = {};
for (const canvas of document.querySelectorAll('canvas')) {
  const chart = window.Chart ? window.Chart.getChart(canvas) : undefined;
  charts[canvas.id] = chart ? {
    type: chart.config.type,
    labels: chart.data.labels,
    datasets: chart.data.datasets.map((d) => ({label: d.label, data: d.data})),
    width: canvas.width,
  } : null;
}
const kpis = {};
for (const el of document.querySelectorAll('[data-kpi]')) {
  kpis[el.dataset.kpi] = {text: el.textContent, value: el.dataset.value};
}
const rows = (id) => document.getElementById(id)
  ? Array.from(document.querySelectorAll('#' + id + ' tbody tr')).map((tr) => Array.from(tr.cells).map((td) => td.textContent))
  : null;
const dashboard = document.getElementById('dashboard');
return {
  query: dashboard.dataset.query,
  bucket: dashboard.dataset.bucket,
  charts: charts,
  kpis: kpis,
  models: rows('model-table'),
  users: rows('user-table'),
  operations: rows('operation-table'),
  operation_options: Array.from(document.querySelectorAll('#operation-options option')).map((o) => o.value),
  operation_filter: document.querySelector('input[name="operation"]').value,
  top_users: document.getElementById('top-users') !== null && !document.getElementById('top-users').hidden,
  user_filter: document.querySelector('input[name="user"]') !== null,
  viewer: document.getElementById('viewer').textContent,
  charts_missing: !document.getElementById('charts-missing').hidden,
  url: location.href,
  token_in_storage: sessionStorage.getItem('bff-monitoring-token') !== null,
  resources: performance.getEntriesByType('resource').map((e) => e.name),
};
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


def _count(client: httpx.Client, user: str) -> int:
    return int(client.get("/api/usage/summary", params={"user": user}).json()["totals"]["requests"])


@pytest.fixture(scope="module")
def traffic(bff: Bff, admin_token: str, user_token: str) -> dict[str, Any]:
    """Real requests by a fresh user (service key + forwarded JWT), by admin-1 and by user-1."""
    fresh = f"monitor-{uuid.uuid4().hex[:8]}"
    with bff.client(admin_token) as admin:
        before = {user: _count(admin, user) for user in ("admin-1", "user-1")}
        with _as_user(bff, fresh) as client:
            for _ in range(3):
                assert client.post("/v1/chat/completions", json=chat_body(), headers={"X-LLM-Context": "monitoring"}).status_code == 200
            assert client.post("/v1/chat/completions", json=chat_body("fake-flaky")).status_code == 200
            assert client.post("/v1/chat/completions", json=chat_body(stream=True)).status_code == 200
            assert client.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 403
        assert admin.post("/v1/chat/completions", json=chat_body()).status_code == 200
        assert admin.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 200
        with bff.client(user_token) as user:
            for _ in range(2):
                assert user.post("/v1/chat/completions", json=chat_body()).status_code == 200
            assert user.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 403
        _wait_for(admin, {"user": fresh}, 6)
        _wait_for(admin, {"user": "admin-1"}, before["admin-1"] + 2)
        _wait_for(admin, {"user": "user-1"}, before["user-1"] + 3)
        _settle(admin)
    return {"fresh": fresh, "requests": 6, "errors": 1, "fallbacks": 1, "ok": 5}


@pytest.fixture(scope="module")
def operation_traffic(bff: Bff, admin_token: str) -> dict[str, Any]:
    """Three gateway operations by one fresh user: chat, embeddings (one of them failing) and an image."""
    user = f"ops-{uuid.uuid4().hex[:8]}"
    with _as_user(bff, user) as client:
        for body in (chat_body(), chat_body(stream=True)):
            assert client.post("/v1/chat/completions", json=body).status_code == 200
        for inputs in ("hello", ["one", "two"]):
            answer = client.post("/v1/embeddings", json={"model": "fake-embed", "input": inputs})
            assert answer.status_code == 200, answer.text
        assert client.post("/v1/embeddings", json={"model": "fake-embed-broken", "input": "x"}).status_code >= 500
        image = client.post("/v1/images/generations", json={"model": "mock-image", "prompt": "monitoring", "size": "256x256"})
        assert image.status_code == 200, image.text
    requests = {"chat": 2, "embeddings": 3, "images": 1}
    with bff.client(admin_token) as admin:
        _wait_for(admin, {"user": user}, sum(requests.values()))
        _settle(admin)
    return {"user": user, "requests": requests, "errors": {"chat": 0, "embeddings": 1, "images": 0}}


def _settle(client: httpx.Client) -> None:
    """Waits until no span from earlier tests is still on its way to the store."""
    last = None
    for _ in range(50):
        totals = client.get("/api/usage/summary").json()["totals"]["requests"]
        if totals == last:
            return
        last = totals
        time.sleep(0.3)


def _open(driver: webdriver.Chrome, base: str, path: str, token: str | None = None) -> None:
    driver.get(f"{base}/monitoring/static/monitoring.css")
    driver.delete_all_cookies()
    driver.execute_script("sessionStorage.clear()")
    if token:
        driver.add_cookie({"name": "token", "value": token, "path": "/"})
    driver.get(base + path)


def _ready(driver: webdriver.Chrome, query_contains: str = "") -> dict[str, Any]:
    def loaded(d: webdriver.Chrome) -> bool:
        return bool(
            d.execute_script(
                "const m = document.getElementById('dashboard');"
                "return !m.hidden && m.dataset.status !== 'loading' && m.dataset.status !== 'idle'"
                " && (m.dataset.query || '').includes(arguments[0]);",
                query_contains,
            )
        )

    WebDriverWait(driver, 15).until(loaded)
    status = driver.find_element(By.ID, "dashboard").get_attribute("data-status")
    error = driver.find_element(By.ID, "error-line").text
    assert status == "ready", error
    return driver.execute_script(SNAPSHOT_JS)


def _full_page_screenshot(driver: webdriver.Chrome, name: str) -> None:
    size = driver.get_window_size()
    page, chrome = driver.execute_script("return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(size["width"], max(size["height"], page + chrome))
    try:
        driver.save_screenshot(str(OUTPUT / name))
    finally:
        driver.set_window_size(size["width"], size["height"])


def _problems(driver: webdriver.Chrome) -> list[str]:
    """Script errors and Content-Security-Policy violations the browser reported."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry.get("source") in ("security", "javascript") or "Content Security Policy" in entry["message"]
    ]


def _usage(client: httpx.Client, path: str, query: str, **extra: str) -> dict[str, Any]:
    answer = client.get(f"/api/usage/{path}", params={**dict(parse_qsl(query)), **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _label(key: str) -> str:
    return key or "(none)"


def _assert_kpis(kpis: dict[str, dict[str, str]], totals: dict[str, Any]) -> None:
    for name in ("requests", "errors", "fallbacks", "input_tokens", "output_tokens", "total_tokens"):
        assert kpis[name]["value"] == str(totals[name]), name
        assert kpis[name]["text"] == f"{totals[name]:,}", name
    assert float(kpis["cost_usd"]["value"]) == totals["cost_usd"]
    assert kpis["cost_usd"]["text"] == f"${totals['cost_usd']:.6f}"
    for name, field in (("latency", "latency_ms"), ("ttft", "ttft_ms")):
        for p in ("p50", "p95"):
            value, shown = totals[field][p], kpis[f"{name}_{p}"]
            if value is None:
                assert shown == {"value": "", "text": "–"}, name
            else:
                # the page rounds as JavaScript's Math.round does (halves up), not as Python's round
                assert float(shown["value"]) == value and shown["text"] == f"{math.floor(value + 0.5):,} ms", name
    assert float(kpis["error_rate"]["value"]) == pytest.approx(100 * totals["errors"] / totals["requests"])
    assert kpis["error_rate"]["text"] == f"{100 * totals['errors'] / totals['requests']:.1f}%"


def _usd(value: float) -> str:
    return f"${value:.6f}" if value != 0 and abs(value) < 1 else f"${value:.2f}"


def _assert_operation_table(page: dict[str, Any], client: httpx.Client) -> list[dict[str, Any]]:
    """The operation table is the usage API's breakdown by operation, cell by cell."""
    rows = _usage(client, "breakdown", page["query"], by="operation", limit="50")["rows"]
    expected = [
        [_label(r["key"]), f"{r['requests']:,}", f"{r['errors']:,}", f"{r['input_tokens']:,}", f"{r['output_tokens']:,}", _usd(r["cost_usd"])]
        for r in rows
    ]
    assert page["operations"] == (expected or [["No requests in this range."]])
    assert {r["key"] for r in rows if r["key"]} <= set(page["operation_options"])
    return rows


def _assert_charts(page: dict[str, Any], client: httpx.Client) -> dict[str, Any]:
    """Every chart's data equals what the usage API answers for the same range and filters."""
    query, charts = page["query"], page["charts"]
    summary = _usage(client, "summary", query)
    series = _usage(client, "timeseries", query, bucket=page["bucket"])
    models = _usage(client, "breakdown", query, by="model", limit="20")["rows"]
    statuses = _usage(client, "breakdown", query, by="status", limit="20")["rows"]
    _assert_kpis(page["kpis"], summary["totals"])

    points = series["points"]
    assert charts["chart-requests-time"]["datasets"][0]["data"] == [p["requests"] for p in points]
    assert charts["chart-requests-time"]["datasets"][1]["data"] == [p["errors"] for p in points]
    assert charts["chart-cost-time"]["datasets"][0]["data"] == [p["cost_usd"] for p in points]
    assert charts["chart-tokens-time"]["datasets"][0]["data"] == [p["input_tokens"] for p in points]
    assert charts["chart-fallbacks-time"]["datasets"][0]["data"] == [p["fallbacks"] for p in points]
    assert sum(charts["chart-requests-time"]["datasets"][0]["data"]) == summary["totals"]["requests"]

    assert charts["chart-cost-model"]["labels"] == [_label(r["key"]) for r in models]
    assert charts["chart-cost-model"]["datasets"][0]["data"] == [r["cost_usd"] for r in models]
    assert charts["chart-tokens-model"]["datasets"][0]["data"] == [r["input_tokens"] for r in models]
    assert charts["chart-tokens-model"]["datasets"][1]["data"] == [r["output_tokens"] for r in models]
    assert charts["chart-latency-model"]["datasets"][0]["data"] == [r["latency_ms"]["p50"] for r in models]
    assert charts["chart-latency-model"]["datasets"][2]["data"] == [r["ttft_ms"]["p50"] for r in models]
    assert [(row[0], row[1]) for row in page["models"]] == [(_label(r["key"]), f"{r['requests']:,}") for r in models]

    assert charts["chart-status"]["labels"] == [r["key"] for r in statuses]
    assert charts["chart-status"]["datasets"][0]["data"] == [r["requests"] for r in statuses]

    operations = _assert_operation_table(page, client)
    by_operation = charts["chart-operations"]
    assert by_operation["labels"] == [_label(r["key"]) for r in operations]
    assert [d["label"] for d in by_operation["datasets"]] == ["Requests", "Errors", "Cost (USD)"]
    assert by_operation["datasets"][0]["data"] == [r["requests"] for r in operations]
    assert by_operation["datasets"][1]["data"] == [r["errors"] for r in operations]
    assert by_operation["datasets"][2]["data"] == [r["cost_usd"] for r in operations]
    assert sum(r["requests"] for r in operations) == summary["totals"]["requests"]
    outcomes = _usage(client, "breakdown", query, by="outcome", limit="20")["rows"]
    assert charts["chart-outcomes"]["labels"] == [_label(r["key"]) for r in outcomes]
    assert charts["chart-outcomes"]["datasets"][0]["data"] == [r["requests"] for r in outcomes]
    assert sum(r["requests"] for r in outcomes) == summary["totals"]["requests"]
    assert all(chart is not None and chart["width"] > 0 for chart in charts.values() if chart is not None)
    return summary


def test_page_without_credentials_is_a_sign_in_page(bff: Bff) -> None:
    with bff.client(cookies={"token": "not-a-token"}) as bad:
        bad_cookie = bad.get("/monitoring/")
    with bff.client() as anonymous:
        page = anonymous.get("/monitoring/")
        redirect = anonymous.get("/monitoring", params={"range": "24h"})
        viewer = anonymous.get("/monitoring/viewer")
        chart = anonymous.get("/monitoring/static/chart.umd.min.js")
        unknown = anonymous.get("/monitoring/static/..%2F..%2Fsettings.py")
    for answer in (page, bad_cookie):
        assert answer.status_code == 401
        assert answer.headers["content-type"].startswith("text/html")
        assert SIGN_IN in answer.text and "Traceback" not in answer.text
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "<script>" not in answer.text and " on" + "click=" not in answer.text
    assert redirect.status_code == 307 and redirect.headers["location"] == "monitoring/?range=24h"
    assert viewer.status_code == 401 and viewer.json()["error"]["code"] == "missing_credentials"
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("text/javascript")
    assert "Chart.js v4.6.1" in chart.text[:200]
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_pending_user_gets_403_html(bff: Bff) -> None:
    with bff.client(cookies={"token": session_token("pending-1", WEBUI_SECRET)}) as pending:
        answer = pending.get("/monitoring/")
    assert answer.status_code == 403 and answer.headers["content-type"].startswith("text/html")
    assert "pending approval" in answer.text


def test_no_absolute_urls_in_html_and_js(bff: Bff, admin_token: str) -> None:
    with bff.client(cookies={"token": admin_token}) as admin:
        html = admin.get("/monitoring/")
        script = admin.get("/monitoring/static/monitoring.js").text
    assert html.status_code == 200
    for text in (html.text, script):
        assert not re.search(r"""["'`(]\s*/(api|monitoring|static|v1)\b""", text)
        assert "http://" not in text and "https://" not in text


def test_admin_sees_everything(browser: webdriver.Chrome, bff: Bff, admin_token: str, traffic: dict[str, Any]) -> None:
    _open(browser, bff.url, "/monitoring/", admin_token)
    page = _ready(browser)
    browser.save_screenshot(str(OUTPUT / "monitoring-admin.png"))
    assert "(admin)" in page["viewer"] and "all users" in page["viewer"]
    assert page["top_users"] and page["user_filter"] and not page["charts_missing"]
    with bff.client(admin_token) as admin:
        summary = _assert_charts(page, admin)
        users = _usage(admin, "breakdown", page["query"], by="user", limit="10")["rows"]
    assert summary["filters"]["user"] is None and summary["totals"]["requests"] >= traffic["requests"] + 5
    assert page["charts"]["chart-users"]["labels"] == [r["key"] or "(no user)" for r in users]
    assert page["charts"]["chart-users"]["datasets"][0]["data"] == [r["cost_usd"] for r in users]
    assert [row[0] for row in page["users"]] == [r["key"] or "(no user)" for r in users]
    assert {"admin-1", "user-1"} <= {r["key"] for r in users} or len(users) == 10
    assert _problems(browser) == []


def test_admin_filters_one_user(browser: webdriver.Chrome, bff: Bff, admin_token: str, traffic: dict[str, Any]) -> None:
    _open(browser, bff.url, "/monitoring/?range=24h", admin_token)
    _ready(browser)
    user_input = browser.find_element(By.CSS_SELECTOR, 'input[name="user"]')
    user_input.clear()
    user_input.send_keys(traffic["fresh"])
    browser.find_element(By.CSS_SELECTOR, '#filters button[type="submit"]').click()
    page = _ready(browser, f"user={traffic['fresh']}")
    browser.save_screenshot(str(OUTPUT / "monitoring-admin-one-user-24h.png"))
    assert page["bucket"] == "hour" and len(page["charts"]["chart-requests-time"]["labels"]) in (24, 25)
    assert f"user={traffic['fresh']}" in page["url"] and "range=24h" in page["url"]
    kpis = page["kpis"]
    assert kpis["requests"]["value"] == str(traffic["requests"])
    assert kpis["errors"]["value"] == str(traffic["errors"])
    assert kpis["fallbacks"]["value"] == str(traffic["fallbacks"])
    assert kpis["input_tokens"]["value"] == str(PROMPT_TOKENS * traffic["ok"])
    assert kpis["output_tokens"]["value"] == str(COMPLETION_TOKENS * traffic["ok"])
    assert float(kpis["ttft_p50"]["value"]) > 0
    with bff.client(admin_token) as admin:
        _assert_charts(page, admin)
    assert dict(zip(page["charts"]["chart-status"]["labels"], page["charts"]["chart-status"]["datasets"][0]["data"], strict=True)) == {
        "200": 5,
        "403": 1,
    }
    assert [row[0] for row in page["users"]] == [traffic["fresh"]]
    assert [row[:3] for row in page["operations"]] == [["chat", str(traffic["requests"]), str(traffic["errors"])]]
    assert _problems(browser) == []


def test_operations_panel_and_filter(browser: webdriver.Chrome, bff: Bff, admin_token: str, operation_traffic: dict[str, Any]) -> None:
    user, requests = operation_traffic["user"], operation_traffic["requests"]
    _open(browser, bff.url, f"/monitoring/?range=24h&user={user}", admin_token)
    page = _ready(browser, f"user={user}")
    with bff.client(admin_token) as admin:
        everything = _assert_charts(page, admin)
    assert {row[0]: row[1] for row in page["operations"]} == {name: str(count) for name, count in requests.items()}
    assert {row[0]: row[2] for row in page["operations"]} == {name: str(count) for name, count in operation_traffic["errors"].items()}
    assert set(requests) <= set(page["operation_options"]) and page["operation_filter"] == ""
    assert "completed" in page["charts"]["chart-outcomes"]["labels"] and len(page["charts"]["chart-outcomes"]["labels"]) >= 2
    _full_page_screenshot(browser, "monitoring-operations.png")

    # Choosing an operation narrows everything on the page to it, and the list still offers the others.
    operation_input = browser.find_element(By.CSS_SELECTOR, 'input[name="operation"]')
    operation_input.clear()
    operation_input.send_keys("embeddings")
    browser.find_element(By.CSS_SELECTOR, '#filters button[type="submit"]').click()
    page = _ready(browser, "operation=embeddings")
    assert "operation=embeddings" in page["url"] and f"user={user}" in page["url"]
    assert "operation = embeddings" in browser.find_element(By.ID, "status-line").text
    with bff.client(admin_token) as admin:
        narrowed = _assert_charts(page, admin)
        direct = _usage(admin, "summary", "", user=user, operation="embeddings")
    assert narrowed["filters"]["operation"] == "embeddings"
    assert narrowed["totals"]["requests"] == direct["totals"]["requests"] == requests["embeddings"]
    assert page["kpis"]["requests"]["value"] == str(requests["embeddings"]) and page["kpis"]["errors"]["value"] == "1"
    assert float(page["kpis"]["cost_usd"]["value"]) == direct["totals"]["cost_usd"]
    assert int(page["kpis"]["input_tokens"]["value"]) == direct["totals"]["input_tokens"] > 0
    assert everything["totals"]["requests"] > narrowed["totals"]["requests"]
    assert [row[0] for row in page["operations"]] == ["embeddings"]
    assert {row[0] for row in page["models"]} == {"fake-embed", "fake-embed-broken"}
    assert set(requests) <= set(page["operation_options"])

    # A bookmarked operation is restored into the filter.
    _open(browser, bff.url, f"/monitoring/?range=24h&user={user}&operation=images", admin_token)
    page = _ready(browser, "operation=images")
    assert page["operation_filter"] == "images"
    with bff.client(admin_token) as admin:
        images = _assert_charts(page, admin)
    assert images["totals"]["requests"] == requests["images"] and images["totals"]["cost_usd"] > 0
    assert [row[0] for row in page["operations"]] == ["images"] and [row[0] for row in page["models"]] == ["mock-image"]
    browser.find_element(By.ID, "reset").click()
    page = _ready(browser)
    assert page["operation_filter"] == "" and "operation=" not in page["url"]
    assert _problems(browser) == []


def test_user_sees_only_their_own_usage(
    browser: webdriver.Chrome, bff: Bff, admin_token: str, user_token: str, traffic: dict[str, Any]
) -> None:
    _open(browser, bff.url, "/monitoring/?user=admin-1", user_token)
    page = _ready(browser)
    browser.save_screenshot(str(OUTPUT / "monitoring-user.png"))
    assert "(user)" in page["viewer"] and "your own usage only" in page["viewer"]
    assert not page["top_users"] and not page["user_filter"] and page["users"] is None
    assert browser.find_elements(By.ID, "top-users") == []
    assert browser.find_elements(By.ID, "budget-alerts") == []  # alerts are for admins
    assert not any("/api/usage/alerts" in url for url in page["resources"])
    assert "user=" not in page["query"]
    with bff.client(user_token) as user:
        own = _assert_charts(page, user)
    with bff.client(admin_token) as admin:
        as_admin = _usage(admin, "summary", page["query"], user="user-1")
        everyone = _usage(admin, "summary", page["query"])
    assert own["filters"]["user"] == "user-1"
    assert own["totals"] == as_admin["totals"]
    assert everyone["totals"]["requests"] > own["totals"]["requests"] >= 3
    assert not any("user=" in url for url in page["resources"])
    assert _problems(browser) == []


def test_pasted_token_is_kept_in_the_tab_only(browser: webdriver.Chrome, bff: Bff, admin_token: str) -> None:
    _open(browser, bff.url, "/monitoring/")
    notice = browser.find_element(By.ID, "notice")
    assert notice.is_displayed() and SIGN_IN in notice.text
    browser.find_element(By.ID, "token-input").send_keys(admin_token)
    browser.find_element(By.CSS_SELECTOR, '#token-form button[type="submit"]').click()
    page = _ready(browser)
    assert page["token_in_storage"] and "pasted token" in page["viewer"] and page["top_users"]
    assert browser.get_cookies() == []
    assert all(admin_token not in url for url in [page["url"], *page["resources"]])
    browser.find_element(By.ID, "forget-token").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "notice").is_displayed())
    assert SIGN_IN in browser.find_element(By.ID, "notice").text
    assert browser.execute_script("return sessionStorage.getItem('bff-monitoring-token')") is None


def test_works_behind_a_path_prefix(browser: webdriver.Chrome, bff: Bff, admin_token: str, traffic: dict[str, Any]) -> None:
    server = ThreadServer(strip_prefix("/gateway", create_app(bff.settings))).start()
    try:
        _open(browser, server.url, "/gateway/monitoring", admin_token)
        page = _ready(browser)
        assert page["url"].startswith(f"{server.url}/gateway/monitoring/?range=")
        # the admins' Experiments section asks /api/experiments, relative too
        inside = (f"{server.url}/gateway/monitoring/", f"{server.url}/gateway/api/usage/", f"{server.url}/gateway/api/experiments")
        assert page["resources"] and all(url.startswith(inside) for url in page["resources"])
        with bff.client(admin_token) as admin:
            _assert_charts(page, admin)
        assert _problems(browser) == []
    finally:
        server.stop()


def test_missing_chart_library_is_reported(
    browser: webdriver.Chrome, bff: Bff, admin_token: str, traffic: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(assets.ASSETS, "chart.umd.min.js", assets.Asset(Path("/nonexistent/chart.umd.min.js"), "text/javascript"))
    with bff.client() as anonymous:
        answer = anonymous.get("/monitoring/static/chart.umd.min.js")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "monitoring_assets_missing"
    _open(browser, bff.url, "/monitoring/", admin_token)
    page = _ready(browser)
    assert page["charts_missing"] and browser.find_element(By.ID, "charts-missing").is_displayed()
    assert all(chart is None for chart in page["charts"].values())
    with bff.client(admin_token) as admin:
        _assert_kpis(page["kpis"], _usage(admin, "summary", page["query"])["totals"])
        _assert_operation_table(page, admin)



ALERT_ROWS_JS = """
return Array.from(document.querySelectorAll('#alert-table tbody tr')).map((tr) => ({
  user: tr.dataset.user || null, delivery: tr.dataset.delivery || null, cells: Array.from(tr.cells).map((td) => td.textContent),
}));
"""


def test_admin_sees_budget_alerts(browser: webdriver.Chrome, bff_factory: BffFactory, tmp_path: Path, admin_token: str) -> None:
    """A user past a threshold (no webhook set: recorded for the page) shows in the admins' alert table."""
    user_id = f"alerted-{uuid.uuid4().hex[:8]}"
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy.pop("limits", None)
    policy["budgets"]["alerts"] = [0.1, 0.95]
    policy["budgets"]["users"] = {user_id: {"daily_usd": "0.0002"}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    alerted = bff_factory(policy_file=path)
    with _as_user(alerted, user_id) as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200  # 12.5 %: passes 0.1
    with alerted.client(admin_token) as admin:
        deadline = time.monotonic() + 15
        while not (alerts := admin.get("/api/usage/alerts", params={"user": user_id}).json()["alerts"]):
            assert time.monotonic() < deadline, "the alert was not recorded"
            time.sleep(0.2)
    [alert] = alerts
    _open(browser, alerted.url, f"/monitoring/?user={user_id}", admin_token)
    _ready(browser, f"user={user_id}")
    _full_page_screenshot(browser, "monitoring-budget-alerts.png")
    rows = browser.execute_script(ALERT_ROWS_JS)
    assert browser.find_element(By.ID, "budget-alerts").is_displayed()
    assert rows == [
        {
            "user": user_id,
            "delivery": "no_webhook",
            "cells": [
                alert["created_at"][:16].replace("T", " "),
                f"{user_id}@example.test",
                "daily",
                "10%",
                f"${float(alert['spent_usd']):.6f}",
                "$0.000200",
                alert["resets_at"][:16].replace("T", " "),
                "no webhook",
            ],
        }
    ]
    assert float(alert["spent_usd"]) == pytest.approx(0.000025)
    assert _problems(browser) == []


def test_admin_sees_users_by_name(browser: webdriver.Chrome, bff: Bff, admin_token: str) -> None:
    """People by name: the top-users table and the user filter's suggestions name the user."""
    tag = uuid.uuid4().hex[:8]
    person = {"id": f"named-{tag}", "name": f"Katherine Johnson {tag}", "email": f"kj.{tag}@example.test", "role": "user"}
    jwt_header = {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(person, FORWARD_SECRET)}
    with bff.client(SERVICE_KEY, headers=jwt_header) as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    with bff.client(admin_token) as admin:
        _wait_for(admin, {"user": person["id"]}, 1)
        deadline = time.monotonic() + 15
        while admin.get("/api/usage/breakdown", params={"by": "user", "user": person["id"]}).json()["rows"][0]["name"] != person["name"]:
            assert time.monotonic() < deadline, "the name was not recorded"
            time.sleep(0.2)
    _open(browser, bff.url, f"/monitoring/?range=24h&user={person['id']}", admin_token)
    page = _ready(browser, f"user={person['id']}")
    browser.save_screenshot(str(OUTPUT / "monitoring-admin-people.png"))
    assert [row[:3] for row in page["users"]] == [[person["id"], f"{person['name']} <{person['email']}>", "1"]]
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('#user-options option')).map((o) => [o.value, o.label]);"
    )
    assert [person["id"], f"{person['name']} <{person['email']}>"] in labels
    assert _problems(browser) == []


# --- Experiments (admins) ---------------------------------------------------------------------

EXPERIMENT_PANELS_JS = """
const section = document.getElementById('experiments');
return section === null ? null : {
  status: section.dataset.status,
  shown: !section.hidden,
  none: !document.getElementById('experiments-none').hidden,
  panels: Array.from(section.querySelectorAll('#experiment-list .experiment')).map((panel) => ({
    name: panel.dataset.experiment,
    state: panel.querySelector('.experiment-state').textContent,
    meta: panel.querySelector('.experiment-meta').textContent,
    rows: Array.from(panel.querySelectorAll('tbody tr')).map((tr) => [tr.dataset.variant, Array.from(tr.cells).map((td) => td.textContent)]),
  })),
};
"""


def _share(value: float | None) -> str:
    """As the page shows a share: a percentage with at most one decimal (halves up)."""
    if value is None:
        return "–"
    tenths = math.floor(value * 1000 + 0.5) / 10
    return (f"{tenths:.1f}".removesuffix(".0")) + "%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{math.floor(value + 0.5):,} ms"


def _experiment_cells(variant: dict[str, Any], weight: int) -> list[str]:
    feedback = variant["feedback"]
    interval = feedback["up_share_95"]
    up_share = "–" if feedback["up_share"] is None else f"{_share(feedback['up_share'])} ({_share(interval['low'])}–{_share(interval['high'])})"
    return [
        variant["variant"] + (" (control)" if variant["control"] else ""),
        variant["model"],
        str(weight),
        f"{variant['users']:,}",
        f"{variant['requests']:,}",
        f"{variant['errors']:,}",
        _share(variant["error_rate"]),
        _usd(variant["cost_usd"]),
        "–" if variant["cost_per_request_usd"] is None else _usd(variant["cost_per_request_usd"]),
        _ms(variant["latency_ms"]["p50"]),
        _ms(variant["latency_ms"]["p95"]),
        _ms(variant["ttft_ms"]["p50"]),
        f"{feedback['up']:,}",
        f"{feedback['down']:,}",
        up_share,
    ]


def test_admin_sees_experiment_results(
    browser: webdriver.Chrome, bff_factory: BffFactory, tmp_path: Path, admin_token: str, user_token: str
) -> None:
    """The Experiments section: one table per configured experiment, each variant's figures as the API gives them."""
    tag = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    active = {
        "name": f"page-ab-{tag}",
        "description": "fake-mock against fake-mini for cheap",
        "target": {"model": "cheap"},
        "variants": [{"name": "control", "model": "fake-mini", "weight": 50}, {"name": "mock", "model": "fake-mock", "weight": 50}],
        "start": (now - timedelta(hours=1)).isoformat(),
        "end": (now + timedelta(days=7)).isoformat(),
    }
    later = {
        "name": f"page-later-{tag}",
        "target": {"context": f"later-{tag}"},
        "variants": [{"name": "control", "model": "fake-mini", "weight": 1}, {"name": "other", "model": "fake-mock", "weight": 3}],
        "start": (now + timedelta(days=10)).isoformat(),
        "end": (now + timedelta(days=20)).isoformat(),
    }
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump({"experiments": [active, later]}))
    served = bff_factory(experiments_file=path)
    sent: list[dict[str, str]] = []
    for number in range(8):
        user, chat, message = f"page-exp-{tag}-{number}", f"chat-{tag}-{number}", f"msg-{tag}-{number}"
        with _as_user(served, user, chat_id=chat) as client:
            answer = client.post(
                "/v1/chat/completions", json=chat_body("cheap", stream=number % 2 == 0), headers={"X-OpenWebUI-Message-Id": message}
            )
            assert answer.status_code == 200, answer.text
            answer.read()
        sent.append({"user": user, "chat": chat, "message": message, "variant": answer.headers["x-gateway-variant"]})
    # one thumbs-down, as the feedback sync stores an Open-WebUI rating
    rated = sent[0]
    moment = datetime.now(UTC).replace(tzinfo=None)
    values = {
        "FeedbackId": f"fb-page-{tag}", "UserId": rated["user"], "ChatId": rated["chat"], "MessageId": rated["message"],
        "ModelId": "cheap", "Rating": -1, "Reason": "", "Tags": [], "HasComment": False, "CreatedAt": moment,
        "UpdatedAt": moment, "Deleted": 0,
    }
    ClickHouseStore(served.settings.clickhouse_url, ROOT / "config" / "clickhouse").insert_columns(
        "otel.gateway_feedback", list(values), [[value] for value in values.values()]
    )
    with served.client(admin_token) as admin:
        deadline = time.monotonic() + 15
        while True:
            results = admin.get(f"/api/experiments/{active['name']}").json()
            if sum(v["requests"] for v in results["variants"]) >= 8:
                break
            assert time.monotonic() < deadline, "the experiment's requests were not recorded"
            time.sleep(0.2)
        upcoming = admin.get(f"/api/experiments/{later['name']}").json()
    _open(browser, served.url, "/monitoring/", admin_token)
    _ready(browser)
    WebDriverWait(browser, 15).until(lambda d: d.execute_script("return document.getElementById('experiments').dataset.status") != "loading")
    _full_page_screenshot(browser, "monitoring-experiments.png")
    section = browser.execute_script(EXPERIMENT_PANELS_JS)
    assert section["status"] == "ready" and section["shown"] and not section["none"]
    assert [panel["name"] for panel in section["panels"]] == [active["name"], later["name"]]
    first, second = section["panels"]
    assert first["state"] == "active" and second["state"] == "inactive"
    assert first["meta"].startswith("fake-mock against fake-mini for cheap · model cheap · ") and first["meta"].endswith("control: control")
    for panel, answer, config in ((first, results, active), (second, upcoming, later)):
        weights = {variant["name"]: variant["weight"] for variant in config["variants"]}
        assert panel["rows"] == [[v["variant"], _experiment_cells(v, weights[v["variant"]])] for v in answer["variants"]]
    # what the page shows: 8 users split over the two variants, the thumbs-down against the rated user's variant
    shown = {variant: cells for variant, cells in first["rows"]}
    assert sum(int(cells[4]) for cells in shown.values()) == 8
    assert shown[rated["variant"]][13] == "1" and shown[rated["variant"]][14] == "0% (0%–79.3%)"
    assert [cells[4] for cells in (row[1] for row in second["rows"])] == ["0", "0"]
    assert _problems(browser) == []
    # users see no experiments, and the page never asks for them
    _open(browser, served.url, "/monitoring/", user_token)
    page = _ready(browser)
    assert browser.execute_script(EXPERIMENT_PANELS_JS) is None
    assert not any("/api/experiments" in url for url in page["resources"])
    assert _problems(browser) == []
