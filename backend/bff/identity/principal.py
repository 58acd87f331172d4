"""The one typed caller identity every route receives."""

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Role(StrEnum):
    admin = "admin"
    user = "user"


class AuthMethod(StrEnum):
    session_token = "session_token"  # Open-WebUI session JWT (header or cookie)
    api_key = "api_key"  # Open-WebUI sk-... API key
    forwarded_jwt = "forwarded_jwt"  # service key + X-OpenWebUI-User-Jwt
    forwarded_headers = "forwarded_headers"  # service key + plain X-OpenWebUI-User-* headers
    service_key = "service_key"  # service key alone: no user behind it


class UserRecord(BaseModel):
    """A user as Open-WebUI knows them; role is still unchecked text."""

    model_config = ConfigDict(frozen=True)

    id: str
    email: str | None = None
    name: str | None = None
    role: str


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: str | None  # None only for a bare service key
    email: str | None = None
    name: str | None = None
    role: Role | None  # None only for a bare service key
    auth: AuthMethod
    chat_id: str | None = None  # Open-WebUI chat id, when forwarded

    @property
    def is_service_only(self) -> bool:
        return self.user_id is None

    @property
    def via_service_key(self) -> bool:
        """Called by a server-side client (Open-WebUI's backend) on a user's behalf, or by it alone."""
        return self.auth in (AuthMethod.service_key, AuthMethod.forwarded_jwt, AuthMethod.forwarded_headers)
