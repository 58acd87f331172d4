"""Policy by Open-WebUI groups: membership from the role source, never from the request.

config/policy.yaml's group `premium` adds the advanced and premium tiers to role `user`
(mini, standard). Memberships come from the fake Open-WebUI's group routes, served as
open-webui 0.12.4 serves them (tests/support/fake_openwebui.py); the `db` source's are in
test_role_sources.py, the real Open-WebUI's in tests/openwebui/test_openwebui_groups.py.
"""

import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import FORWARD_SECRET, ROOT, SERVICE_KEY, WEBUI_SECRET, Bff, BffFactory, chat_body
from support.fake_openwebui import FakeGroup, FakeOpenWebUIState
from support.servers import ThreadServer
from support.tokens import forwarded_user_jwt, session_token

PREMIUM_MODELS = {"fake-premium", "fake-advanced"}
ADMIN_API_KEY = "sk-" + "a1" * 16
TTL = 1.0


@pytest.fixture()
def groups(openwebui_state: FakeOpenWebUIState) -> Iterator[FakeOpenWebUIState]:
    """The session's fake Open-WebUI, with the groups a test adds removed afterwards."""
    before = set(openwebui_state.groups)
    yield openwebui_state
    for group_id in set(openwebui_state.groups) - before:
        del openwebui_state.groups[group_id]


def _user(state: FakeOpenWebUIState, user_id: str) -> dict[str, str]:
    return state.users.get(user_id) or state.add_user(user_id, "user")


def _models(client: httpx.Client) -> set[str]:
    answer = client.get("/v1/models")
    assert answer.status_code == 200, answer.text
    return {model["id"] for model in answer.json()["data"]}


def _allowed(client: httpx.Client) -> dict[str, bool]:
    answer = client.get("/api/models")
    assert answer.status_code == 200, answer.text
    return {model["id"]: model["allowed"] for model in answer.json()["data"]}


def _chat(client: httpx.Client, model: str = "fake-premium") -> int:
    return client.post("/v1/chat/completions", json=chat_body(model)).status_code


def _forwarded(user: dict[str, str], **claims: object) -> dict[str, str]:
    return {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(user, FORWARD_SECRET, **claims)}


def _premium(state: FakeOpenWebUIState, *members: str) -> FakeGroup:
    return state.add_group("premium", members)


def test_a_premium_group_member_may_use_the_premium_tier_and_others_may_not(bff: Bff, groups: FakeOpenWebUIState) -> None:
    for user_id in ("grp-premium-1", "grp-plain-1", "grp-other-1"):
        _user(groups, user_id)
    _premium(groups, "grp-premium-1")
    groups.add_group("research", ("grp-other-1",))  # a group the policy does not name adds nothing
    groups.add_group("Premium", ("grp-other-1",))  # names are exact

    with bff.client(session_token("grp-premium-1", WEBUI_SECRET)) as client:
        assert _models(client) >= PREMIUM_MODELS | {"fake-mini"}
        allowed = _allowed(client)
        assert allowed["fake-premium"] and allowed["fake-advanced"] and allowed["fake-mini"]
        assert _chat(client) == 200
        assert _chat(client, "fake-advanced") == 200
    for user_id in ("grp-plain-1", "grp-other-1"):
        with bff.client(session_token(user_id, WEBUI_SECRET)) as client:
            assert not _models(client) & PREMIUM_MODELS
            allowed = _allowed(client)
            assert not allowed["fake-premium"] and not allowed["fake-advanced"] and allowed["fake-mini"]
            refused = client.post("/v1/chat/completions", json=chat_body("fake-premium"))
            assert refused.status_code == 403, user_id
            assert refused.json()["error"]["code"] == "model_not_allowed"
            assert _chat(client, "fake-mini") == 200


def test_membership_of_a_child_group_counts_as_open_webui_counts_it(bff: Bff, groups: FakeOpenWebUIState) -> None:
    """Open-WebUI 0.12.4 groups nest (parent_group_id); access follows the inherited memberships."""
    _user(groups, "grp-child-1")
    parent = _premium(groups)
    groups.add_group("premium-eu", ("grp-child-1",), parent=parent.id)
    with bff.client(session_token("grp-child-1", WEBUI_SECRET)) as client:
        assert _chat(client) == 200


