"""Where a verified Open-WebUI credential's user, role and groups come from.

Session tokens carry no role, so every source answers "which user is this, with
which role, in which Open-WebUI groups" for a session token or an API key, and
"which groups" for a user id that the service key forwards (its signed JWT names no
groups). Answers are cached for a short TTL so a logout, demotion, revoked key or
group membership change takes effect within that TTL.

Groups are Open-WebUI's effective memberships (open-webui 0.12.4 `group_member` rows plus
the ancestors of those groups through `group.parent_group_id`, as Open-WebUI itself grants
access with `include_inherited=True`), as sorted, de-duplicated group names: the policy's
`groups:` keys are names. They never come from the request: not from a header (Open-WebUI's
`{{USER_GROUPS}}` connection-header placeholder is plain, unsigned text) nor a JWT claim.
"""

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import anyio
import httpx
import yaml
from cachetools import TTLCache
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from bff.errors import ApiError, unauthorized, unavailable
from bff.identity.principal import UserRecord
from bff.identity.tokens import SessionClaims
from bff.settings import Settings

log = logging.getLogger("bff.identity")

CACHE_SIZE = 10_000
# Open-WebUI answers group routes only for these roles (utils/auth.py VERIFIED_USER_ROLES);
# the BFF refuses every other role anyway (Identity.principal), so it asks for no groups.
_VERIFIED_ROLES = frozenset({"admin", "user"})
Groups = tuple[str, ...]
T = TypeVar("T")


class RoleSource(Protocol):
    name: str

    async def user_for_session(self, token: str, claims: SessionClaims) -> UserRecord: ...

    async def user_for_api_key(self, key: str) -> UserRecord: ...

    async def groups_for(self, user_id: str) -> Groups:
        """The Open-WebUI group names of a user the service key forwards (id from a signed JWT
        or trusted headers): looked up here, never taken from the request."""
        ...

    async def problem(self) -> str | None:
        """None when the source answers, else a short description for /health/ready."""
        ...

    async def aclose(self) -> None: ...


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _source_down(what: str) -> ApiError:
    return unavailable(f"cannot resolve the caller's role: {what}", "role_source_unavailable")


def group_names(names: Iterable[str | None]) -> Groups:
    """Sorted and de-duplicated (Open-WebUI does not make group names unique)."""
    return tuple(sorted({name for name in names if name}))


class _OpenWebUIUser(BaseModel):
    """The fields of `GET /api/v1/auths/` the BFF reads; groups are never taken from it."""

    id: str
    email: str | None = None
    name: str | None = None
    role: str


class _OpenWebUIGroup(BaseModel):
    """One entry of `GET /api/v1/users/groups` (open-webui 0.12.4 GroupModel, + membership_type)."""

    id: str
    name: str | None = None


_GROUP_LIST = TypeAdapter(list[_OpenWebUIGroup])
OWN_GROUPS_PATH = "/api/v1/users/groups"  # the caller's own groups: any verified session
INHERITED = {"include_inherited": "true"}  # effective memberships, as Open-WebUI grants access


def user_groups_path(user_id: str) -> str:
    """Another user's groups: admins only (`get_admin_user`)."""
    return f"/api/v1/users/{quote(user_id, safe='')}/groups"


OPEN_WEBUI_IDLE_SECONDS = 3.0  # longest a pooled connection to Open-WebUI stays idle


