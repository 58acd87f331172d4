"""Where a verified Open-WebUI credential's user and role come from.

Session tokens carry no role, so every source answers "which user is this, with
which role" for a session token or an API key. Answers are cached for a short TTL
so a logout, demotion or revoked key takes effect within that TTL.
"""

import hashlib
import logging
import time
from pathlib import Path
from typing import Protocol

import anyio
import httpx
import yaml
from cachetools import TTLCache
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from bff.errors import ApiError, unauthorized, unavailable
from bff.identity.principal import UserRecord
from bff.identity.tokens import SessionClaims
from bff.settings import Settings

log = logging.getLogger("bff.identity")

CACHE_SIZE = 10_000


class RoleSource(Protocol):
    name: str

    async def user_for_session(self, token: str, claims: SessionClaims) -> UserRecord: ...

    async def user_for_api_key(self, key: str) -> UserRecord: ...

    async def problem(self) -> str | None:
        """None when the source answers, else a short description for /health/ready."""
        ...

    async def aclose(self) -> None: ...


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _source_down(what: str) -> ApiError:
    return unavailable(f"cannot resolve the caller's role: {what}", "role_source_unavailable")


class ApiRoleSource:
    """Asks Open-WebUI itself (`GET /api/v1/auths/`), which also applies its own revocation."""

    name = "open_webui_api"

    def __init__(self, base_url: str, ttl_seconds: float, timeout_seconds: float = 5.0):
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_seconds)
        self._cache: TTLCache[str, UserRecord] = TTLCache(CACHE_SIZE, ttl_seconds)

    async def user_for_session(self, token: str, claims: SessionClaims) -> UserRecord:
        user = await self._lookup(token, "s:" + (claims.jti or _digest(token)))
        if user.id != claims.id:
            raise unauthorized("token does not match the Open-WebUI user")
        return user

    async def user_for_api_key(self, key: str) -> UserRecord:
        # Open-WebUI 0.12 answers /api/v1/auths/ only for human sessions (403 "A human session
        # is required." for sk- keys), and has no other route that names a key's user and role.
        raise unauthorized("Open-WebUI API keys need the BFF's ROLE_SOURCE=db (Open-WebUI's API cannot resolve them)")

    async def _lookup(self, credential: str, cache_key: str) -> UserRecord:
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        try:
            response = await self._http.get("/api/v1/auths/", headers={"Authorization": f"Bearer {credential}"})
        except httpx.HTTPError as exc:
            log.warning("Open-WebUI role lookup failed: %s", type(exc).__name__)
            raise _source_down("Open-WebUI is unreachable") from None
        if response.status_code in (401, 403):
            raise unauthorized("credentials rejected by Open-WebUI")
        if response.status_code != 200:
            log.warning("Open-WebUI role lookup answered %s", response.status_code)
            raise _source_down(f"Open-WebUI answered {response.status_code}")
        try:
            user = UserRecord.model_validate_json(response.content)
        except ValidationError:
            raise _source_down("Open-WebUI answered with an unexpected body") from None
        self._cache[cache_key] = user
        return user

    async def problem(self) -> str | None:
        try:
            response = await self._http.get("/health")
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        return None if response.status_code == 200 else f"health answered {response.status_code}"

    async def aclose(self) -> None:
        await self._http.aclose()


_USER_BY_ID = text(
    'SELECT u.id, u.email, u.name, u.role, a.session_stamp FROM "user" u LEFT JOIN auth a ON a.id = u.id WHERE u.id = :id'
)
_USER_BY_API_KEY = text(
    'SELECT u.id, u.email, u.name, u.role FROM "user" u JOIN api_key k ON k.user_id = u.id '
    "WHERE k.key = :key AND (k.expires_at IS NULL OR k.expires_at > :now)"
)


class _UserRow(UserRecord):
    session_stamp: str | None = None


