"""The `db` and `static` role sources, and the start-up rules around them."""

import sqlite3
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from bff.settings import Settings
from conftest import FORWARD_SECRET, ROOT, SERVICE_KEY, WEBUI_SECRET, BffFactory, chat_body
from support.tokens import forwarded_user_jwt, session_token

# The columns the BFF reads, as Open-WebUI 0.12 creates them (models/users.py, models/auths.py);
# `group` and `group_member` exactly as open-webui 0.12.4's migrations leave them (its
# webui.db's schema: no `user_ids` column since 37f288994c47, `parent_group_id` since b8e4f0a3c752).
OPEN_WEBUI_SCHEMA = """
CREATE TABLE "user" (id VARCHAR PRIMARY KEY, email VARCHAR, username VARCHAR(50), role VARCHAR,
                     name VARCHAR NOT NULL, profile_image_url TEXT, last_active_at BIGINT, updated_at BIGINT);
CREATE TABLE auth (id VARCHAR PRIMARY KEY, email VARCHAR, password TEXT, active BOOLEAN, mfa JSON,
                   session_stamp TEXT);
CREATE TABLE api_key (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, key TEXT UNIQUE NOT NULL, data JSON,
                      expires_at BIGINT, last_used_at BIGINT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS "group" (
	id TEXT NOT NULL,
	user_id TEXT,
	name TEXT,
	description TEXT,
	data JSON,
	meta JSON,
	permissions JSON,
	created_at BIGINT,
	updated_at BIGINT,
	parent_group_id TEXT,
	PRIMARY KEY (id),
	CONSTRAINT fk_group_parent FOREIGN KEY(parent_group_id) REFERENCES "group" (id) ON DELETE SET NULL,
	UNIQUE (id)
);
CREATE INDEX ix_group_parent_group_id ON "group" (parent_group_id);
CREATE TABLE group_member (
	id TEXT NOT NULL,
	group_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	created_at BIGINT,
	updated_at BIGINT,
	PRIMARY KEY (id),
	CONSTRAINT uq_group_member_group_user UNIQUE (group_id, user_id),
	UNIQUE (id),
	FOREIGN KEY(group_id) REFERENCES "group" (id) ON DELETE CASCADE,
	FOREIGN KEY(user_id) REFERENCES user (id) ON DELETE CASCADE
);
CREATE INDEX ix_group_member_user_id_group_id ON group_member (user_id, group_id);
"""
PREMIUM_KEY = "sk-" + "4" * 32


def add_group(db: sqlite3.Connection, group_id: str, name: str, parent: str | None = None) -> None:
    """As Open-WebUI's GroupTable.insert_new_group writes a row."""
    now = int(time.time())
    db.execute(
        'INSERT INTO "group" (id, user_id, name, description, data, meta, permissions, created_at, updated_at, parent_group_id) '
        "VALUES (?, 'db-admin', ?, '', '{\"config\": {\"share\": true}}', NULL, NULL, ?, ?, ?)",
        (group_id, name, now, now, parent),
    )


def add_member(db: sqlite3.Connection, group_id: str, user_id: str) -> None:
    now = int(time.time())
    db.execute("INSERT INTO group_member VALUES (?, ?, ?, ?, ?)", (f"{group_id}:{user_id}", group_id, user_id, now, now))


@pytest.fixture()
def webui_db(tmp_path: Path) -> Path:
    path = tmp_path / "webui.db"
    now = int(time.time())
    with sqlite3.connect(path) as db:
        db.executescript(OPEN_WEBUI_SCHEMA)
        users = [("db-admin", "admin"), ("db-user", "user"), ("db-pending", "pending"), ("db-premium", "user"), ("db-child", "user")]
        for user_id, role in users:
            db.execute('INSERT INTO "user" (id, email, role, name) VALUES (?, ?, ?, ?)', (user_id, f"{user_id}@x", role, user_id))
            db.execute("INSERT INTO auth (id, email, active, session_stamp) VALUES (?, ?, 1, 'stamp-1')", (user_id, f"{user_id}@x"))
        db.execute("INSERT INTO api_key VALUES ('k1', 'db-user', ?, NULL, NULL, NULL, ?, ?)", ("sk-" + "1" * 32, now, now))
        db.execute("INSERT INTO api_key VALUES ('k2', 'db-user', ?, NULL, ?, NULL, ?, ?)", ("sk-" + "2" * 32, now - 10, now, now))
        db.execute("INSERT INTO api_key VALUES ('k4', 'db-premium', ?, NULL, NULL, NULL, ?, ?)", (PREMIUM_KEY, now, now))
        add_group(db, "g-premium", "premium")
        add_group(db, "g-premium-eu", "premium-eu", parent="g-premium")  # db-child is premium through its parent
        add_group(db, "g-research", "research")
        add_member(db, "g-premium", "db-premium")
        add_member(db, "g-research", "db-premium")
        add_member(db, "g-premium-eu", "db-child")
        add_member(db, "g-research", "db-user")
    return path