def test_membership_changes_take_effect_within_the_role_ttl(
    bff_factory: BffFactory, groups: FakeOpenWebUIState, admin_token: str
) -> None:
    _user(groups, "grp-ttl-1")
    quick = bff_factory(role_cache_ttl_seconds=TTL)
    group = _premium(groups)
    openwebui = httpx.Client(base_url=quick.settings.open_webui_url, headers={"Authorization": f"Bearer {admin_token}"})
    with quick.client(session_token("grp-ttl-1", WEBUI_SECRET)) as client, openwebui:
        assert _chat(client) == 403
        added = openwebui.post(f"/api/v1/groups/id/{group.id}/users/add", json={"user_ids": ["grp-ttl-1"]})
        assert added.status_code == 200 and added.json()["member_count"] == 1
        assert _chat(client) == 403, "the answer of the first call is cached for the role TTL"
        time.sleep(TTL + 0.2)
        assert _chat(client) == 200
        assert _allowed(client)["fake-premium"]
        removed = openwebui.post(f"/api/v1/groups/id/{group.id}/users/remove", json={"user_ids": ["grp-ttl-1"]})
        assert removed.status_code == 200 and removed.json()["member_count"] == 0
        time.sleep(TTL + 0.2)
        assert _chat(client) == 403
        assert not _allowed(client)["fake-premium"]


def test_a_session_asks_for_its_own_groups_once_per_ttl(bff: Bff, groups: FakeOpenWebUIState) -> None:
    _user(groups, "grp-count-1")
    _premium(groups, "grp-count-1")
    with bff.client(session_token("grp-count-1", WEBUI_SECRET)) as client:
        lookups, group_lookups = groups.lookups, groups.group_lookups
        assert [_chat(client) for _ in range(3)] == [200, 200, 200]
        assert (groups.lookups, groups.group_lookups) == (lookups + 1, group_lookups + 1)


@pytest.mark.parametrize("admin_credential", ["session", "api_key"])
def test_forwarded_users_get_their_groups_from_open_webui_by_id(
    bff_factory: BffFactory, groups: FakeOpenWebUIState, admin_token: str, admin_credential: str
) -> None:
    """Service key + signed X-OpenWebUI-User-Jwt (Open-WebUI's own connection): the JWT names no
    groups, so the BFF asks GET /api/v1/users/{id}/groups with OPEN_WEBUI_ADMIN_TOKEN."""
    premium, plain = _user(groups, "grp-fwd-1"), _user(groups, "grp-fwd-plain-1")
    _premium(groups, premium["id"])
    groups.api_keys[ADMIN_API_KEY] = "admin-1"
    token = admin_token if admin_credential == "session" else ADMIN_API_KEY
    forwarding = bff_factory(open_webui_admin_token=token, role_cache_ttl_seconds=TTL)
    group_lookups = groups.group_lookups
    with forwarding.client(SERVICE_KEY, headers=_forwarded(premium)) as client:
        assert _chat(client) == 200
        assert _chat(client) == 200
    assert groups.group_lookups == group_lookups + 1, "cached for the role TTL"
    with forwarding.client(SERVICE_KEY, headers=_forwarded(plain)) as client:
        assert _chat(client) == 403
        assert _chat(client, "fake-mini") == 200
    # Open-WebUI's backend lists models with the service key: every chat model (the chat is judged)
    with forwarding.client(SERVICE_KEY, headers=_forwarded(plain)) as client:
        assert _models(client) >= PREMIUM_MODELS


def test_trusted_forwarded_headers_get_their_groups_from_open_webui(
    bff_factory: BffFactory, groups: FakeOpenWebUIState, admin_token: str
) -> None:
    premium = _user(groups, "grp-hdr-1")
    _premium(groups, premium["id"])
    trusting = bff_factory(trust_forwarded_user_headers=True, open_webui_admin_token=admin_token)
    headers = {"X-OpenWebUI-User-Id": premium["id"], "X-OpenWebUI-User-Role": "user"}
    with trusting.client(SERVICE_KEY, headers=headers) as client:
        assert _chat(client) == 200


def test_without_an_admin_token_forwarded_users_get_no_groups(bff: Bff, groups: FakeOpenWebUIState) -> None:
    """Fails closed: the role's policy only (and a warning at start-up), never a 500."""
    premium = _user(groups, "grp-noadmin-1")
    _premium(groups, premium["id"])
    group_lookups = groups.group_lookups
    with bff.client(SERVICE_KEY, headers=_forwarded(premium)) as client:
        assert _chat(client) == 403
        assert _chat(client, "fake-mini") == 200
    assert groups.group_lookups == group_lookups
    with bff.client(session_token(premium["id"], WEBUI_SECRET)) as client:  # its own session still has them
        assert _chat(client) == 200


