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

Feedback (ratings) as open-webui 0.12.4 serves them (routers/evaluations.py, models/feedbacks.py):
- `POST /api/v1/evaluations/feedback` (verified user; FeedbackForm, extra fields dropped: the user,
  id and times are the server's), `GET|POST|DELETE /api/v1/evaluations/feedback/{id}` (admins any,
  users their own; 404 otherwise);
- `GET /api/v1/evaluations/feedbacks/list?order_by=&direction=&page=` (admins): 30 per page, page
  from 1, `{items: [FeedbackUserResponse (no snapshot, with user)], total}`, only rows whose user
  exists (an inner join); without order_by newest `created_at` first;
- `GET /api/v1/evaluations/feedbacks/all/ids` (admins): `[{id, user_id, created_at, updated_at}]`;
- any other GET under /api/v1/evaluations/ falls through to the SPA: 200 text/html (as 0.12.4
  answers e.g. `/feedbacks/all`, which does not exist).
Times are epoch seconds; an edit replaces data, meta and snapshot and sets updated_at to now.
`evaluations_fault` makes the evaluation routes fail ("503", "hang", "html") for outage tests.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from jose import JWTError, jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

ACCESS_PROHIBITED = "You do not have permission to access this resource. Please contact your administrator for assistance."
INVALID_TOKEN = "Your session has expired or the token is invalid. Please sign in again."
VERIFIED_ROLES = ("user", "admin")
PAGE_ITEM_COUNT = 30  # routers/evaluations.py


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
    feedbacks: dict[str, "FakeFeedback"] = field(default_factory=dict)
    evaluation_calls: list[str] = field(default_factory=list)  # paths (with query) of evaluation GETs
    evaluations_fault: str | None = None  # "503", "hang" (never answers in time) or "html"

    def add_feedback(
        self, user_id: str, rating: int | str, chat_id: str, message_id: str, model_id: str = "",
        reason: str | None = None, detail: int | None = None, comment: str = "", tags: list[str] | None = None,
    ) -> "FakeFeedback":
        """What the UI's feedbackHandler posts (ResponseMessage.svelte), stored as POST /feedback does."""
        feedback = FakeFeedback(
            id=str(uuid.uuid4()), user_id=user_id, data=ui_rating(rating, model_id, reason, detail, comment, tags),
            meta=ui_meta(chat_id, message_id, model_id), sequence=len(self.feedbacks),
        )
        self.feedbacks[feedback.id] = feedback
        return feedback

    def update_feedback(self, feedback_id: str, **changes: Any) -> "FakeFeedback":
        """POST /feedback/{id}: `data` is replaced as a whole (changes are keys of data), updated_at = now."""
        feedback = self.feedbacks[feedback_id]
        feedback.data = {**feedback.data, **changes}
        feedback.updated_at = int(time.time())
        return feedback

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


def ui_rating(
    rating: int | str, model_id: str = "", reason: str | None = None, detail: int | None = None,
    comment: str = "", tags: list[str] | None = None,
) -> dict[str, Any]:
    """`data` as the 0.12.4 UI builds it (RatingData, extra allowed: tags, details)."""
    return {"rating": rating, "model_id": model_id, "sibling_model_ids": None, "reason": reason, "comment": comment,
            "tags": tags or [], "details": {"rating": detail}}  # fmt: skip


def ui_meta(chat_id: str, message_id: str, model_id: str = "") -> dict[str, Any]:
    return {"arena": False, "model_id": model_id, "message_id": message_id, "message_index": 1, "chat_id": chat_id,
            "base_models": {model_id: None}}  # fmt: skip


