"""Open-WebUI 0.12.4 groups decide the group policy: config/policy.yaml's `premium` group adds
the advanced and premium tiers to role `user`.

An admin creates the group `premium` through Open-WebUI's API and adds a user: within the
role TTL the BFF lets that user have the premium model, with Open-WebUI's session token
(the BFF asks GET /api/v1/users/groups with it) and as Open-WebUI's connection forwards
them (service key + signed X-OpenWebUI-User-Jwt, which names no groups: the BFF asks
GET /api/v1/users/{id}/groups with OPEN_WEBUI_ADMIN_TOKEN). Removed, they are refused again.
"""

import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import FORWARD_SECRET, SERVICE_KEY, Bff, BffFactory, chat_body
from openwebui.api import Account
from openwebui.conftest import ROLE_CACHE_TTL_SECONDS, Stack
from support.tokens import forwarded_user_jwt

PREMIUM_MODEL = "fake-premium"  # tier premium (tests/fixtures/litellm.test.yaml)
SLACK_SECONDS = 1.0


@pytest.fixture(scope="module")
def grouped(stack: Stack, admin: Account) -> Account:
    """A user of this module's own: the session's `user` stays out of every group."""
    return stack.openwebui.add_user(admin, "Grouped", "grouped@example.test", role="user")


@pytest.fixture(scope="module")
def group_bff(stack: Stack, admin: Account, bff_factory: BffFactory) -> Bff:
    """A BFF on this Open-WebUI that may read other users' groups (the admin's session token)."""
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


def test_through_openwebui_a_member_gets_the_group_only_with_an_admin_token(
    stack: Stack, admin: Account, grouped: Account, premium_group: str
) -> None:
    """Open-WebUI's own chat calls the suite's BFF with the service key; without
    OPEN_WEBUI_ADMIN_TOKEN it cannot read the forwarded user's groups and fails closed."""
    stack.openwebui.set_group_member(admin, premium_group, grouped, member=True)
    try:
        answer = stack.openwebui.chat(grouped, PREMIUM_MODEL)
        expected = 403 if stack.bff.settings.open_webui_admin_token is None else 200
        assert answer.status_code == expected, answer.text
    finally:
        stack.openwebui.set_group_member(admin, premium_group, grouped, member=False)