def _make_read_only(engine: Engine) -> None:
    """Every connection refuses writes: the BFF only ever reads Open-WebUI's tables."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA query_only = ON")
        elif engine.dialect.name == "postgresql":
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.close()


class DbRoleSource:
    """Reads Open-WebUI's `user`, `auth` and `api_key` tables (schema of open-webui 0.12)."""

    name = "open_webui_db"

    def __init__(self, database_url: str, ttl_seconds: float):
        self._engine = create_engine(database_url, pool_pre_ping=True)
        _make_read_only(self._engine)
        self._cache: TTLCache[str, _UserRow] = TTLCache(CACHE_SIZE, ttl_seconds)

    async def user_for_session(self, token: str, claims: SessionClaims) -> UserRecord:
        row = await self._cached("u:" + claims.id, _USER_BY_ID, {"id": claims.id})
        if row is None:
            raise unauthorized("unknown Open-WebUI user")
        if claims.session_stamp is not None and claims.session_stamp != row.session_stamp:
            raise unauthorized("session revoked in Open-WebUI")
        return UserRecord(id=row.id, email=row.email, name=row.name, role=row.role)

    async def user_for_api_key(self, key: str) -> UserRecord:
        row = await self._cached("k:" + _digest(key), _USER_BY_API_KEY, {"key": key, "now": int(time.time())})
        if row is None:
            raise unauthorized("unknown or expired API key")
        return UserRecord(id=row.id, email=row.email, name=row.name, role=row.role)

    async def _cached(self, cache_key: str, query, params: dict[str, object]) -> _UserRow | None:  # type: ignore[no-untyped-def]
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        try:
            row = await anyio.to_thread.run_sync(self._fetch_one, query, params)
        except SQLAlchemyError as exc:
            log.warning("Open-WebUI database lookup failed: %s", type(exc).__name__)
            raise _source_down("Open-WebUI's database is unreachable") from None
        if row is not None:
            self._cache[cache_key] = row
        return row

    def _fetch_one(self, query, params: dict[str, object]) -> _UserRow | None:  # type: ignore[no-untyped-def]
        with self._engine.connect() as connection:
            row = connection.execute(query, params).mappings().first()
        return _UserRow.model_validate(dict(row)) if row is not None else None

    def _ping(self) -> None:
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def problem(self) -> str | None:
        try:
            await anyio.to_thread.run_sync(self._ping)
        except SQLAlchemyError as exc:
            return f"unreachable ({type(exc).__name__})"
        return None

    async def aclose(self) -> None:
        self._engine.dispose()


class StaticUser(UserRecord):
    api_keys: list[str] = []


class StaticRoles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[StaticUser]


class StaticRoleSource:
    """A YAML map of dev users, for local development only (BFF_DEV_MODE)."""

    name = "static_file"

    def __init__(self, path: Path):
        try:
            roles = StaticRoles.model_validate(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"static roles file {path}: {exc}") from exc
        self._by_id = {user.id: user for user in roles.users}
        self._by_key = {key: user for user in roles.users for key in user.api_keys}

    async def user_for_session(self, token: str, claims: SessionClaims) -> UserRecord:
        user = self._by_id.get(claims.id)
        if user is None:
            raise unauthorized("unknown user")
        return UserRecord(id=user.id, email=user.email, name=user.name, role=user.role)

    async def user_for_api_key(self, key: str) -> UserRecord:
        user = self._by_key.get(key)
        if user is None:
            raise unauthorized("unknown API key")
        return UserRecord(id=user.id, email=user.email, name=user.name, role=user.role)

    async def problem(self) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def build_role_source(settings: Settings) -> RoleSource:
    if settings.role_source == "db":
        assert settings.open_webui_database_url is not None  # enforced by Settings
        return DbRoleSource(settings.open_webui_database_url.get_secret_value(), settings.role_cache_ttl_seconds)
    if settings.role_source == "static":
        return StaticRoleSource(settings.static_roles_file)
    return ApiRoleSource(settings.open_webui_url, settings.role_cache_ttl_seconds)
