"""A loopback stand-in for Open-WebUI 0.12.4's `GET /api/v1/auths/`, its group routes and `/health`.

It verifies session tokens the way Open-WebUI does (HS256 with WEBUI_SECRET_KEY,
user looked up by the `id` claim, session_stamp compared) and, like open-webui 0.12.4,
refuses `sk-` API keys on /api/v1/auths/ (a human session is required) while its other
routes accept the API keys in `api_keys` (utils/auth.py get_current_user). Tests change
users' roles, revoke stamps, manage groups and count calls.

Groups as open-webui 0.12.4 serves them (routers/users.py, routers/groups.py, models/groups.py):
- `GET /api/v1/users/groups[?include_inherited=true]`: the caller's own groups, any verified
  user (role user or admin; pending gets 401); with include_inherited also the ancestors of
  those groups (`parent_group_id`), each tagged `membership_type` direct | inherited;
- `GET /api/v1/users/{user_id}/groups[?include_inherited=true]`: the same for any user, admins only;
- `GET /api/v1/groups/`: admins every group, others the groups they are (effective) members of;
- `POST /api/v1/groups/create`, `/api/v1/groups/id/{id}/users/add`, `.../users/remove`: admins only.
Entries are GroupModel dumps (+ member_count on /groups), newest `updated_at` first.
"""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from jose import JWTError, jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ACCESS_PROHIBITED = "You do not have permission to access this resource. Please contact your administrator for assistance."
INVALID_TOKEN = "Your session has expired or the token is invalid. Please sign in again."
VERIFIED_ROLES = ("user", "admin")


