"""Open-WebUI 0.12.4 groups decide the group policy: config/policy.yaml's `premium` group adds
the advanced and premium tiers to role `user`.

An admin creates the group `premium` through Open-WebUI's API and adds a user: within the
role TTL the BFF lets that user have the premium model, with Open-WebUI's session token
(the BFF asks GET /api/v1/users/groups with it) and as Open-WebUI's connection forwards
them (service key + signed X-OpenWebUI-User-Jwt, which names no groups: the BFF asks
GET /api/v1/users/{id}/groups with OPEN_WEBUI_ADMIN_TOKEN). Removed, they are refused again.
The same through Open-WebUI's own chat route (the suite's shared BFF holds the admin's API
key); a BFF without OPEN_WEBUI_ADMIN_TOKEN gives forwarded users no groups (fails closed).
"""

import time
from collections.abc import Iterator

import httpx
import pytest

from bff.clickhouse import ClickHouseStore
from bff.telemetry import attributes as attr
from conftest import FORWARD_SECRET, SERVICE_KEY, Bff, BffFactory, chat_body
from openwebui.api import Account
from openwebui.conftest import ROLE_CACHE_TTL_SECONDS, Stack
from openwebui.test_openwebui_e2e import span_of
from support.fake_openai import REPLY, FakeProviderState
from support.tokens import forwarded_user_jwt

PREMIUM_MODEL = "fake-premium"  # tier premium (tests/fixtures/litellm.test.yaml)
SLACK_SECONDS = 1.0


@pytest.fixture(scope="module")
def grouped(stack: Stack, admin: Account) -> Account:
    """A user of this module's own: the session's `user` stays out of every group."""
    return stack.openwebui.add_user(admin, "Grouped", "grouped@example.test", role="user")


@pytest.fixture(scope="module")
def group_bff(stack: Stack, admin: Account, bff_factory: BffFactory) -> Bff:
    """A BFF on this Open-WebUI that may read other users' groups with the admin's session token
    (the suite's shared BFF holds the admin's API key: either is an admin credential)."""
    return bff_factory(
        role_source="api",
        open_webui_url=stack.openwebui.url,
        role_cache_ttl_seconds=ROLE_CACHE_TTL_SECONDS,
        open_webui_admin_token=admin.token,
    )


@pytest.fixture()
def premium_group(stack: Stack, admin: Account) -> Iterator[str]:
    group_id = stack.openwebui.create_group(admin, "premium")
    yield group_id
    answer = stack.openwebui.call(admin, "DELETE", f"/api/v1/groups/id/{group_id}/delete")
    assert answer.status_code == 200, answer.text


def _forwarded(user: Account) -> dict[str, str]:
    """What Open-WebUI's connection sends (utils/headers.py _mint_forward_user_jwt)."""
    claims = {"id": user.id, "email": user.email, "name": "Grouped", "role": user.role}
    return {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(claims, FORWARD_SECRET)}


def _premium_status(client: httpx.Client) -> int:
    return client.post("/v1/chat/completions", json=chat_body(PREMIUM_MODEL)).status_code


def _wait_for(clients: list[httpx.Client], status: int, since: float) -> float:
    """Seconds from `since` until every client gets `status` for the premium model."""
    while True:
        statuses = [_premium_status(client) for client in clients]
        if statuses == [status] * len(clients):
            return time.monotonic() - since
        assert time.monotonic() - since < ROLE_CACHE_TTL_SECONDS + SLACK_SECONDS + 2, f"still {statuses} after the role TTL"
        time.sleep(0.1)


def test_adding_to_the_premium_group_allows_the_model_within_the_ttl_and_removing_refuses_it(
    stack: Stack, admin: Account, grouped: Account, group_bff: Bff, premium_group: str
) -> None:
    openwebui = stack.openwebui
    session = group_bff.client(grouped.token)
    service = group_bff.client(SERVICE_KEY, headers=_forwarded(grouped))
    with session, service:
        refused = session.post("/v1/chat/completions", json=chat_body(PREMIUM_MODEL))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
        assert _premium_status(service) == 403
        assert PREMIUM_MODEL not in {m["id"] for m in session.get("/v1/models").json()["data"]}

        openwebui.set_group_member(admin, premium_group, grouped, member=True)
        added_at = time.monotonic()
        assert openwebui.group_names(grouped) == {"premium"}
        allowed_after = _wait_for([session, service], 200, added_at)
        assert allowed_after <= ROLE_CACHE_TTL_SECONDS + SLACK_SECONDS
        assert PREMIUM_MODEL in {m["id"] for m in session.get("/v1/models").json()["data"]}
        catalog = {m["id"]: m["allowed"] for m in session.get("/api/models").json()["data"]}
        assert catalog[PREMIUM_MODEL] and catalog["fake-advanced"]
        # A header cannot stand in for a membership: Open-WebUI's {{USER_GROUPS}} placeholder is plain text.

        openwebui.set_group_member(admin, premium_group, grouped, member=False)
        removed_at = time.monotonic()
        assert openwebui.group_names(grouped) == set()
        refused_after = _wait_for([session, service], 403, removed_at)
        assert refused_after <= ROLE_CACHE_TTL_SECONDS + SLACK_SECONDS
        assert not {m["id"]: m["allowed"] for m in session.get("/api/models").json()["data"]}[PREMIUM_MODEL]


