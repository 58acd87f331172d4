"""People by name: admins see users by name and email (otel.gateway_users), users see only
themselves, the spans carry neither, and ClickHouse being down fails no request."""

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bff.clickhouse import ClickHouseStore
from bff.identity.principal import AuthMethod, Principal, Role
from bff.usage.users import UserDirectory
from conftest import FORWARD_SECRET, ROOT, SERVICE_KEY, WEBUI_SECRET, Bff, BffFactory, chat_body
from support.fake_openwebui import FakeOpenWebUIState
from support.servers import free_port
from support.spans import spans_for
from support.tokens import forwarded_user_jwt, session_token
from test_usage import _wait_for, _wait_for_request


def _person(prefix: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"id": f"{prefix}-{tag}", "name": f"Ada Lovelace {tag}", "email": f"ada.{tag}@example.test", "role": "user"}


def _as(bff: Bff, person: dict[str, str]) -> httpx.Client:
    """Open-WebUI's backend calling on the person's behalf (service key + forwarded user JWT)."""
    return bff.client(SERVICE_KEY, headers={"X-OpenWebUI-User-Jwt": forwarded_user_jwt(person, FORWARD_SECRET)})


def _until(check: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _user_row(admin: httpx.Client, user_id: str, name: str) -> dict[str, Any] | None:
    """The admin's breakdown-by-user row of the user, once it shows this name."""
    answer = admin.get("/api/usage/breakdown", params={"by": "user", "user": user_id})
    assert answer.status_code == 200, answer.text
    rows = [row for row in answer.json()["rows"] if row["key"] == user_id and row["name"] == name]
    return rows[0] if rows else None


def test_admins_see_name_and_email(bff: Bff, admin_token: str) -> None:
    person = _person("named")
    with _as(bff, person) as client:
        chat = client.post("/v1/chat/completions", json=chat_body())
        assert chat.status_code == 200, chat.text
        request_id = chat.headers["x-request-id"]
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    with bff.client(admin_token) as admin:
        _wait_for(admin, {"user": person["id"]}, 2)
        row = _until(lambda: _user_row(admin, person["id"], person["name"]))
        assert row is not None and row["email"] == person["email"] and row["requests"] == 2
        everyone = admin.get("/api/usage/breakdown", params={"by": "user", "limit": "1000"}).json()["rows"]
        assert [r["email"] for r in everyone if r["key"] == person["id"]] == [person["email"]]
        # other dimensions carry no names
        assert all(r["name"] is None and r["email"] is None for r in admin.get("/api/usage/breakdown", params={"by": "model"}).json()["rows"])
        lookup = _wait_for_request(admin, request_id)
        assert lookup.status_code == 200, lookup.text
        detail = lookup.json()["request"]
        assert (detail["user_id"], detail["user_name"], detail["user_email"]) == (person["id"], person["name"], person["email"])
        for query in (person["id"][-8:], person["name"].split()[0].upper(), person["email"][:9]):
            found = admin.get("/api/usage/users", params={"query": query, "limit": "200"})
            assert found.status_code == 200, found.text
            assert {"user_id": person["id"], "name": person["name"], "email": person["email"], "role": "user"}.items() <= next(
                u for u in found.json()["users"] if u["user_id"] == person["id"]
            ).items(), query
        nobody = admin.get("/api/usage/users", params={"query": "x' OR '1'='1"})
        assert nobody.status_code == 200 and nobody.json()["users"] == []
        assert admin.get("/api/usage/users", params={"limit": "100000"}).status_code == 400


def test_a_rename_in_openwebui_shows_after_the_next_request(
    bff_factory: BffFactory, openwebui_state: FakeOpenWebUIState, admin_token: str
) -> None:
    """Session tokens: the name comes from the role source (Open-WebUI's /api/v1/auths/)."""
    bff = bff_factory(role_cache_ttl_seconds=0.2)
    user_id = f"rename-{uuid.uuid4().hex[:8]}"
    user = openwebui_state.add_user(user_id, "user")
    token = session_token(user_id, WEBUI_SECRET)
    with bff.client(token) as client, bff.client(admin_token) as admin:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
        _wait_for(admin, {"user": user_id}, 1)
        assert _until(lambda: _user_row(admin, user_id, user["name"])) is not None
        user["name"], user["email"] = "Grace Hopper", f"grace.{user_id}@example.test"
        time.sleep(0.3)  # past the role cache
        # the renamed user's next request records the new name
        assert client.get("/api/usage/budget").status_code == 200
        row = _until(lambda: _user_row(admin, user_id, "Grace Hopper"))
        assert row is not None and row["email"] == user["email"]
        own = client.get("/api/usage/breakdown", params={"by": "user"}).json()["rows"]
        assert [(r["key"], r["name"], r["email"]) for r in own] == [(user_id, "Grace Hopper", user["email"])]


def test_a_user_sees_only_themselves(bff: Bff, admin_token: str) -> None:
    me, other = _person("me"), _person("other")
    with _as(bff, other) as them:
        theirs = them.post("/v1/chat/completions", json=chat_body())
        assert theirs.status_code == 200
    with _as(bff, me) as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    with bff.client(admin_token) as admin:
        _wait_for(admin, {"user": other["id"]}, 1)
        _wait_for(admin, {"user": me["id"]}, 1)
        assert _until(lambda: _user_row(admin, other["id"], other["name"])) is not None
    with _as(bff, me) as client:
        answers = [
            client.get("/api/usage/breakdown", params={"by": "user", "limit": "1000"}),
            client.get("/api/usage/breakdown", params={"by": "session"}),
            client.get("/api/usage/summary"),
            client.get(f"/api/usage/requests/{theirs.headers['x-request-id']}"),
            client.get("/api/usage/users", params={"query": other["name"]}),
            client.get("/api/usage/breakdown", params={"by": "user", "user": other["id"]}),
            client.get("/monitoring/viewer"),
        ]
        rows = answers[0].json()["rows"]
        assert [(r["key"], r["name"], r["email"]) for r in rows] == [(me["id"], me["name"], me["email"])]
        assert answers[3].status_code == 404
        assert answers[4].status_code == 403 and answers[4].json()["error"]["code"] == "permission_denied"
        assert answers[5].status_code == 403
        for answer in answers:
            for secret in (other["id"], other["name"], other["email"]):
                assert secret not in answer.text, answer.request.url


def test_spans_carry_no_name_or_email(bff: Bff, clickhouse_url: str) -> None:
    person = _person("spanless")
    with _as(bff, person) as client:
        chat = client.post("/v1/chat/completions", json=chat_body())
        assert chat.status_code == 200
    spans = spans_for(ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse"), chat.headers["x-request-id"])
    assert spans and spans[0]["SpanAttributes"]["enduser.id"] == person["id"]
    for span in spans:
        for key, value in span["SpanAttributes"].items():
            assert person["name"] not in value and person["email"] not in value, key
            assert "email" not in key, key


def test_clickhouse_down_fails_no_request(bff_factory: BffFactory) -> None:
    down = bff_factory(clickhouse_url=f"http://127.0.0.1:{free_port()}")
    for prefix in ("down-a", "down-b"):
        person = _person(prefix)
        with _as(down, person) as client:
            started = time.monotonic()
            for _ in range(3):
                answer = client.post("/v1/chat/completions", json=chat_body())
                assert answer.status_code == 200, answer.text
            assert time.monotonic() - started < 10
            renamed = {**person, "name": "Renamed"}
        with _as(down, renamed) as client:
            assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200


@pytest.mark.parametrize("path", ["/api/usage/users"])
def test_the_users_list_needs_a_user(bff: Bff, path: str) -> None:
    with bff.client(SERVICE_KEY) as service:
        assert service.get(path).status_code == 403
    with bff.client() as anonymous:
        assert anonymous.get(path).status_code == 401


def _principal(person: dict[str, str]) -> Principal:
    return Principal(user_id=person["id"], name=person["name"], email=person["email"], role=Role.user, auth=AuthMethod.forwarded_jwt)


def test_the_directory_writes_once_per_change_and_flushes_at_shutdown(clickhouse_url: str) -> None:
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    person = _person("shutdown")

    async def scenario() -> tuple[int, int, int]:
        directory = UserDirectory(store, batch_delay_seconds=60)  # only the shutdown writes
        directory.seen(_principal(person))
        directory.seen(_principal(person))
        once = directory.queued
        directory.seen(Principal(user_id=person["id"], role=Role.user, auth=AuthMethod.forwarded_headers))  # nameless: ignored
        directory.seen(_principal({**person, "email": "changed." + person["email"]}))
        changed = directory.queued
        await directory.aclose()
        return once, changed, directory.queued

    once, changed, left = asyncio.run(scenario())
    assert (once, changed, left) == (1, 1, 0)
    rows = store.query("SELECT Name, Email, Role FROM otel.gateway_users FINAL WHERE UserId = {id:String}", {"id": person["id"]})
    assert rows == [{"Name": person["name"], "Email": "changed." + person["email"], "Role": "user"}]


def test_the_directory_keeps_rows_while_clickhouse_is_down() -> None:
    store = ClickHouseStore(f"http://127.0.0.1:{free_port()}", ROOT / "config" / "clickhouse")

    async def scenario() -> tuple[int, float]:
        directory = UserDirectory(store, batch_delay_seconds=0.01)
        for n in range(5):
            directory.seen(_principal(_person(f"queued{n}")))
        await asyncio.sleep(0.5)  # the writer tried and failed: the rows stay queued
        started = time.monotonic()
        await directory.aclose()
        return directory.queued, time.monotonic() - started

    queued, shutdown = asyncio.run(scenario())
    assert queued == 5 and shutdown < 5