@dataclass
class FakeGroup:
    id: str
    name: str
    owner_id: str
    parent_group_id: str | None = None
    members: set[str] = field(default_factory=set)
    created_at: int = field(default_factory=lambda: int(time.time()))
    updated_at: int = field(default_factory=lambda: int(time.time()))
    sequence: int = 0  # ties of updated_at (one-second resolution) resolved by creation order

    def model(self) -> dict[str, Any]:
        """open-webui 0.12.4 GroupModel.model_dump()."""
        return {
            "parent_group_id": self.parent_group_id,
            "id": self.id,
            "user_id": self.owner_id,
            "name": self.name,
            "description": "",
            "data": {"config": {"share": True}},
            "meta": None,
            "permissions": None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class FakeOpenWebUIState:
    secret: str
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    session_stamps: dict[str, str] = field(default_factory=dict)  # user id -> current stamp
    api_keys: dict[str, str] = field(default_factory=dict)  # sk- key -> user id (API keys enabled)
    groups: dict[str, FakeGroup] = field(default_factory=dict)
    lookups: int = 0  # calls of /api/v1/auths/
    group_lookups: int = 0  # calls of the /api/v1/users/.../groups routes
    healthy: bool = True

    def add_user(self, user_id: str, role: str) -> dict[str, str]:
        user = {"id": user_id, "email": f"{user_id}@example.test", "name": f"User {user_id}", "role": role}
        self.users[user_id] = user
        self.session_stamps[user_id] = "stamp-1"
        return user

    def add_group(self, name: str, members: tuple[str, ...] = (), parent: str | None = None) -> FakeGroup:
        group = FakeGroup(
            id=str(uuid.uuid4()), name=name, owner_id="admin-1", parent_group_id=parent,
            members=set(members), sequence=len(self.groups),
        )
        self.groups[group.id] = group
        return group

    def set_members(self, group_id: str, members: set[str]) -> None:
        group = self.groups[group_id]
        group.members = set(members)
        group.updated_at = int(time.time())

    def memberships(self, user_id: str, include_inherited: bool) -> list[tuple[FakeGroup, str]]:
        """(group, membership_type) as models/groups.py user_group_memberships, newest first."""
        direct = [group for group in self.groups.values() if user_id in group.members]
        found = {group.id: "direct" for group in direct}
        if include_inherited:
            pending = [group.parent_group_id for group in direct]
            while pending:
                parent_id = pending.pop()
                if parent_id is None or parent_id in found or parent_id not in self.groups:
                    continue
                found[parent_id] = "inherited"
                pending.append(self.groups[parent_id].parent_group_id)
        chosen = [self.groups[group_id] for group_id in found]
        chosen.sort(key=lambda group: (-group.updated_at, -group.sequence))
        return [(group, found[group.id]) for group in chosen]


def create_fake_openwebui(state: FakeOpenWebUIState) -> Starlette:
    def denied(detail: str = "Invalid token") -> Response:
        return JSONResponse({"detail": detail}, status_code=401)

    def bearer(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    def session_user(token: str) -> dict[str, str] | None:
        try:
            claims = jwt.decode(token, state.secret, algorithms=["HS256"])
        except JWTError:
            return None
        user_id = claims.get("id")
        if claims.get("session_stamp") != state.session_stamps.get(user_id):
            return None
        return state.users.get(user_id or "")

    def current_user(request: Request) -> dict[str, str] | Response:
        """utils/auth.py get_current_user: a session token or an enabled API key."""
        token = bearer(request)
        if token is None:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        if token.startswith("sk-"):
            user_id = state.api_keys.get(token)
            user = state.users.get(user_id or "")
            return user if user is not None else denied(INVALID_TOKEN)
        user = session_user(token)
        return user if user is not None else denied()

    def verified(request: Request, admin: bool = False) -> dict[str, str] | Response:
        """get_verified_user / get_admin_user: 401 with ACCESS_PROHIBITED for other roles."""
        user = current_user(request)
        if isinstance(user, Response):
            return user
        if user["role"] not in (("admin",) if admin else VERIFIED_ROLES):
            return denied(ACCESS_PROHIBITED)
        return user

    async def auths(request: Request) -> Response:
        state.lookups += 1
        token = bearer(request)
        if token is None:
            return denied()
        if token.startswith("sk-"):  # as open-webui 0.12.4's get_human_user
            return JSONResponse({"detail": "A human session is required."}, status_code=403)
        user = session_user(token)
        if user is None:
            return denied()
        return JSONResponse({**user, "token": token, "token_type": "Bearer", "profile_image_url": "/user.png"})

    def groups_of(user_id: str, request: Request) -> Response:
        """routers/users.py user_groups_response."""
        include_inherited = request.query_params.get("include_inherited", "false").lower() in ("true", "1", "yes", "on")
        rows = state.memberships(user_id, include_inherited)
        if not include_inherited:
            return JSONResponse([group.model() for group, _ in rows])
        return JSONResponse([{**group.model(), "membership_type": kind} for group, kind in rows])

    async def own_groups(request: Request) -> Response:
        state.group_lookups += 1
        user = verified(request)
        return user if isinstance(user, Response) else groups_of(user["id"], request)

    async def user_groups(request: Request) -> Response:
        state.group_lookups += 1
        admin = verified(request, admin=True)
        return admin if isinstance(admin, Response) else groups_of(request.path_params["user_id"], request)

    async def list_groups(request: Request) -> Response:
        user = verified(request)
        if isinstance(user, Response):
            return user
        if user["role"] == "admin":
            chosen = sorted(state.groups.values(), key=lambda group: (-group.updated_at, -group.sequence))
        else:
            chosen = [group for group, _ in state.memberships(user["id"], include_inherited=True)]
        return JSONResponse([{**group.model(), "member_count": len(group.members)} for group in chosen])

    async def create_group(request: Request) -> Response:
        admin = verified(request, admin=True)
        if isinstance(admin, Response):
            return admin
        form = await request.json()
        group = state.add_group(form["name"], parent=form.get("parent_group_id"))
        group.owner_id = admin["id"]
        return JSONResponse({**group.model(), "member_count": 0})

    async def change_members(request: Request) -> Response:
        admin = verified(request, admin=True)
        if isinstance(admin, Response):
            return admin
        group = state.groups.get(request.path_params["group_id"])
        if group is None:
            return JSONResponse({"detail": "Group not found."}, status_code=404)
        change = request.path_params["change"]
        if change not in ("add", "remove"):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        user_ids = set((await request.json()).get("user_ids") or [])
        if change == "add":
            state.set_members(group.id, group.members | (user_ids & set(state.users)))  # get_valid_user_ids
        else:
            state.set_members(group.id, group.members - user_ids)
        return JSONResponse({**group.model(), "member_count": len(group.members)})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": state.healthy}, status_code=200 if state.healthy else 503)

    return Starlette(
        routes=[
            Route("/api/v1/auths/", auths),
            Route("/api/v1/users/groups", own_groups),
            Route("/api/v1/users/{user_id}/groups", user_groups),
            Route("/api/v1/groups/", list_groups),
            Route("/api/v1/groups/create", create_group, methods=["POST"]),
            Route("/api/v1/groups/id/{group_id}/users/{change}", change_members, methods=["POST"]),
            Route("/health", health),
        ]
    )