class ApiRoleSource:
    """Asks Open-WebUI itself (`GET /api/v1/auths/`), which also applies its own revocation.

    A session's groups: `GET /api/v1/users/groups?include_inherited=true` with the caller's own
    token. A forwarded user's groups: `GET /api/v1/users/{id}/groups?include_inherited=true`,
    which Open-WebUI answers only for an admin: with `admin_token` (OPEN_WEBUI_ADMIN_TOKEN);
    without one, or when Open-WebUI refuses it, forwarded users get no groups (with a warning).
    """

    name = "open_webui_api"
    warn_every_seconds = 60.0

    def __init__(self, base_url: str, ttl_seconds: float, timeout_seconds: float = 5.0, admin_token: str | None = None):
        # Idle connections dropped before Open-WebUI's uvicorn closes them (its keep-alive is 5 s,
        # httpx's expiry too): a lookup on a connection Open-WebUI is closing failed as
        # RemoteProtocolError, and the caller got 503 role_source_unavailable.
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_seconds, limits=httpx.Limits(keepalive_expiry=OPEN_WEBUI_IDLE_SECONDS)
        )
        self._cache: TTLCache[str, UserRecord] = TTLCache(CACHE_SIZE, ttl_seconds)
        self._groups: TTLCache[str, Groups] = TTLCache(CACHE_SIZE, ttl_seconds)
        self._admin_token = admin_token or None
        self._warned_at = float("-inf")
        if self._admin_token is None:
            log.warning(
                "OPEN_WEBUI_ADMIN_TOKEN is not set: users forwarded by the service key (Open-WebUI's "
                "connection) get no Open-WebUI groups, so no group policy; session tokens still get theirs"
            )

    async def user_for_session(self, token: str, claims: SessionClaims) -> UserRecord:
        user = await self._lookup(token, "s:" + (claims.jti or _digest(token)))
        if user.id != claims.id:
            raise unauthorized("token does not match the Open-WebUI user")
        return user

    async def user_for_api_key(self, key: str) -> UserRecord:
        # Open-WebUI 0.12 answers /api/v1/auths/ only for human sessions (403 "A human session
        # is required." for sk- keys), and has no other route that names a key's user and role.
        raise unauthorized("Open-WebUI API keys need the BFF's ROLE_SOURCE=db (Open-WebUI's API cannot resolve them)")

    async def groups_for(self, user_id: str) -> Groups:
        cached = self._groups.get(user_id)
        if cached is not None:
            return cached
        if self._admin_token is None:
            return ()
        response = await self._get(user_groups_path(user_id), self._admin_token, INHERITED, "group lookup")
        if response.status_code in (401, 403):
            self._warn(f"Open-WebUI refused OPEN_WEBUI_ADMIN_TOKEN ({response.status_code}): forwarded users get no groups")
            groups: Groups = ()
        else:
            groups = self._parse_groups(response)
        self._groups[user_id] = groups
        return groups

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self.warn_every_seconds:
            self._warned_at = now
            log.warning("%s", message)

    async def _get(self, path: str, credential: str, params: dict[str, str] | None, what: str) -> httpx.Response:
        try:
            return await self._http.get(path, params=params, headers={"Authorization": f"Bearer {credential}"})
        except httpx.HTTPError as exc:
            log.warning("Open-WebUI %s failed: %s", what, type(exc).__name__)
            raise _source_down("Open-WebUI is unreachable") from None

    @staticmethod
    def _unexpected(response: httpx.Response, what: str) -> ApiError:
        log.warning("Open-WebUI %s answered %s", what, response.status_code)
        return _source_down(f"Open-WebUI answered {response.status_code}")

    def _parse_groups(self, response: httpx.Response) -> Groups:
        if response.status_code != 200:
            raise self._unexpected(response, "group lookup")
        try:
            return group_names(group.name for group in _GROUP_LIST.validate_json(response.content))
        except ValidationError:
            raise _source_down("Open-WebUI answered with an unexpected body") from None

    async def _lookup(self, credential: str, cache_key: str) -> UserRecord:
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        response = await self._get("/api/v1/auths/", credential, None, "role lookup")
        if response.status_code in (401, 403):
            raise unauthorized("credentials rejected by Open-WebUI")
        if response.status_code != 200:
            raise self._unexpected(response, "role lookup")
        try:
            found = _OpenWebUIUser.model_validate_json(response.content)
        except ValidationError:
            raise _source_down("Open-WebUI answered with an unexpected body") from None
        groups: Groups = ()
        if found.role in _VERIFIED_ROLES:
            answer = await self._get(OWN_GROUPS_PATH, credential, INHERITED, "group lookup")
            if answer.status_code in (401, 403):  # revoked or demoted between the two calls
                raise unauthorized("credentials rejected by Open-WebUI")
            groups = self._parse_groups(answer)
        user = UserRecord(id=found.id, email=found.email, name=found.name, role=found.role, groups=groups)
        self._cache[cache_key] = user
        self._groups[user.id] = groups
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


# Effective memberships as open-webui 0.12.4 computes them (models/groups.py
# user_group_memberships(include_inherited=True)): direct rows of `group_member`, then each
# group's ancestors through `group.parent_group_id`. UNION (not UNION ALL) ends on cycles.
# Standard SQL: SQLite and PostgreSQL alike.
_GROUPS_OF_USER = text(
    "WITH RECURSIVE membership(group_id) AS ("
    " SELECT m.group_id FROM group_member m WHERE m.user_id = :id"
    ' UNION SELECT g.parent_group_id FROM "group" g JOIN membership ms ON g.id = ms.group_id'
    " WHERE g.parent_group_id IS NOT NULL)"
    ' SELECT DISTINCT g.name FROM "group" g JOIN membership ms ON g.id = ms.group_id WHERE g.name IS NOT NULL'
)


