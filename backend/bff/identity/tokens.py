"""Verification of the two JWT kinds Open-WebUI issues. HS256 only, always."""

import time
from typing import Any, TypeVar

from cachetools import LRUCache
from jose import JWTError, jwt
from pydantic import BaseModel, ConfigDict, ValidationError

from bff.errors import unauthorized

ALGORITHMS = ["HS256"]
SESSION_TOKEN_TYPES = {"session", "automation", "subagent"}  # what Open-WebUI itself accepts
FORWARDED_ISSUER = "open-webui"

ClaimsT = TypeVar("ClaimsT", bound=BaseModel)

# A session token is sent with every request of its session: its verified claims are kept
# (by the exact token, secret and checks) so the signature is checked once, not per request;
# expiry is still checked on every use.
_verified: LRUCache[tuple[str, str, str | None, tuple[tuple[str, bool], ...]], dict[str, Any]] = LRUCache(maxsize=4096)


class SessionClaims(BaseModel):
    """Open-WebUI session token claims; older releases carry only `id` (+ `exp`)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    typ: str = "session"
    jti: str | None = None
    session_stamp: str | None = None
    exp: int | None = None


class ForwardedUserClaims(BaseModel):
    """Claims of X-OpenWebUI-User-Jwt, minted per request by Open-WebUI."""

    model_config = ConfigDict(extra="ignore")

    sub: str
    email: str | None = None
    name: str | None = None
    role: str
    exp: int


def _decode(token: str, secret: str, options: dict[str, bool], issuer: str | None = None) -> dict[str, Any]:
    key = (token, secret, issuer, tuple(sorted(options.items())))
    payload = _verified.get(key)
    if payload is not None and _unexpired(payload):
        return payload
    try:
        payload = jwt.decode(token, secret, algorithms=ALGORITHMS, issuer=issuer, options={"verify_aud": False, **options})
    except JWTError as exc:
        _verified.pop(key, None)
        raise unauthorized(_jwt_reason(exc)) from None
    _verified[key] = payload
    return payload


def _unexpired(payload: dict[str, Any]) -> bool:
    exp = payload.get("exp")
    return exp is None or (isinstance(exp, int | float) and time.time() < exp)


def _jwt_reason(exc: JWTError) -> str:
    text = str(exc).lower()
    if "expired" in text:
        return "token expired"
    if "issuer" in text:
        return "token issuer not accepted"
    return "invalid token"


def verify_session_token(token: str, secret: str, allow_without_exp: bool) -> SessionClaims:
    payload = _decode(token, secret, {"require_exp": not allow_without_exp})
    claims = _parse(SessionClaims, payload)
    if not claims.id or claims.typ not in SESSION_TOKEN_TYPES:
        raise unauthorized("invalid token")
    return claims


def verify_forwarded_user(token: str, secret: str) -> ForwardedUserClaims:
    payload = _decode(token, secret, {"require_exp": True, "require_iss": True, "require_sub": True}, FORWARDED_ISSUER)
    claims = _parse(ForwardedUserClaims, payload)
    if not claims.sub:
        raise unauthorized("invalid forwarded user token")
    return claims


def _parse(model: type[ClaimsT], payload: dict[str, Any]) -> ClaimsT:
    try:
        return model.model_validate(payload)
    except ValidationError:
        raise unauthorized("token is missing required claims") from None

