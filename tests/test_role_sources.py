"""The `db` and `static` role sources, and the start-up rules around them."""

import sqlite3
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from bff.settings import Settings
from conftest import ROOT, WEBUI_SECRET, BffFactory
from support.tokens import session_token

# The columns the BFF reads, as Open-WebUI 0.12 creates them (models/users.py, models/auths.py).
OPEN_WEBUI_SCHEMA = """
CREATE TABLE "user" (id VARCHAR PRIMARY KEY, email VARCHAR, username VARCHAR(50), role VARCHAR,
                     name VARCHAR NOT NULL, profile_image_url TEXT, last_active_at BIGINT, updated_at BIGINT);
CREATE TABLE auth (id VARCHAR PRIMARY KEY, email VARCHAR, password TEXT, active BOOLEAN, mfa JSON,
                   session_stamp TEXT);
CREATE TABLE api_key (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, key TEXT UNIQUE NOT NULL, data JSON,
                      expires_at BIGINT, last_used_at BIGINT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
"""


@pytest.fixture()
def webui_db(tmp_path: Path) -> Path:
    path = tmp_path / "webui.db"
    now = int(time.time())
    with sqlite3.connect(path) as db:
        db.executescript(OPEN_WEBUI_SCHEMA)
        for user_id, role in [("db-admin", "admin"), ("db-user", "user"), ("db-pending", "pending")]:
            db.execute('INSERT INTO "user" (id, email, role, name) VALUES (?, ?, ?, ?)', (user_id, f"{user_id}@x", role, user_id))
            db.execute("INSERT INTO auth (id, email, active, session_stamp) VALUES (?, ?, 1, 'stamp-1')", (user_id, f"{user_id}@x"))
        db.execute("INSERT INTO api_key VALUES ('k1', 'db-user', ?, NULL, NULL, NULL, ?, ?)", ("sk-" + "1" * 32, now, now))
        db.execute("INSERT INTO api_key VALUES ('k2', 'db-user', ?, NULL, ?, NULL, ?, ?)", ("sk-" + "2" * 32, now - 10, now, now))
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
    with bff.client(session_token("dev-pending", WEBUI_SECRET)) as client:
        assert client.get("/v1/models").status_code == 403