class _UserRow(UserRecord):
    session_stamp: str | None = None

    def record(self) -> UserRecord:
        return UserRecord(id=self.id, email=self.email, name=self.name, role=self.role, groups=self.groups)


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
        # The driver ran that in a transaction of its own (PostgreSQL): uncommitted, the setting
        # would not cover this transaction and would vanish with its rollback.
        dbapi_connection.commit()


class DbRoleSource:
    """Reads Open-WebUI's `user`, `auth`, `api_key`, `group` and `group_member` tables (schema of
    open-webui 0.12.4), read-only and with bound parameters only."""

    name = "open_webui_db"

    def __init__(self, database_url: str, ttl_seconds: float):
        self._engine = create_engine(database_url, pool_pre_ping=True)
        _make_read_only(self._engine)
        self._cache: TTLCache[str, _UserRow] = TTLCache(CACHE_SIZE, ttl_seconds)
        self._groups: TTLCache[str, Groups] = TTLCache(CACHE_SIZE, ttl_seconds)

    async def user_for_session(self, token: str, claims: SessionClaims) -> UserRecord:
        row = await self._cached("u:" + claims.id, _USER_BY_ID, {"id": claims.id})
        if row is None:
            raise unauthorized("unknown Open-WebUI user")
        if claims.session_stamp is not None and claims.session_stamp != row.session_stamp:
            raise unauthorized("session revoked in Open-WebUI")
        return row.record()

    async def user_for_api_key(self, key: str) -> UserRecord:
        row = await self._cached("k:" + _digest(key), _USER_BY_API_KEY, {"key": key, "now": int(time.time())})
        if row is None:
            raise unauthorized("unknown or expired API key")
        return row.record()

    async def groups_for(self, user_id: str) -> Groups:
        cached = self._groups.get(user_id)
        if cached is not None:
            return cached
        groups = await self._run(self._fetch_groups, user_id)
        self._groups[user_id] = groups
        return groups

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(function, *args)
        except SQLAlchemyError as exc:
            log.warning("Open-WebUI database lookup failed: %s", type(exc).__name__)
            raise _source_down("Open-WebUI's database is unreachable") from None

    def _fetch_groups(self, user_id: str) -> Groups:
        with self._engine.connect() as connection:
            return self._groups_in(connection, user_id)

    @staticmethod
    def _groups_in(connection, user_id: str) -> Groups:  # type: ignore[no-untyped-def]
        return group_names(connection.execute(_GROUPS_OF_USER, {"id": user_id}).scalars())

    async def _cached(self, cache_key: str, query, params: dict[str, object]) -> _UserRow | None:  # type: ignore[no-untyped-def]
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        row: _UserRow | None = await self._run(self._fetch_one, query, params)
        if row is not None:
            self._cache[cache_key] = row
            self._groups[row.id] = row.groups
        return row

    def _fetch_one(self, query, params: dict[str, object]) -> _UserRow | None:  # type: ignore[no-untyped-def]
        """The user and, for a role Open-WebUI verifies, their groups: two reads on one connection."""
        with self._engine.connect() as connection:
            found = connection.execute(query, params).mappings().first()
            if found is None:
                return None
            row = _UserRow.model_validate(dict(found))
            groups = self._groups_in(connection, row.id) if row.role in _VERIFIED_ROLES else ()
        return row.model_copy(update={"groups": groups})

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

    def record(self) -> UserRecord:
        return UserRecord(id=self.id, email=self.email, name=self.name, role=self.role, groups=group_names(self.groups))


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
        return user.record()

    async def user_for_api_key(self, key: str) -> UserRecord:
        user = self._by_key.get(key)
        if user is None:
            raise unauthorized("unknown API key")
        return user.record()

    async def groups_for(self, user_id: str) -> Groups:
        user = self._by_id.get(user_id)
        return user.record().groups if user is not None else ()

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
    admin_token = settings.open_webui_admin_token.get_secret_value() if settings.open_webui_admin_token else None
    return ApiRoleSource(settings.open_webui_url, settings.role_cache_ttl_seconds, admin_token=admin_token)
