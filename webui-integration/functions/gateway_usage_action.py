"""
title: My gateway usage
author: LLM gateway
version: 1.0.0
license: MIT
required_open_webui_version: 0.12.0
description: Shows the user their own LLM gateway usage (today and this month: cost, tokens, requests) and the budget left, from the BFF's usage API.
icon_url: data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3g9IjAgMCAyNCAyNCIgZmlsbD0ibm9uZSIgc3Ryb2tlPSJjdXJyZW50Q29sb3IiIHN0cm9rZS13aWR0aD0iMS41Ij48cGF0aCBkPSJNNCAyMFYxME0xMCAyMFY0TTE2IDIwdi03TTIyIDIwSDIiLz48L3N2Zz4=
"""

# An Open-WebUI Action (Admin Panel > Functions > New Function, paste): a button under each assistant
# message. Open-WebUI execs this one file, so it is self-contained and uses only what
# Open-WebUI 0.12.4 already ships (httpx, pydantic, the standard library).
# Non-admins can click it only on models that have a row in Open-WebUI's model table
# (scripts/openwebui_setup.py): its Action route ignores BYPASS_MODEL_ACCESS_CONTROL.
#
# Identity: every call to the BFF carries the service key (Authorization: Bearer) and an
# X-OpenWebUI-User-Jwt minted here for the clicking user, with the claims and secret
# Open-WebUI uses itself (utils/headers.py); the BFF answers with that user's own data.

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_start
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, Field

Emitter = Callable[[dict[str, Any]], Awaitable[None]]
USAGE_HEADING = "**Your LLM gateway usage**"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_user_jwt(user: dict[str, Any], secret: str, lifetime_seconds: int) -> str:
    """HS256 JWT with Open-WebUI's forwarded-user claims (Open-WebUI uses PyJWT; the stdlib suffices)."""
    now = int(time.time())
    claims = {
        "sub": str(user["id"]),
        "email": str(user.get("email") or ""),
        "name": str(user.get("name") or ""),
        "role": str(user.get("role") or ""),
        "iss": "open-webui",
        "iat": now,
        "exp": now + lifetime_seconds,
    }
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


class GatewayError(Exception):
    """A failure whose message is safe to show to the user (no keys, no tracebacks)."""


def usd(amount: float | Decimal | str) -> str:
    """Dollars as people read them: cents from one cent up, else up to six decimals (LLM calls are cheap)."""
    value = Decimal(str(amount))
    if value == 0:
        return "$0.00"
    if abs(value) >= Decimal("0.01"):
        return f"${value:,.2f}"
    return "$" + f"{value:.6f}".rstrip("0").rstrip(".")


class Action:
    class Valves(BaseModel):
        BFF_URL: str = Field(
            default="http://bff:8080",
            description="The BFF as Open-WebUI's backend reaches it (compose: http://bff:8080; not the /gateway URL)",
        )
        BFF_SERVICE_KEY: str = Field(
            default="",
            description="One of the BFF's BFF_SERVICE_KEYS; empty: Open-WebUI's OPENAI_API_KEY environment variable",
            json_schema_extra={"input": {"type": "password"}},
        )
        FORWARD_USER_INFO_HEADER_JWT_SECRET: str = Field(
            default="",
            description="The secret shared with the BFF; empty: Open-WebUI's own FORWARD_USER_INFO_HEADER_JWT_SECRET",
            json_schema_extra={"input": {"type": "password"}},
        )
        USER_TOKEN_LIFETIME_SECONDS: int = Field(
            default=60, ge=10, le=300, description="Lifetime of the user token minted for each call to the BFF"
        )

    def __init__(self) -> None:
        self.valves = self.Valves()

    async def action(
        self,
        body: dict[str, Any],
        __user__: dict[str, Any] | None = None,
        __event_emitter__: Emitter | None = None,
    ) -> dict[str, Any] | None:
        """Adds the user's usage to the clicked message as markdown; a failure becomes a status line.

        The block is returned as the message's new content rather than sent as a `message`
        event: Open-WebUI 0.12.4 shows a message's structured `output` when it has one and
        ignores `content` then, and only an action's returned `messages` update both. Clicking
        again replaces the earlier block instead of adding a second one.
        """
        emit = __event_emitter__ or _ignore
        await emit({"type": "status", "data": {"description": "Loading your gateway usage", "done": False}})
        try:
            text = await self._usage_markdown(__user__ or {})
        except GatewayError as exc:
            await emit({"type": "status", "data": {"description": _redact(str(exc), self.valves), "done": True}})
            return None
        await emit({"type": "status", "data": {"description": "Gateway usage loaded", "done": True}})
        message_id = body.get("id")
        clicked = next((m for m in body.get("messages") or [] if m.get("id") == message_id), None)
        if clicked is None:  # not sent by this client: append to the message text instead
            await emit({"type": "message", "data": {"content": "\n\n" + text}})
            return None
        answer = str(clicked.get("content") or "").split(USAGE_HEADING)[0].rstrip()
        return {"messages": [{"id": message_id, "content": f"{answer}\n\n{text}" if answer else text}]}

    async def _usage_markdown(self, user: dict[str, Any]) -> str:
        """Today's and this month's totals (UTC, like the budgets) and the budget left."""
        key, secret = _credentials(self.valves)
        if not user.get("id"):
            raise GatewayError("No Open-WebUI user is attached to this call.")
        if not key or not secret:
            raise GatewayError(
                "Usage is not configured: an admin must set this function's BFF_SERVICE_KEY "
                "and FORWARD_USER_INFO_HEADER_JWT_SECRET valves."
            )
        today = datetime.now(UTC).date()
        month_start = today.replace(day=1)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        headers = {
            "Authorization": f"Bearer {key}",
            "X-OpenWebUI-User-Jwt": mint_user_jwt(user, secret, self.valves.USER_TOKEN_LIFETIME_SECONDS),
        }
        timeout = httpx.Timeout(30.0, connect=5.0)
        try:
            async with httpx.AsyncClient(base_url=self.valves.BFF_URL.rstrip("/"), headers=headers, timeout=timeout) as client:
                # `user` = the caller: admins may read everyone's usage and would otherwise get the total.
                own = {"user": str(user["id"])}
                day, month, budget = await asyncio.gather(
                    client.get("/api/usage/summary", params={**own, **_whole_days(today, today + timedelta(days=1))}),
                    client.get("/api/usage/summary", params={**own, **_whole_days(month_start, next_month)}),
                    client.get("/api/usage/budget"),
                )
        except httpx.HTTPError:
            raise GatewayError("The LLM gateway cannot be reached right now; try again later.") from None
        for response in (day, month, budget):
            _raise_for(response)
        return _render(day.json()["totals"], month.json()["totals"], budget.json())


