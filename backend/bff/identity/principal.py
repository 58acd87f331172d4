"""The one typed caller identity every route receives."""

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from bff.errors import forbidden


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
    groups: tuple[str, ...] = ()  # Open-WebUI group names, sorted: from the role source, never from the request


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: str | None  # None only for a bare service key
    email: str | None = None
    name: str | None = None
    role: Role | None  # None only for a bare service key
    groups: tuple[str, ...] = ()  # Open-WebUI group names, sorted
    auth: AuthMethod
    chat_id: str | None = None  # Open-WebUI chat id, when forwarded

    @property
    def is_service_only(self) -> bool:
        return self.user_id is None

    @property
    def via_service_key(self) -> bool:
        """Called by a server-side client (Open-WebUI's backend) on a user's behalf, or by it alone."""
        return self.auth in (AuthMethod.service_key, AuthMethod.forwarded_jwt, AuthMethod.forwarded_headers)


class Identity(BaseModel):
    """Whom verified credentials name, before their role is judged."""

    model_config = ConfigDict(frozen=True)

    user: UserRecord | None  # None only for a bare service key
    auth: AuthMethod
    chat_id: str | None = None

    @property
    def user_id(self) -> str | None:
        return self.user.id if self.user else None

    @property
    def role(self) -> str | None:
        return self.user.role if self.user else None

    def principal(self) -> Principal:
        """The caller, or 403 for a pending account or a role the gateway does not know."""
        if self.user is None:
            return Principal(user_id=None, role=None, auth=self.auth)
        if self.user.role == "pending":
            raise forbidden("your Open-WebUI account is pending approval", "account_pending")
        try:
            role = Role(self.user.role)
        except ValueError:
            raise forbidden("your Open-WebUI role is not allowed to use the gateway", "role_not_allowed") from None
        user = self.user
        return Principal(
            user_id=user.id, email=user.email, name=user.name, role=role, groups=user.groups, auth=self.auth, chat_id=self.chat_id
        )
