"""Per-user rate limits: requests and tokens per minute, requests in flight.

The one owner of limits. A paid call is admitted (a slot in flight, one request counted)
before its body is read; its prompt's tokens are reserved once the body is validated and
settled from LiteLLM's usage after the response. Over a limit: 429 with Retry-After. Every
answer of a limited caller carries OpenAI's x-ratelimit-* headers.
Windows are whole UTC minutes shared by all replicas (policy/rate_counters.py).
"""

import itertools
import math
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bff.errors import ApiError, rate_limited
from bff.identity.principal import Principal
from bff.policy.access import AccessPolicy
from bff.policy.model import Limits
from bff.policy.rate_counters import AdmitKeys, RateCounters, Taken, window_start

WINDOW_SECONDS = 60
CHARS_PER_TOKEN = 4  # LiteLLM's own rough rule; the estimate is settled from usage afterwards
# In-flight set members: unique across replicas and workers without a uuid4 per request (os.urandom each).
_SLOT_PREFIX = f"{uuid.uuid4().hex[:16]}:"
_slot_numbers = itertools.count()
TOKENS_PER_MEDIA_PART = 85  # an inline image or audio part (data: URL): OpenAI's low-detail image price
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens") for what in ("limit", "remaining", "reset")
)


@dataclass
class Lease:
    """What one admitted call holds until its response has been sent."""

    user_id: str
    limits: Limits
    slot: str | None = None  # member of the user's in-flight set
    reserved_tokens: int = 0
    reserved_in: int | None = None  # start of the window the reservation went to
    headers: dict[str, str] = field(default_factory=dict)


def duration(seconds: float) -> str:
    """OpenAI's reset format: '20ms', '6s', '1m0s'."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


def estimate_tokens(prompt: Any) -> int:
    """Text length / 4 over every string of the prompt; inline media count as one small image."""

    def walk(value: Any) -> Iterable[int]:
        if isinstance(value, str):
            yield TOKENS_PER_MEDIA_PART * CHARS_PER_TOKEN if value.startswith("data:") else len(value)
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    return max(1, -(-sum(walk(prompt)) // CHARS_PER_TOKEN))


def _headers(kind: str, limit: int, taken: Taken) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, limit - taken.used)),
        f"x-ratelimit-reset-{kind}": duration(taken.reset_seconds),
    }


def _refused(message: str, retry_after: float, code: str = "rate_limit_exceeded") -> ApiError:
    return rate_limited(message, str(max(1, math.ceil(retry_after))), code=code)


class RateLimiter:
    def __init__(self, access: AccessPolicy, counters: RateCounters, lease_seconds: float):
        self._access = access
        self._counters = counters
        self._lease_seconds = lease_seconds  # longest a call may hold a slot if its replica dies

    async def admit(self, principal: Principal) -> Lease | None:
        """Takes a slot in flight and counts one request (one atomic step), or raises 429. None: no limits."""
        if principal.user_id is None:
            return None
        limits = self._access.effective(principal).limits
        if limits.requests_per_minute is None and limits.tokens_per_minute is None and limits.concurrent_requests is None:
            return None
        user = principal.user_id
        slot = f"{_SLOT_PREFIX}{os.getpid()}:{next(_slot_numbers)}" if limits.concurrent_requests is not None else None
        keys = AdmitKeys(
            inflight=f"{user}:inflight",
            member=slot or "",
            concurrent=limits.concurrent_requests,
            lease_seconds=self._lease_seconds,
            requests=f"{user}:req",
            requests_per_minute=limits.requests_per_minute,
            tokens=f"{user}:tok" if limits.tokens_per_minute is not None else None,
        )
        admission = await self._counters.admit(keys, WINDOW_SECONDS)
        if admission.refused == "concurrency":
            raise _refused(
                f"you have {limits.concurrent_requests} requests in flight, your limit; wait for one to finish",
                1,
                code="concurrency_limit_exceeded",
            )
        lease = Lease(user, limits, slot=slot)
        if admission.requests is not None and limits.requests_per_minute is not None:
            lease.headers.update(_headers("requests", limits.requests_per_minute, admission.requests))
            if admission.refused == "requests":
                error = _refused(
                    f"rate limit of {limits.requests_per_minute} requests per minute reached",
                    admission.requests.reset_seconds,
                )
                error.headers.update(lease.headers)
                raise error
        if admission.tokens is not None and limits.tokens_per_minute is not None:
            lease.headers.update(_headers("tokens", limits.tokens_per_minute, admission.tokens))
        return lease

    async def reserve_tokens(self, lease: Lease | None, prompt: Any) -> None:
        """Counts the prompt's estimate against tokens per minute, or raises 429."""
        limit = lease.limits.tokens_per_minute if lease is not None else None
        if lease is None or limit is None:
            return
        estimate = estimate_tokens(prompt)
        if estimate > limit:
            error = _refused(f"this request's ~{estimate} prompt tokens exceed your limit of {limit} tokens per minute", 60)
            error.headers["x-should-retry"] = "false"  # waiting does not make it fit
            raise error
        taken = await self._counters.take(f"{lease.user_id}:tok", estimate, limit, WINDOW_SECONDS)
        lease.headers.update(_headers("tokens", limit, taken))
        if not taken.allowed:
            error = _refused(f"rate limit of {limit} tokens per minute reached", taken.reset_seconds)
            error.headers.update(lease.headers)
            raise error
        lease.reserved_tokens, lease.reserved_in = estimate, window_start(WINDOW_SECONDS)

    async def release(self, lease: Lease | None, total_tokens: int | None) -> None:
        """Frees the slot and settles the token estimate with what the call really used (one step)."""
        if lease is None:
            return
        slot, lease.slot = lease.slot, None
        settles = lease.limits.tokens_per_minute is not None and total_tokens is not None
        if slot is None and not settles:
            return
        await self._counters.finish(
            f"{lease.user_id}:inflight",
            slot,
            f"{lease.user_id}:tok" if settles else None,
            lease.reserved_in,
            (total_tokens or 0) - lease.reserved_tokens,
            WINDOW_SECONDS,
        )