async def _ignore(_: dict[str, Any]) -> None:
    return None


def _whole_days(start: date, end: date) -> dict[str, str]:
    """Midnight-to-midnight UTC ranges, which the BFF answers from its daily rollup."""
    return {
        "from": datetime.combine(start, day_start(0), UTC).isoformat(),
        "to": datetime.combine(end, day_start(0), UTC).isoformat(),
    }


def _render(day: dict[str, Any], month: dict[str, Any], budget: dict[str, Any]) -> str:
    lines = [
        f"{USAGE_HEADING} (UTC)",
        "",
        "| | cost | tokens | requests |",
        "|---|---:|---:|---:|",
    ]
    for label, totals in (("today", day), ("this month", month)):
        lines.append(f"| {label} | {usd(totals['cost_usd'])} | {totals['total_tokens']:,} | {totals['requests']:,} |")
    lines.append("")
    if not budget.get("limited"):
        lines.append("**Budget:** no limit")
    else:
        lines.append("**Budget left:**")
        for period in budget["periods"]:
            remaining = max(Decimal(period["remaining_usd"]), Decimal(0))
            resets = datetime.fromisoformat(period["resets_at"]).strftime("%Y-%m-%d %H:%M UTC")
            lines.append(
                f"- {period['period']}: {usd(remaining)} of {usd(period['limit_usd'])} "
                f"(spent {usd(period['spent_usd'])}, resets {resets})"
            )
    return "\n".join(lines)


def _raise_for(response: httpx.Response) -> None:
    """Turns the BFF's error answers ({"error": {"message", "code"}}) into a sentence for the user."""
    if response.status_code < 400:
        return
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}"
    if response.status_code == 401:
        raise GatewayError(
            f"The LLM gateway did not accept this function's credentials ({message}). "
            "An admin must check its BFF_SERVICE_KEY and FORWARD_USER_INFO_HEADER_JWT_SECRET valves."
        )
    if response.status_code == 403:
        raise GatewayError(f"The LLM gateway refused: {message}.")
    if response.status_code == 503:
        raise GatewayError(f"Usage is unavailable right now ({message}); try again later.")
    raise GatewayError(f"The LLM gateway answered {response.status_code}: {message}.")


def _credentials(valves: Action.Valves) -> tuple[str, str]:
    """(service key, JWT secret): the valves, or else the values Open-WebUI itself runs with."""
    return (
        valves.BFF_SERVICE_KEY or os.environ.get("OPENAI_API_KEY", ""),
        valves.FORWARD_USER_INFO_HEADER_JWT_SECRET or os.environ.get("FORWARD_USER_INFO_HEADER_JWT_SECRET", ""),
    )


def _redact(text: str, valves: Action.Valves) -> str:
    """Belt and braces: no secret ever reaches the chat, whatever an error message contains."""
    for secret in _credentials(valves):
        if secret:
            text = text.replace(secret, "***")
    return text