@dataclass
class FakeFeedback:
    id: str
    user_id: str
    data: dict[str, Any]
    meta: dict[str, Any]
    type: str = "rating"
    snapshot: dict[str, Any] = field(default_factory=lambda: {"chat": {"id": "", "chat": {"history": {"messages": {}}}}})
    created_at: int = field(default_factory=lambda: int(time.time()))
    updated_at: int = field(default_factory=lambda: int(time.time()))
    sequence: int = 0  # ties of the one-second times resolved by creation order

    def model(self) -> dict[str, Any]:
        """FeedbackModel.model_dump() (with snapshot)."""
        return {"id": self.id, "user_id": self.user_id, "version": 0, "type": self.type, "data": self.data,
                "meta": self.meta, "snapshot": self.snapshot, "created_at": self.created_at, "updated_at": self.updated_at}  # fmt: skip


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

    async def evaluation_fault(request: Request) -> Response | None:
        if request.method == "GET":
            state.evaluation_calls.append(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if state.evaluations_fault == "503":
            return JSONResponse({"detail": "Service Unavailable"}, status_code=503)
        if state.evaluations_fault == "hang":
            await asyncio.sleep(10)
        if state.evaluations_fault == "html":
            return spa(request)
        return None

    def spa(_: Request) -> Response:
        """Open-WebUI's SPA fallback: any unknown path answers 200 text/html."""
        return HTMLResponse("<!doctype html><html><head><title>Open WebUI</title></head><body></body></html>")

    async def unknown_evaluation(request: Request) -> Response:
        return await evaluation_fault(request) or spa(request)

    def user_response(user_id: str) -> dict[str, Any]:
        user = state.users[user_id]
        now = int(time.time())
        return {"id": user["id"], "name": user["name"], "email": user["email"], "role": user["role"],
                "last_active_at": now, "updated_at": now, "created_at": now}  # fmt: skip

    async def feedback_list(request: Request) -> Response:
        if (fault := await evaluation_fault(request)) is not None:
            return fault
        admin = verified(request, admin=True)
        if isinstance(admin, Response):
            return admin
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            return JSONResponse({"detail": [{"type": "int_parsing", "loc": ["query", "page"]}]}, status_code=422)
        rows = [feedback for feedback in state.feedbacks.values() if feedback.user_id in state.users]  # join user
        order_by, direction = request.query_params.get("order_by"), request.query_params.get("direction")
        if order_by == "updated_at":
            rows.sort(key=lambda f: (f.updated_at, f.sequence), reverse=direction != "asc")
        elif order_by is None and direction is None:
            rows.sort(key=lambda f: (f.created_at, f.sequence), reverse=True)
        chosen = rows[(page - 1) * PAGE_ITEM_COUNT : page * PAGE_ITEM_COUNT]
        items = []
        for feedback in chosen:
            item = feedback.model()
            item.pop("snapshot")
            items.append({**item, "user": user_response(feedback.user_id)})
        return JSONResponse({"items": items, "total": len(rows)})

    async def feedback_ids(request: Request) -> Response:
        if (fault := await evaluation_fault(request)) is not None:
            return fault
        admin = verified(request, admin=True)
        if isinstance(admin, Response):
            return admin
        rows = sorted(state.feedbacks.values(), key=lambda f: (f.updated_at, f.sequence), reverse=True)
        return JSONResponse([{"id": f.id, "user_id": f.user_id, "created_at": f.created_at, "updated_at": f.updated_at} for f in rows])

    async def create_feedback(request: Request) -> Response:
        user = verified(request)
        if isinstance(user, Response):
            return user
        form = await request.json()
        if not isinstance(form, dict) or not isinstance(form.get("type"), str):
            return JSONResponse({"detail": [{"type": "missing", "loc": ["body", "type"]}]}, status_code=422)
        feedback = FakeFeedback(
            id=str(uuid.uuid4()), user_id=user["id"], type=form["type"], data=form.get("data") or {},
            meta=form.get("meta") or {}, snapshot=form.get("snapshot") or {}, sequence=len(state.feedbacks),
        )  # id, user_id, version and times from the client are ignored (extra='ignore')
        state.feedbacks[feedback.id] = feedback
        return JSONResponse(feedback.model())

    async def one_feedback(request: Request) -> Response:
        if request.method == "GET" and (fault := await evaluation_fault(request)) is not None:
            return fault
        user = verified(request)
        if isinstance(user, Response):
            return user
        feedback = state.feedbacks.get(request.path_params["feedback_id"])
        if feedback is None or (user["role"] != "admin" and feedback.user_id != user["id"]):
            return JSONResponse({"detail": "We could not find what you're looking for :/"}, status_code=404)
        if request.method == "DELETE":
            del state.feedbacks[feedback.id]
            return JSONResponse(True)
        if request.method == "POST":
            form = await request.json()
            for key in ("data", "meta", "snapshot"):
                if form.get(key) is not None:
                    setattr(feedback, key, form[key])
            feedback.updated_at = int(time.time())
        return JSONResponse(feedback.model())

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
            Route("/api/v1/evaluations/feedbacks/list", feedback_list),
            Route("/api/v1/evaluations/feedbacks/all/ids", feedback_ids),
            Route("/api/v1/evaluations/feedback", create_feedback, methods=["POST"]),
            Route("/api/v1/evaluations/feedback/{feedback_id}", one_feedback, methods=["GET", "POST", "DELETE"]),
            Route("/api/v1/evaluations/{rest:path}", unknown_evaluation),
            Route("/health", health),
        ]
    )
