"""Open-WebUI 0.12.4 itself in front of the gateway: identity, policy, usage and revocation.

Chats go through Open-WebUI's own /api/chat/completions, which calls the BFF with the
service key and a signed X-OpenWebUI-User-Jwt; session tokens Open-WebUI issued are used
directly against the BFF; roles are changed through Open-WebUI's admin API.
"""

import time
from typing import Any

import httpx

from bff.clickhouse import ClickHouseStore
from bff.telemetry import attributes as attr
from conftest import chat_body
from openwebui.api import Account
from openwebui.conftest import ROLE_CACHE_TTL_SECONDS, Stack
from support.fake_openai import REPLY, FakeProviderState

USER_MODEL = "fake-mini"  # tier mini: config/policy.yaml lets users have it
ADMIN_ONLY_MODEL = "fake-premium"  # tier premium: only admins may use it


def span_of(store: ClickHouseStore, user_id: str, wanted: dict[str, str]) -> dict[str, str]:
    """The attributes of the user's latest gateway span that has the wanted values, waiting for the batch exporter."""
    deadline = time.monotonic() + 15
    while True:
        rows = store.query(
            "SELECT SpanAttributes FROM otel.otel_traces WHERE SpanAttributes['enduser.id'] = {id:String} ORDER BY Timestamp",
            {"id": user_id},
        )
        matching = [row["SpanAttributes"] for row in rows if wanted.items() <= row["SpanAttributes"].items()]
        if matching:
            return matching[-1]
        assert time.monotonic() < deadline, f"no span of {user_id} with {wanted}"
        time.sleep(0.2)


def usage(stack: Stack, admin: Account, path: str, **params: str) -> dict[str, Any]:
    """The BFF's usage API, as Open-WebUI's admin with the session token Open-WebUI issued."""
    with stack.bff.client(admin.token) as client:
        answer = client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_chat_through_openwebui_is_recorded_under_its_user_and_role(
    stack: Stack, admin: Account, user: Account, store: ClickHouseStore, provider_state: FakeProviderState
) -> None:
    assert USER_MODEL in stack.openwebui.model_ids(user)  # the UI loads the model list first
    answer = stack.openwebui.chat(user, USER_MODEL)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == REPLY
    assert provider_state.requests[-1]["user"] == user.id  # the BFF set `user` to the Open-WebUI id

    # service key + X-OpenWebUI-User-Jwt, recorded under Open-WebUI's user id and role
    span_of(store, user.id, {attr.AUTH_METHOD: "forwarded_jwt", attr.ROLE: "user", attr.REQUEST_MODEL: USER_MODEL, attr.HTTP_STATUS: "200"})

    summary = usage(stack, admin, "/api/usage/summary", user=user.id)
    assert summary["totals"]["requests"] >= 1 and summary["totals"]["input_tokens"] > 0
    by_role = usage(stack, admin, "/api/usage/breakdown", by="role", user=user.id)
    assert [row["key"] for row in by_role["rows"]] == ["user"]
    by_user = usage(stack, admin, "/api/usage/breakdown", by="user", limit="100")
    assert user.id in {row["key"] for row in by_user["rows"]}


def test_a_normal_user_is_refused_a_model_reserved_for_admins(
    stack: Stack, admin: Account, user: Account, store: ClickHouseStore
) -> None:
    # Open-WebUI keeps one model table for all its users, so the BFF lists every model to it
    # (a per-user list would hide the admin's models after a user's refresh) ...
    assert ADMIN_ONLY_MODEL in stack.openwebui.model_ids(user)
    assert ADMIN_ONLY_MODEL in stack.openwebui.model_ids(admin)
    # ... and the policy refuses the chat itself, whatever list was shown.

    refused = stack.openwebui.chat(user, ADMIN_ONLY_MODEL)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "model_not_allowed"  # the BFF's error, passed through
    span_of(store, user.id, {attr.REQUEST_MODEL: ADMIN_ONLY_MODEL, attr.HTTP_STATUS: "403", attr.ROLE: "user", attr.AUTH_METHOD: "forwarded_jwt"})

    allowed = stack.openwebui.chat(admin, ADMIN_ONLY_MODEL)
    assert allowed.status_code == 200, allowed.text
    span_of(store, admin.id, {attr.REQUEST_MODEL: ADMIN_ONLY_MODEL, attr.HTTP_STATUS: "200", attr.ROLE: "admin"})


def test_an_openwebui_session_token_works_on_the_bff_and_its_monitoring_pages(
    stack: Stack, admin: Account, user: Account, store: ClickHouseStore
) -> None:
    with stack.bff.client(user.token) as client:
        models = {model["id"] for model in client.get("/v1/models").json()["data"]}
        assert USER_MODEL in models and ADMIN_ONLY_MODEL not in models
        answer = client.post("/v1/chat/completions", json=chat_body(USER_MODEL))
        assert answer.status_code == 200, answer.text
        assert client.get("/monitoring/").status_code == 200
        viewer = client.get("/monitoring/viewer").json()
    assert (viewer["user_id"], viewer["role"], viewer["scope"]) == (user.id, "user", "own")
    span_of(store, user.id, {attr.AUTH_METHOD: "session_token", attr.ROLE: "user", attr.HTTP_STATUS: "200"})

    # The browser sends Open-WebUI's `token` cookie (same origin behind Kong).
    with httpx.Client(base_url=stack.bff.url, cookies={"token": admin.token}, timeout=30) as browser:
        assert browser.get("/monitoring/").status_code == 200
        assert browser.get("/monitoring/viewer").json()["scope"] == "all"


def test_a_user_demoted_to_pending_is_refused_within_the_role_cache_ttl(stack: Stack, admin: Account) -> None:
    member = stack.openwebui.add_user(admin, "Member", "member@example.test", role="user")
    with stack.bff.client(member.token) as client:
        assert client.post("/v1/chat/completions", json=chat_body(USER_MODEL)).status_code == 200
        assert client.get("/monitoring/").status_code == 200  # the role "user" is now cached

        stack.openwebui.set_role(admin, member, "pending")
        demoted_at = time.monotonic()
        assert stack.openwebui.chat(member, USER_MODEL).status_code == 401  # Open-WebUI refuses pending users too

        while (viewer := client.get("/monitoring/viewer")).status_code == 200:
            assert time.monotonic() - demoted_at < ROLE_CACHE_TTL_SECONDS + 3, "still allowed long after the TTL"
            time.sleep(0.1)
        refused_after = time.monotonic() - demoted_at
        assert viewer.status_code == 403 and viewer.json()["error"]["code"] == "account_pending"
        assert refused_after <= ROLE_CACHE_TTL_SECONDS + 1
        chat = client.post("/v1/chat/completions", json=chat_body(USER_MODEL))
        assert (chat.status_code, chat.json()["error"]["code"]) == (403, "account_pending")
        assert client.get("/monitoring/").status_code == 403
