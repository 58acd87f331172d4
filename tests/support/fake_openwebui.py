"""A loopback stand-in for Open-WebUI's `GET /api/v1/auths/` and `/health`.

It verifies session tokens the way Open-WebUI does (HS256 with WEBUI_SECRET_KEY,
user looked up by the `id` claim, session_stamp compared) and resolves `sk-` API
keys from its key table. Tests change users' roles, revoke stamps and count calls.
"""

from dataclasses import dataclass, field

from jose import JWTError, jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class FakeOpenWebUIState:
    secret: str
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> user id
    session_stamps: dict[str, str] = field(default_factory=dict)  # user id -> current stamp
    lookups: int = 0
    healthy: bool = True

    def add_user(self, user_id: str, role: str, api_key: str | None = None) -> dict[str, str]:
        user = {"id": user_id, "email": f"{user_id}@example.test", "name": f"User {user_id}", "role": role}
        self.users[user_id] = user
        self.session_stamps[user_id] = "stamp-1"
        if api_key:
            self.api_keys[api_key] = user_id
        return user


def create_fake_openwebui(state: FakeOpenWebUIState) -> Starlette:
    def denied() -> Response:
        return JSONResponse({"detail": "Invalid token"}, status_code=401)

    async def current_user(request: Request) -> Response:
        state.lookups += 1
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return denied()
        if token.startswith("sk-"):
            user_id = state.api_keys.get(token)
        else:
            try:
                claims = jwt.decode(token, state.secret, algorithms=["HS256"])
            except JWTError:
                return denied()
            user_id = claims.get("id")
            if claims.get("session_stamp") != state.session_stamps.get(user_id):
                return denied()
        user = state.users.get(user_id or "")
        if user is None:
            return denied()
        return JSONResponse({**user, "token": token, "token_type": "Bearer", "profile_image_url": "/user.png"})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": state.healthy}, status_code=200 if state.healthy else 503)

    return Starlette(routes=[Route("/api/v1/auths/", current_user), Route("/health", health)])
