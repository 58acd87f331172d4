"""The few Open-WebUI 0.12.4 API calls the suite makes, as its own UI makes them.

Routes (open_webui/routers/auths.py, users.py, main.py): the first sign-up becomes the
admin; an admin adds users with a role; an admin changes a user's role; models and chat
go through Open-WebUI's own /api routes, which call the BFF as their OpenAI connection.
"""

from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "Test-password-1234"


@dataclass(frozen=True)
class Account:
    """An Open-WebUI user and the session token Open-WebUI issued to them."""

    id: str
    email: str
    role: str
    token: str


class OpenWebUIApi:
    def __init__(self, url: str):
        self.url = url

    def _client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def sign_up(self, name: str, email: str) -> Account:
        """POST /api/v1/auths/signup: on an empty database this creates the admin."""
        with self._client() as client:
            answer = client.post("/api/v1/auths/signup", json={"name": name, "email": email, "password": PASSWORD})
        answer.raise_for_status()
        body = answer.json()
        return Account(id=body["id"], email=body["email"], role=body["role"], token=body["token"])

    def add_user(self, admin: Account, name: str, email: str, role: str) -> Account:
        """POST /api/v1/auths/add (admin only), then the user signs in for a session token of their own."""
        with self._client(admin.token) as client:
            added = client.post("/api/v1/auths/add", json={"name": name, "email": email, "password": PASSWORD, "role": role})
        added.raise_for_status()
        return self.sign_in(email)

    def sign_in(self, email: str) -> Account:
        with self._client() as client:
            answer = client.post("/api/v1/auths/signin", json={"email": email, "password": PASSWORD})
        answer.raise_for_status()
        body = answer.json()
        return Account(id=body["id"], email=body["email"], role=body["role"], token=body["token"])

    def set_role(self, admin: Account, user: Account, role: str) -> None:
        """POST /api/v1/users/{id}/update (admin only); the user's session token stays valid."""
        with self._client(admin.token) as client:
            answer = client.post(f"/api/v1/users/{user.id}/update", json={"role": role})
        answer.raise_for_status()
        assert answer.json()["role"] == role

    def model_ids(self, account: Account) -> set[str]:
        """GET /api/models as the UI loads it; Open-WebUI asks the BFF with the user's signed identity."""
        with self._client(account.token) as client:
            answer = client.get("/api/models")
        answer.raise_for_status()
        return {model["id"] for model in answer.json()["data"]}

    def chat(self, account: Account, model: str, content: str = "Say hello") -> httpx.Response:
        """POST /api/chat/completions, not streamed, no saved chat: Open-WebUI answers with the BFF's reply."""
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}], "stream": False}
        with self._client(account.token) as client:
            return client.post("/api/chat/completions", json=body)
