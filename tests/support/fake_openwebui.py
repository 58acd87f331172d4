"""A loopback stand-in for Open-WebUI's `GET /api/v1/auths/` and `/health`.

It verifies session tokens the way Open-WebUI does (HS256 with WEBUI_SECRET_KEY,
user looked up by the `id` claim, session_stamp compared) and, like open-webui 0.12.4,
refuses `sk-` API keys there (a human session is required). Tests change users' roles,
revoke stamps and count calls.
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
    session_stamps: dict[str, str] = field(default_factory=dict)  # user id -> current stamp
    lookups: int = 0
    healthy: bool = True

    def add_user(self, user_id: str, role: str) -> dict[str, str]:
        user = {"id": user_id, "email": f"{user_id}@example.test", "name": f"User {user_id}", "role": role}
        self.users[user_id] = user
        self.session_stamps[user_id] = "stamp-1"
        return user


def create_fake_openwebui(state: FakeOpenWebUIState) -> Starlette:
    def denied() -> Response:
        return JSONResponse({"detail": "Invalid token"}, status_code=401)

    async def current_user(request: Request) -> Response:
        state.lookups += 1
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return denied()
        if token.startswith("sk-"):  # as open-webui 0.12.4's get_human_user
            return JSONResponse({"detail": "A human session is required."}, status_code=403)
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
