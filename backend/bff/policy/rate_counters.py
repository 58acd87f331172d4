"""Counters behind the rate limits: in this process, or in Redis shared by every replica.

Two primitives, each one atomic step (a Lua script in Redis), so N replicas enforce one
limit exactly: the request that would cross a limit is refused, never a few after it.
- fixed windows: `take` adds `cost` to a counter of the current window unless that would
  pass `limit`; `adjust` corrects it afterwards (tokens settled from usage);
- in-flight sets: `acquire` adds a member unless `limit` are already in, each member with
  a lease (a replica that dies mid-request frees its slots when their leases run out).
"""

import time
from dataclasses import dataclass
from typing import Protocol

from bff.shared_state import KEY_PREFIX, Redis


@dataclass(frozen=True)
class Taken:
    allowed: bool
    used: int  # in the window, after this take when allowed
    reset_seconds: float  # until the window ends


class RateCounters(Protocol):
    async def take(self, key: str, cost: int, limit: int, window_seconds: int) -> Taken: ...

    async def used(self, key: str, window_seconds: int) -> Taken: ...

    async def adjust(self, key: str, window_start: int, delta: int, window_seconds: int) -> None: ...

    async def acquire(self, key: str, member: str, limit: int, lease_seconds: float) -> bool: ...

    async def release(self, key: str, member: str) -> None: ...


def window_start(window_seconds: int, now: float | None = None) -> int:
    """Windows are aligned to the epoch (whole minutes), the same on every replica."""
    now = time.time() if now is None else now
    return int(now // window_seconds) * window_seconds


def _reset(window_seconds: int, now: float) -> float:
    return window_start(window_seconds, now) + window_seconds - now


class MemoryCounters:
    """One process: plain dicts (the event loop runs one step at a time)."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (window start, used)
        self._inflight: dict[str, dict[str, float]] = {}  # key -> member -> lease end (monotonic)

    def _current(self, key: str, window_seconds: int, now: float) -> int:
        start = window_start(window_seconds, now)
        stored = self._windows.get(key)
        return stored[1] if stored is not None and stored[0] == start else 0

    async def take(self, key: str, cost: int, limit: int, window_seconds: int) -> Taken:
        now = time.time()
        used = self._current(key, window_seconds, now)
        if used + cost > limit:
            return Taken(False, used, _reset(window_seconds, now))
        self._windows[key] = (window_start(window_seconds, now), used + cost)
        if len(self._windows) > 100_000:  # users who stopped calling: drop windows that ended
            start = window_start(window_seconds, now)
            self._windows = {k: v for k, v in self._windows.items() if v[0] == start}
        return Taken(True, used + cost, _reset(window_seconds, now))

    async def used(self, key: str, window_seconds: int) -> Taken:
        now = time.time()
        return Taken(True, self._current(key, window_seconds, now), _reset(window_seconds, now))

    async def adjust(self, key: str, window_start: int, delta: int, window_seconds: int) -> None:
        stored = self._windows.get(key)
        if stored is not None and stored[0] == window_start:
            self._windows[key] = (window_start, max(0, stored[1] + delta))

    async def acquire(self, key: str, member: str, limit: int, lease_seconds: float) -> bool:
        now = time.monotonic()
        members = {m: end for m, end in self._inflight.get(key, {}).items() if end > now}
        if len(members) >= limit:
            self._inflight[key] = members
            return False
        members[member] = now + lease_seconds
        self._inflight[key] = members
        return True

    async def release(self, key: str, member: str) -> None:
        members = self._inflight.get(key)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._inflight[key]


# KEYS[1] window counter; ARGV cost, limit, ttl ms. Returns {allowed, used}.
_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if used + cost > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], cost)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, used}
"""
# KEYS[1] window counter; ARGV delta. Only an existing window is corrected, never below 0.
_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return 1
"""
# KEYS[1] sorted set member -> lease end (ms); ARGV now ms, limit, lease end ms, member, ttl ms.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisCounters:
    """Every replica and worker: keys under KEY_PREFIX + 'rl:', expiring by themselves."""

    def __init__(self, redis: Redis):
        self._redis = redis
        self._take = redis.register_script(_TAKE)
        self._adjust = redis.register_script(_ADJUST)
        self._acquire = redis.register_script(_ACQUIRE)

    @staticmethod
    def _window_key(key: str, start: int) -> str:
        return f"{KEY_PREFIX}rl:{key}:{start}"

    async def take(self, key: str, cost: int, limit: int, window_seconds: int) -> Taken:
        now = time.time()
        start = window_start(window_seconds, now)
        ttl_ms = int((window_seconds + 5) * 1000)
        allowed, used = await self._take(keys=[self._window_key(key, start)], args=[cost, limit, ttl_ms])
        return Taken(bool(allowed), int(used), _reset(window_seconds, now))

    async def used(self, key: str, window_seconds: int) -> Taken:
        now = time.time()
        value = await self._redis.get(self._window_key(key, window_start(window_seconds, now)))
        return Taken(True, int(value or 0), _reset(window_seconds, now))

    async def adjust(self, key: str, window_start: int, delta: int, window_seconds: int) -> None:
        await self._adjust(keys=[self._window_key(key, window_start)], args=[delta])

    async def acquire(self, key: str, member: str, limit: int, lease_seconds: float) -> bool:
        now_ms = int(time.time() * 1000)
        lease_ms = int(lease_seconds * 1000)
        args: list[str | int] = [now_ms, limit, now_ms + lease_ms, member, lease_ms + 60_000]
        return bool(await self._acquire(keys=[f"{KEY_PREFIX}rl:{key}"], args=args))

    async def release(self, key: str, member: str) -> None:
        await self._redis.zrem(f"{KEY_PREFIX}rl:{key}", member)
