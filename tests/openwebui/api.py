"""The few Open-WebUI 0.12.4 API calls the suite makes, as its own UI makes them.

Routes (open_webui/routers/auths.py, users.py, main.py): the first sign-up becomes the
admin; an admin adds users with a role; an admin changes a user's role; models and chat
go through Open-WebUI's own /api routes, which call the BFF as their OpenAI connection.
Files, knowledge, audio (routers/files.py, knowledge.py, audio/) and the Action route
(main.py /api/chat/actions/{id}) call the BFF through the connections openwebui.env sets.
Groups (routers/groups.py, users.py): an admin creates a group and adds or removes members;
each user reads their own groups. API keys (routers/auths.py): the admin switches them on in
the admin settings (ENABLE_API_KEYS) and creates their own key.
"""

import time
import uuid
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

    def create_group(self, admin: Account, name: str) -> str:
        """POST /api/v1/groups/create (admin only), as the admin panel's Groups tab creates one."""
        answer = self.call(admin, "POST", "/api/v1/groups/create", json={"name": name, "description": f"{name} (test)"})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    def set_group_member(self, admin: Account, group_id: str, user: Account, member: bool) -> None:
        """POST /api/v1/groups/id/{id}/users/add or .../users/remove (admin only)."""
        change = "add" if member else "remove"
        answer = self.call(admin, "POST", f"/api/v1/groups/id/{group_id}/users/{change}", json={"user_ids": [user.id]})
        assert answer.status_code == 200, answer.text

    def enable_api_keys(self, admin: Account) -> None:
        """Admin Settings > General > API Keys: GET then POST /api/v1/auths/admin/config with
        ENABLE_API_KEYS on, as the admin panel saves it (the whole form, one field changed)."""
        config = self.call(admin, "GET", "/api/v1/auths/admin/config")
        assert config.status_code == 200, config.text
        saved = self.call(admin, "POST", "/api/v1/auths/admin/config", json={**config.json(), "ENABLE_API_KEYS": True})
        assert saved.status_code == 200, saved.text
        assert saved.json()["ENABLE_API_KEYS"] is True

    def create_api_key(self, account: Account) -> str:
        """POST /api/v1/auths/api_key: a new sk-... key for the caller (replaces an earlier one)."""
        answer = self.call(account, "POST", "/api/v1/auths/api_key")
        assert answer.status_code == 200, answer.text
        key = str(answer.json()["api_key"])
        assert key.startswith("sk-")
        return key

    def group_names(self, account: Account) -> set[str]:
        """GET /api/v1/users/groups: the caller's own groups (what the BFF asks with a session token)."""
        answer = self.call(account, "GET", "/api/v1/users/groups", params={"include_inherited": "true"})
        assert answer.status_code == 200, answer.text
        return {group["name"] for group in answer.json()}

    def model_ids(self, account: Account) -> set[str]:
        """GET /api/models as the UI loads it; Open-WebUI asks the BFF with the user's signed identity."""
        with self._client(account.token) as client:
            answer = client.get("/api/models")
        answer.raise_for_status()
        return {model["id"] for model in answer.json()["data"]}

    def chat(self, account: Account, model: str, content: str = "Say hello", **extra: Any) -> httpx.Response:
        """POST /api/chat/completions, not streamed, no saved chat: Open-WebUI answers with the BFF's reply."""
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}], "stream": False, **extra}
        with self._client(account.token) as client:
            return client.post("/api/chat/completions", json=body)

    def call(self, account: Account, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._client(account.token) as client:
            return client.request(method, path, **kwargs)

    def upload_file(self, account: Account, name: str, content: bytes, content_type: str) -> dict[str, Any]:
        """POST /api/v1/files/ as the UI uploads a document, processed (extracted, chunked, embedded) before it answers."""
        answer = self.call(
            account, "POST", "/api/v1/files/", params={"process": "true", "process_in_background": "false"},
            files={"file": (name, content, content_type)},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def create_knowledge(self, account: Account, name: str, access_grants: list[dict[str, str]] | None = None) -> str:
        answer = self.call(
            account, "POST", "/api/v1/knowledge/create",
            json={"name": name, "description": f"{name} (test)", "access_grants": access_grants or []},
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    def add_to_knowledge(self, account: Account, knowledge_id: str, file_id: str) -> httpx.Response:
        """POST /api/v1/knowledge/{id}/file/add: the file's chunks go into the knowledge base's collection."""
        return self.call(account, "POST", f"/api/v1/knowledge/{knowledge_id}/file/add", json={"file_id": file_id})

    def speech(self, account: Account, text: str) -> httpx.Response:
        """POST /api/v1/audio/speech as the browser's read-aloud button sends it."""
        return self.call(account, "POST", "/api/v1/audio/speech", json={"input": text, "voice": "alloy"})

    def transcribe(self, account: Account, name: str, audio: bytes, content_type: str) -> httpx.Response:
        """POST /api/v1/audio/transcriptions as the microphone button uploads a recording."""
        return self.call(account, "POST", "/api/v1/audio/transcriptions", files={"file": (name, audio, content_type)})

    def new_chat(self, account: Account, chat: dict[str, Any]) -> str:
        answer = self.call(account, "POST", "/api/v1/chats/new", json={"chat": chat})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    def action(self, account: Account, action_id: str, body: dict[str, Any]) -> httpx.Response:
        """POST /api/chat/actions/{id}: what the button under an assistant message sends."""
        return self.call(account, "POST", f"/api/chat/actions/{action_id}", json=body)

    def ui_chat(
        self, account: Account, model: str, content: str = "Say hello", background_tasks: dict[str, bool] | None = None
    ) -> "UiChat":
        """A new chat's first message as the 0.12.4 browser sends it (Chat.svelte): POST /api/chat/completions
        with a socket session id, the message ids it made, no chat id and `parent_id: null` (so Open-WebUI
        saves a new chat and starts its title at once), and the background tasks the UI asks for. The
        answer itself then goes to the (absent) socket; this returns the ids and Open-WebUI's reply."""
        user_message_id, assistant_id = str(uuid.uuid4()), str(uuid.uuid4())
        user_message = {
            "id": user_message_id, "parentId": None, "childrenIds": [assistant_id], "role": "user",
            "content": content, "timestamp": int(time.time()), "models": [model],
        }
        tasks = {"title_generation": True, "tags_generation": True, "follow_up_generation": True}
        body = {
            "stream": True, "model": model, "messages": [{"role": "user", "content": content}],
            "params": {}, "features": {}, "variables": {}, "session_id": f"socket-{uuid.uuid4().hex[:12]}",
            "id": assistant_id, "message_ids": [{"model_id": model, "message_id": assistant_id, "modelIdx": 0}],
            "parent_id": None, "user_message": user_message,
            "background_tasks": tasks if background_tasks is None else background_tasks,
        }
        answer = self.call(account, "POST", "/api/chat/completions", json=body)
        return UiChat(answer=answer, user_message_id=user_message_id, assistant_message_id=assistant_id)


@dataclass(frozen=True)
class UiChat:
    answer: httpx.Response  # Open-WebUI's immediate reply (the chat id and its task id)
    user_message_id: str
    assistant_message_id: str  # what the connection's {{MESSAGE_ID}} carries, and a rating's meta.message_id
