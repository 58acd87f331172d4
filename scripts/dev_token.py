#!/usr/bin/env python3
"""Prints an Open-WebUI-format session token for a dev user of the local stack.

    scripts/dev_token.py [--role admin|user|pending | --user ID] [--hours 12]

The token is signed exactly as Open-WebUI 0.12 signs its session tokens (HS256 with
WEBUI_SECRET_KEY; claims id, typ, auth_method, auth_time, mfa_verified, exp, jti,
iat) for a dev user of config/dev-users.yaml, which the BFF's static role source
knows: the first one with that role (default: user), or the one with that id
(e.g. --user dev-premium, a user in the group premium). WEBUI_SECRET_KEY comes from the environment or from
$DATA_DIR/dev.env (default .data/dev.env), written by scripts/dev.sh.
"""

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import yaml
from jose import jwt

ROOT = Path(__file__).resolve().parent.parent


def secret_key() -> str:
    if os.environ.get("WEBUI_SECRET_KEY"):
        return os.environ["WEBUI_SECRET_KEY"]
    env_file = Path(os.environ.get("DATA_DIR") or ROOT / ".data") / "dev.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "WEBUI_SECRET_KEY":
                return value.strip()
    sys.exit(f"WEBUI_SECRET_KEY is not set and {env_file} does not exist: run scripts/dev.sh first")


def dev_users() -> list[dict[str, object]]:
    users: list[dict[str, object]] = yaml.safe_load((ROOT / "config" / "dev-users.yaml").read_text())["users"]
    return users


def user_id_for(role: str) -> str:
    for user in dev_users():
        if user["role"] == role:
            return str(user["id"])
    sys.exit(f"config/dev-users.yaml has no user with role {role!r}")


def known_user_id(user_id: str) -> str:
    ids = [str(user["id"]) for user in dev_users()]
    if user_id not in ids:
        sys.exit(f"config/dev-users.yaml has no user {user_id!r} (its users: {', '.join(ids)})")
    return user_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--role", choices=["admin", "user", "pending"], help="the first dev user of this role (default: user)")
    who.add_argument("--user", metavar="ID", help="the dev user with this id, e.g. dev-premium")
    parser.add_argument("--hours", type=float, default=12.0, help="lifetime of the token")
    args = parser.parse_args()
    now = int(time.time())
    claims = {
        "id": known_user_id(args.user) if args.user else user_id_for(args.role or "user"),
        "typ": "session",
        "auth_method": "password",
        "auth_time": now,
        "mfa_verified": False,
        "exp": now + int(args.hours * 3600),
        "jti": str(uuid.uuid4()),
        "iat": now,
    }
    print(jwt.encode(claims, secret_key(), algorithm="HS256"))


if __name__ == "__main__":
    main()