def test_a_forged_groups_header_does_not_make_a_member(
    stack: Stack, grouped: Account, group_bff: Bff, premium_group: str
) -> None:
    forged = {"X-OpenWebUI-User-Groups": "premium", "X-OpenWebUI-User-Group-Ids": premium_group}
    with group_bff.client(grouped.token, headers=forged) as session:
        assert _premium_status(session) == 403
    with group_bff.client(SERVICE_KEY, headers={**_forwarded(grouped), **forged}) as service:
        assert _premium_status(service) == 403


def _chat_until(stack: Stack, user: Account, status: int, since: float) -> tuple[httpx.Response, float]:
    """Open-WebUI's own chat for the premium model until it answers `status`: the answer and the seconds since `since`."""
    while True:
        answer = stack.openwebui.chat(user, PREMIUM_MODEL)
        if answer.status_code == status:
            return answer, time.monotonic() - since
        assert answer.status_code in (200, 403), answer.text
        assert time.monotonic() - since < ROLE_CACHE_TTL_SECONDS + SLACK_SECONDS + 2, f"still {answer.status_code} after the role TTL"
        time.sleep(0.1)


def test_through_openwebuis_chat_a_member_gets_the_premium_model_within_the_ttl_and_a_removed_one_is_refused(
    stack: Stack, admin: Account, grouped: Account, premium_group: str, store: ClickHouseStore, provider_state: FakeProviderState
) -> None:
    """As a user chats in the UI: Open-WebUI's /api/chat/completions with their session, Open-WebUI
    calling the shared BFF with the service key and X-OpenWebUI-User-Jwt; the BFF reads the
    forwarded user's groups with the admin's API key (OPEN_WEBUI_ADMIN_TOKEN)."""
    assert stack.bff.settings.open_webui_admin_token is not None
    assert stack.bff.settings.role_cache_ttl_seconds == ROLE_CACHE_TTL_SECONDS
    openwebui = stack.openwebui
    assert PREMIUM_MODEL in openwebui.model_ids(grouped)  # the UI loads the model list first
    refused = openwebui.chat(grouped, PREMIUM_MODEL)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed", refused.text

    openwebui.set_group_member(admin, premium_group, grouped, member=True)
    added_at = time.monotonic()
    allowed, allowed_after = _chat_until(stack, grouped, 200, added_at)
    assert allowed_after <= ROLE_CACHE_TTL_SECONDS + SLACK_SECONDS
    assert allowed.json()["choices"][0]["message"]["content"] == REPLY
    assert provider_state.requests[-1]["user"] == grouped.id  # served by the provider, for this user
    wanted = {attr.AUTH_METHOD: "forwarded_jwt", attr.ROLE: "user", attr.REQUEST_MODEL: PREMIUM_MODEL}
    span_of(store, grouped.id, {**wanted, attr.HTTP_STATUS: "200", attr.OUTCOME: "completed"})

    openwebui.set_group_member(admin, premium_group, grouped, member=False)
    removed_at = time.monotonic()
    refused, refused_after = _chat_until(stack, grouped, 403, removed_at)
    assert refused_after <= ROLE_CACHE_TTL_SECONDS + SLACK_SECONDS
    assert refused.json()["error"]["code"] == "model_not_allowed", refused.text
    span_of(store, grouped.id, {**wanted, attr.HTTP_STATUS: "403", attr.ERROR_TYPE: "model_not_allowed"})


def test_without_an_admin_token_a_forwarded_member_fails_closed_to_no_groups(
    stack: Stack, admin: Account, grouped: Account, premium_group: str
) -> None:
    """The shared BFF's twin without OPEN_WEBUI_ADMIN_TOKEN: the forwarded identity Open-WebUI's
    connection sends gets no groups, while the member's own session token still gets theirs."""
    tokenless = stack.tokenless_bff
    assert tokenless.settings.open_webui_admin_token is None
    stack.openwebui.set_group_member(admin, premium_group, grouped, member=True)
    try:
        assert stack.openwebui.group_names(grouped) == {"premium"}
        assert _chat_until(stack, grouped, 200, time.monotonic())[0].status_code == 200  # the shared BFF: a member
        with tokenless.client(SERVICE_KEY, headers=_forwarded(grouped)) as service:
            refused = service.post("/v1/chat/completions", json=chat_body(PREMIUM_MODEL))
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed", refused.text
            assert service.post("/v1/chat/completions", json=chat_body("fake-mini")).status_code == 200  # the role still applies
        with tokenless.client(grouped.token) as session:
            assert _premium_status(session) == 200
    finally:
        stack.openwebui.set_group_member(admin, premium_group, grouped, member=False)