def test_db_role_source(bff_factory: BffFactory, webui_db: Path) -> None:
    bff = bff_factory(role_source="db", open_webui_database_url=f"sqlite:///{webui_db}")
    cases = [
        (session_token("db-user", WEBUI_SECRET), 200),
        (session_token("db-admin", WEBUI_SECRET), 200),
        (session_token("db-pending", WEBUI_SECRET), 403),
        (session_token("db-user", WEBUI_SECRET, session_stamp="stale"), 401),
        (session_token("nobody", WEBUI_SECRET), 401),
        ("sk-" + "1" * 32, 200),
        ("sk-" + "2" * 32, 401),  # expired key
        ("sk-" + "3" * 32, 401),
    ]
    for token, status in cases:
        with bff.client(token) as client:
            assert client.get("/v1/models").status_code == status, token
    with bff.client() as client:
        ready = client.get("/health/ready").json()
    assert ready["dependencies"]["open_webui_db"]["status"] == "ok"


def test_db_role_source_reads_groups(bff_factory: BffFactory, webui_db: Path) -> None:
    """Groups from `group_member` (and parent groups), for sessions, API keys and forwarded users."""
    bff = bff_factory(role_source="db", open_webui_database_url=f"sqlite:///{webui_db}")
    premium = [
        session_token("db-premium", WEBUI_SECRET),
        session_token("db-child", WEBUI_SECRET),
        PREMIUM_KEY,
    ]
    for token in premium:
        with bff.client(token) as client:
            assert client.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 200, token
            assert "fake-premium" in {m["id"] for m in client.get("/v1/models").json()["data"]}
    for token in (session_token("db-user", WEBUI_SECRET), "sk-" + "1" * 32):
        with bff.client(token) as client:
            assert client.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 403
            assert "fake-premium" not in {m["id"] for m in client.get("/v1/models").json()["data"]}
    for user_id, status in [("db-premium", 200), ("db-child", 200), ("db-user", 403), ("nobody", 403)]:
        user = {"id": user_id, "email": f"{user_id}@x", "name": user_id, "role": "user"}
        headers = {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(user, FORWARD_SECRET), "X-OpenWebUI-User-Groups": "premium"}
        with bff.client(SERVICE_KEY, headers=headers) as client:
            assert client.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == status, user_id


def test_db_group_membership_changes_take_effect_within_the_role_ttl(bff_factory: BffFactory, webui_db: Path) -> None:
    bff = bff_factory(role_source="db", open_webui_database_url=f"sqlite:///{webui_db}", role_cache_ttl_seconds=1.0)
    forwarded = {"X-OpenWebUI-User-Jwt": forwarded_user_jwt({"id": "db-user", "email": "e", "name": "n", "role": "user"}, FORWARD_SECRET)}
    with bff.client(session_token("db-user", WEBUI_SECRET)) as client, bff.client(SERVICE_KEY, headers=forwarded) as service:
        assert client.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 403
        assert service.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 403
        with sqlite3.connect(webui_db) as db:  # what Open-WebUI's add_users_to_group writes
            add_member(db, "g-premium", "db-user")
        time.sleep(1.2)
        assert client.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 200
        assert service.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 200
        with sqlite3.connect(webui_db) as db:
            db.execute("DELETE FROM group_member WHERE group_id = 'g-premium' AND user_id = 'db-user'")
        time.sleep(1.2)
        assert client.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 403
        assert service.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 403


def test_db_groups_query_is_parameterised_and_ends_on_cycles(webui_db: Path) -> None:
    import anyio

    from bff.identity.role_sources import DbRoleSource

    with sqlite3.connect(webui_db) as db:  # a cycle Open-WebUI refuses, but a database may still hold
        add_group(db, "g-a", "a", parent="g-b")
        add_group(db, "g-b", "b", parent="g-a")
        add_member(db, "g-a", "db-user")
    source = DbRoleSource(f"sqlite:///{webui_db}", ttl_seconds=1)
    assert anyio.run(source.groups_for, "db-user") == ("a", "b", "research")
    assert anyio.run(source.groups_for, "db-premium") == ("premium", "research")
    assert anyio.run(source.groups_for, "x' OR '1'='1") == ()
    assert anyio.run(source.groups_for, "nobody") == ()
    anyio.run(source.aclose)


def test_db_role_source_never_writes(webui_db: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from bff.identity.role_sources import DbRoleSource

    source = DbRoleSource(f"sqlite:///{webui_db}", ttl_seconds=1)
    with pytest.raises(OperationalError, match="readonly"):
        with source._engine.connect() as connection:
            connection.execute(text("UPDATE \"user\" SET role = 'admin'"))


def test_db_unreachable_gives_503(bff_factory: BffFactory, tmp_path: Path) -> None:
    bff = bff_factory(role_source="db", open_webui_database_url=f"sqlite:///{tmp_path}/missing/webui.db")
    with bff.client(session_token("db-user", WEBUI_SECRET)) as client:
        answer = client.get("/v1/models")
    assert answer.status_code == 503
    assert "missing" not in answer.text


def test_static_source_requires_dev_mode() -> None:
    with pytest.raises(ValidationError, match="BFF_DEV_MODE"):
        Settings(litellm_master_key="k", webui_secret_key="s", role_source="static")


def test_static_source_in_dev_mode(bff_factory: BffFactory) -> None:
    bff = bff_factory(role_source="static", bff_dev_mode=True, static_roles_file=ROOT / "config" / "dev-users.yaml")
    with bff.client(session_token("dev-user", WEBUI_SECRET)) as client:
        models = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert "fake-mini" in models and "fake-premium" not in models
    with bff.client(session_token("dev-premium", WEBUI_SECRET)) as client:  # in group premium
        models = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert "fake-mini" in models and "fake-premium" in models
    with bff.client(session_token("dev-pending", WEBUI_SECRET)) as client:
        assert client.get("/v1/models").status_code == 403