def test_an_admin_token_open_webui_refuses_fails_closed(
    bff_factory: BffFactory, groups: FakeOpenWebUIState, user_token: str
) -> None:
    premium = _user(groups, "grp-badadmin-1")
    _premium(groups, premium["id"])
    for token in (user_token, session_token("admin-1", "wrong-secret")):  # not an admin; not valid at all
        refused = bff_factory(open_webui_admin_token=token)
        with refused.client(SERVICE_KEY, headers=_forwarded(premium)) as client:
            assert _chat(client) == 403
            assert _chat(client, "fake-mini") == 200


def test_forged_groups_change_nothing(bff_factory: BffFactory, bff: Bff, groups: FakeOpenWebUIState, admin_token: str) -> None:
    """What Open-WebUI's `{{USER_GROUPS}}` / `{{USER_GROUP_IDS}}` connection headers would carry,
    and a groups claim in the forwarded JWT: the caller's word, ignored."""
    plain = _user(groups, "grp-forger-1")
    premium_group = _premium(groups)
    forged = {
        "X-OpenWebUI-User-Groups": "premium",
        "X-OpenWebUI-User-Group-Ids": premium_group.id,
        "X-User-Groups": "premium",
        "X-Groups": "premium",
    }
    with bff.client(session_token(plain["id"], WEBUI_SECRET), headers=forged) as client:
        assert _chat(client) == 403
        assert not _models(client) & PREMIUM_MODELS
        assert not _allowed(client)["fake-premium"]
    forwarding = bff_factory(open_webui_admin_token=admin_token, trust_forwarded_user_headers=True)
    jwt_with_groups = _forwarded(plain, groups=["premium"], group_ids=[premium_group.id])
    with forwarding.client(SERVICE_KEY, headers={**jwt_with_groups, **forged}) as client:
        assert _chat(client) == 403
    headers = {"X-OpenWebUI-User-Id": plain["id"], "X-OpenWebUI-User-Role": "user", **forged}
    with forwarding.client(SERVICE_KEY, headers=headers) as client:
        assert _chat(client) == 403


def test_pending_forwarded_users_cost_no_group_lookup(bff_factory: BffFactory, groups: FakeOpenWebUIState, admin_token: str) -> None:
    forwarding = bff_factory(open_webui_admin_token=admin_token)
    pending = {"id": "grp-pending-1", "email": "p@example.test", "name": "P", "role": "pending"}
    group_lookups = groups.group_lookups
    with forwarding.client(SERVICE_KEY, headers=_forwarded(pending)) as client:
        answer = client.post("/v1/chat/completions", json=chat_body("fake-mini"))
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "account_pending"
    assert groups.group_lookups == group_lookups


def test_open_webui_failing_on_groups_gives_503(bff_factory: BffFactory, groups: FakeOpenWebUIState, admin_token: str) -> None:
    """Open-WebUI answering something unexpected is an outage (503), not 'no groups' nor a 500."""
    async def broken(_: Request) -> JSONResponse:
        return JSONResponse({"detail": "boom"}, status_code=500)

    server = ThreadServer(Starlette(routes=[Route("/api/v1/users/{user_id}/groups", broken)])).start()
    try:
        broken_bff = bff_factory(open_webui_url=server.url, open_webui_admin_token=admin_token)
        user = _user(groups, "grp-broken-1")
        with broken_bff.client(SERVICE_KEY, headers=_forwarded(user)) as client:
            answer = client.post("/v1/chat/completions", json=chat_body("fake-mini"))
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "role_source_unavailable"
        assert "boom" not in answer.text
    finally:
        server.stop()


def test_static_source_groups_from_the_dev_users_file(bff_factory: BffFactory) -> None:
    static = bff_factory(role_source="static", bff_dev_mode=True, static_roles_file=ROOT / "config" / "dev-users.yaml")
    with static.client(session_token("dev-premium", WEBUI_SECRET)) as client:
        assert _models(client) >= PREMIUM_MODELS
        assert _chat(client) == 200
    with static.client(session_token("dev-user", WEBUI_SECRET)) as client:
        assert not _models(client) & PREMIUM_MODELS
        assert _chat(client) == 403
    dev_premium = {"id": "dev-premium", "email": "premium@localhost", "name": "Dev Premium", "role": "user"}
    with static.client(SERVICE_KEY, headers=_forwarded(dev_premium)) as client:
        assert _chat(client) == 200
    with static.client(SERVICE_KEY, headers=_forwarded({**dev_premium, "id": "dev-user"})) as client:
        assert _chat(client) == 403
