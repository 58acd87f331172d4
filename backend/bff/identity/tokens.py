"""Verification of the two JWT kinds Open-WebUI issues. HS256 only, always."""

from typing import Any, TypeVar

from jose import JWTError, jwt
from pydantic import BaseModel, ConfigDict, ValidationError

from bff.errors import unauthorized

ALGORITHMS = ["HS256"]
SESSION_TOKEN_TYPES = {"session", "automation", "subagent"}  # what Open-WebUI itself accepts
FORWARDED_ISSUER = "open-webui"

ClaimsT = TypeVar("ClaimsT", bound=BaseModel)


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
    try:
        return jwt.decode(token, secret, algorithms=ALGORITHMS, issuer=issuer, options={"verify_aud": False, **options})
    except JWTError as exc:
        raise unauthorized(_jwt_reason(exc)) from None


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

