"""Each identity path accepted, and a corpus of bad credentials refused."""

import base64
import json
import time

import pytest
from jose import jwt

from conftest import (
    FORWARD_SECRET,
    SERVICE_KEY,
    WEBUI_SECRET,
    Bff,
    BffFactory,
    chat_body,
)
from support.fake_openwebui import FakeOpenWebUIState
from support.tokens import forwarded_user_jwt, session_token

USER = {"id": "user-1", "email": "user-1@example.test", "name": "User user-1", "role": "user"}


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["id"] = "admin-1"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _alg_none(user_id: str) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'id': user_id, 'exp': int(time.time()) + 600})}."


def test_session_token_in_header_resolves_user_and_role(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        answer = client.post("/api/chat/completions", json=chat_body())
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "fake-mini"


def test_session_token_in_cookie(bff: Bff, user_token: str) -> None:
    with bff.client(cookies={"token": user_token}) as client:
        assert client.get("/v1/models").status_code == 200


def test_open_webui_api_key_needs_the_db_role_source(bff: Bff, openwebui_state: FakeOpenWebUIState) -> None:
    """Open-WebUI 0.12.4's API resolves only human sessions; sk- keys work with ROLE_SOURCE=db (test_role_sources)."""
    lookups = openwebui_state.lookups
    with bff.client("sk-" + "b" * 32) as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code == 401
    assert "ROLE_SOURCE=db" in answer.json()["error"]["message"]
    assert openwebui_state.lookups == lookups  # not even asked


def test_service_key_with_forwarded_user_jwt(bff: Bff, provider_state) -> None:
    headers = {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(USER, FORWARD_SECRET), "X-OpenWebUI-Chat-Id": "chat-9"}
    with bff.client(SERVICE_KEY, headers=headers) as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code == 200, answer.text
    assert provider_state.requests[-1]["user"] == "user-1"


def test_service_key_alone_may_only_list_models(bff: Bff) -> None:
    with bff.client(SERVICE_KEY) as client:
        models = client.get("/v1/models")
        refused = client.post("/v1/chat/completions", json=chat_body())
    assert models.status_code == 200
    assert {m["id"] for m in models.json()["data"]} >= {"fake-mini", "fake-premium"}
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "user_identity_required"


def test_plain_forwarded_headers_need_the_setting(bff: Bff, bff_factory: BffFactory, provider_state) -> None:
    headers = {
        "X-OpenWebUI-User-Id": "user-7",
        "X-OpenWebUI-User-Role": "user",
        "X-OpenWebUI-User-Name": "J%C3%BCrgen%20K",
        "X-OpenWebUI-User-Email": "u7@example.test",
    }
    with bff.client(SERVICE_KEY, headers=headers) as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 401
    trusting = bff_factory(trust_forwarded_user_headers=True)
    with trusting.client(SERVICE_KEY, headers=headers) as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code == 200, answer.text
    assert provider_state.requests[-1]["user"] == "user-7"


def _bad_credentials() -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(case, headers, cookies) that must all be refused with 401."""
    now = int(time.time())
    good = session_token("user-1", WEBUI_SECRET)
    return [
        ("no credentials", {}, {}),
        ("bearer without token", {"Authorization": "Bearer"}, {}),
        ("basic auth", {"Authorization": "Basic dXNlcjpwYXNz"}, {}),
        ("garbage token", {"Authorization": "Bearer not-a-jwt"}, {}),
        ("wrong secret", {"Authorization": f"Bearer {session_token('user-1', 'another-secret')}"}, {}),
        ("alg none", {"Authorization": f"Bearer {_alg_none('admin-1')}"}, {}),
        ("HS512", {"Authorization": "Bearer " + jwt.encode({"id": "user-1", "exp": now + 600}, WEBUI_SECRET, algorithm="HS512")}, {}),
        ("expired", {"Authorization": f"Bearer {session_token('user-1', WEBUI_SECRET, lifetime=-60)}"}, {}),
        ("no exp", {"Authorization": f"Bearer {session_token('user-1', WEBUI_SECRET, lifetime=None)}"}, {}),
        ("tampered payload", {"Authorization": f"Bearer {_tamper(good)}"}, {}),
        ("missing id", {"Authorization": f"Bearer {session_token(None, WEBUI_SECRET)}"}, {}),
        ("wrong typ", {"Authorization": f"Bearer {session_token('user-1', WEBUI_SECRET, typ='refresh')}"}, {}),
        ("revoked session stamp", {"Authorization": f"Bearer {session_token('user-1', WEBUI_SECRET, session_stamp='old')}"}, {}),
        ("unknown user", {"Authorization": f"Bearer {session_token('ghost', WEBUI_SECRET)}"}, {}),
        ("unknown api key", {"Authorization": "Bearer sk-" + "f" * 32}, {}),
        ("wrong service key", {"Authorization": "Bearer svc-wrong-service-key-000000"}, {}),
        ("tampered cookie", {}, {"token": _tamper(good)}),
        (
            "forged user headers without service key",
            {"X-OpenWebUI-User-Id": "admin-1", "X-OpenWebUI-User-Role": "admin"},
            {},
        ),
        (
            "forwarded jwt with wrong secret",
            {"Authorization": f"Bearer {SERVICE_KEY}", "X-OpenWebUI-User-Jwt": forwarded_user_jwt(USER, "nope")},
            {},
        ),
        (
            "forwarded jwt expired",
            {"Authorization": f"Bearer {SERVICE_KEY}", "X-OpenWebUI-User-Jwt": forwarded_user_jwt(USER, FORWARD_SECRET, lifetime=-5)},
            {},
        ),
        (
            "forwarded jwt wrong issuer",
            {"Authorization": f"Bearer {SERVICE_KEY}", "X-OpenWebUI-User-Jwt": forwarded_user_jwt(USER, FORWARD_SECRET, iss="evil")},
            {},
        ),
        (
            "forwarded jwt without service key",
            {"Authorization": f"Bearer {session_token('user-1', 'x')}", "X-OpenWebUI-User-Jwt": forwarded_user_jwt(USER, FORWARD_SECRET)},
            {},
        ),
    ]


@pytest.mark.parametrize(("case", "headers", "cookies"), _bad_credentials(), ids=[c[0] for c in _bad_credentials()])
def test_bad_credentials_are_refused(bff: Bff, case: str, headers: dict[str, str], cookies: dict[str, str]) -> None:
    with bff.client(headers=headers, cookies=cookies) as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code == 401, f"{case}: {answer.status_code} {answer.text}"
    error = answer.json()["error"]
    assert error["type"] == "authentication_error"
    assert "Traceback" not in answer.text


def test_a_verified_session_token_still_expires(bff: Bff) -> None:
    # The BFF keeps verified tokens (one signature check per session, not per request);
    # a kept token must still be refused from the second its exp has passed.
    token = session_token("user-1", WEBUI_SECRET, lifetime=2)
    with bff.client(token) as client:
        assert [client.get("/v1/models").status_code for _ in range(3)] == [200, 200, 200]
        time.sleep(max(0.0, jwt.get_unverified_claims(token)["exp"] - time.time()) + 1.1)  # jose accepts the exp second itself
        expired = client.get("/v1/models")
    assert expired.status_code == 401 and expired.json()["error"]["message"] == "token expired"


def test_tokens_without_exp_accepted_only_when_configured(bff_factory: BffFactory) -> None:
    lenient = bff_factory(allow_tokens_without_exp=True)
    with lenient.client(session_token("user-1", WEBUI_SECRET, lifetime=None)) as client:
        assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    ("credential", "code"),
    [
        (lambda: session_token("pending-1", WEBUI_SECRET), "account_pending"),
        (lambda: session_token("weird-1", WEBUI_SECRET), "role_not_allowed"),
    ],
    ids=["pending session", "unknown role"],
)
def test_pending_and_unknown_roles_get_403(bff: Bff, credential, code: str) -> None:
    with bff.client(credential()) as client:
        answer = client.get("/v1/models")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == code


def test_forwarded_pending_user_is_refused(bff: Bff) -> None:
    pending = {**USER, "id": "pending-9", "role": "pending"}
    headers = {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(pending, FORWARD_SECRET)}
    with bff.client(SERVICE_KEY, headers=headers) as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 403


def test_role_cache_ttl_makes_demotion_effective(bff_factory: BffFactory, openwebui_state: FakeOpenWebUIState) -> None:
    openwebui_state.add_user("demoted-1", "user")
    quick = bff_factory(role_cache_ttl_seconds=1.0)
    token = session_token("demoted-1", WEBUI_SECRET)
    with quick.client(token) as client:
        lookups = openwebui_state.lookups
        assert client.get("/v1/models").status_code == 200
        assert client.get("/v1/models").status_code == 200
        assert openwebui_state.lookups == lookups + 1, "the second call must come from the cache"
        openwebui_state.users["demoted-1"]["role"] = "pending"
        time.sleep(1.2)
        assert client.get("/v1/models").status_code == 403


def test_open_webui_unreachable_gives_503_not_500(bff_factory: BffFactory) -> None:
    from support.servers import free_port

    orphan = bff_factory(open_webui_url=f"http://127.0.0.1:{free_port()}")
    with orphan.client(session_token("user-1", WEBUI_SECRET)) as client:
        answer = client.get("/v1/models")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "role_source_unavailable"
    assert "127.0.0.1" not in answer.text
