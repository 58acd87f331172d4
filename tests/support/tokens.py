"""Mints credentials exactly as Open-WebUI 0.12 does (claims in shared/DESIGN.md)."""

import time
import uuid
from typing import Any

from jose import jwt


def session_token(user_id: str | None, secret: str, lifetime: int | None = 3600, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "typ": "session",
        "auth_method": "password",
        "auth_time": now,
        "session_stamp": "stamp-1",
        "mfa_verified": False,
        "jti": str(uuid.uuid4()),
        "iat": now,
    }
    if user_id is not None:
        claims["id"] = user_id
    if lifetime is not None:
        claims["exp"] = now + lifetime
    claims.update(overrides)
    return jwt.encode(claims, secret, algorithm="HS256")


def forwarded_user_jwt(user: dict[str, str], secret: str, lifetime: int = 300, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": user["id"],
        "email": user["email"],
        "name": user["name"],
        "role": user["role"],
        "iss": "open-webui",
        "iat": now,
        "exp": now + lifetime,
        **overrides,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
