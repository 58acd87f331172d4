#!/usr/bin/env python3
"""Prints an Open-WebUI-format session token for a dev user of the local stack.

    scripts/dev_token.py --role admin|user|pending [--hours 12]

The token is signed exactly as Open-WebUI 0.12 signs its session tokens (HS256 with
WEBUI_SECRET_KEY; claims id, typ, auth_method, auth_time, mfa_verified, exp, jti,
iat) for the dev user of that role in config/dev-users.yaml, which the BFF's
static role source knows. WEBUI_SECRET_KEY comes from the environment or from
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


def user_id_for(role: str) -> str:
    users = yaml.safe_load((ROOT / "config" / "dev-users.yaml").read_text())["users"]
    for user in users:
        if user["role"] == role:
            return user["id"]
    sys.exit(f"config/dev-users.yaml has no user with role {role!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["admin", "user", "pending"], default="user")
    parser.add_argument("--hours", type=float, default=12.0, help="lifetime of the token")
    args = parser.parse_args()
    now = int(time.time())
    claims = {
        "id": user_id_for(args.role),
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
