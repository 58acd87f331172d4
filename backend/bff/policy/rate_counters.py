"""Counters behind the rate limits: in this process, or in Redis shared by every replica.

Each step is atomic (a Lua script in Redis), so N replicas enforce one limit exactly: the
request that would cross a limit is refused, never a few after it. Windows are fixed whole
minutes; a slot in flight has a lease (a replica that dies mid-request frees its slots when
their leases run out). A paid call costs two round trips, a refusal in a flood one:
- `admit`: a slot in flight, then one request in the minute, and the tokens used so far
  (a refused request takes neither);
- `take`: the prompt's token estimate, unless it would pass the limit;
- `finish`: frees the slot and settles the estimate with the real usage.
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


@dataclass(frozen=True)
class Admission:
    """What `admit` found: refused (by which limit) or admitted, with the windows' state."""

    refused: str | None  # None: admitted; "concurrency" or "requests": nothing was taken
    requests: Taken | None  # the request window, when requests per minute are limited
    tokens: Taken | None  # the token window (read only), when tokens per minute are limited


@dataclass(frozen=True)
class AdmitKeys:
    """One user's counters and limits for `admit`; a None limit is not checked."""

    inflight: str
    member: str
    concurrent: int | None
    lease_seconds: float
    requests: str
    requests_per_minute: int | None
    tokens: str | None  # read when tokens per minute are limited


class RateCounters(Protocol):
    async def take(self, key: str, cost: int, limit: int, window_seconds: int) -> Taken: ...

    async def used(self, key: str, window_seconds: int) -> Taken: ...

    async def admit(self, keys: AdmitKeys, window_seconds: int) -> Admission:
        """A slot in flight and one request counted, both or neither, in one atomic step."""
        ...

    async def finish(
        self, inflight: str, member: str | None, tokens: str | None, reserved_in: int | None, delta: int, window_seconds: int
    ) -> None:
        """Frees `member` and settles `delta` tokens: in the reservation's window while it lasts,
        else (only when more was used) in the current one."""
        ...


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

    async def _adjust(self, key: str, window_start: int, delta: int, window_seconds: int) -> None:
        stored = self._windows.get(key)
        if stored is not None and stored[0] == window_start:
            self._windows[key] = (window_start, max(0, stored[1] + delta))

    async def _acquire(self, key: str, member: str, limit: int, lease_seconds: float) -> bool:
        now = time.monotonic()
        members = {m: end for m, end in self._inflight.get(key, {}).items() if end > now}
        if len(members) >= limit:
            self._inflight[key] = members
            return False
        members[member] = now + lease_seconds
        self._inflight[key] = members
        return True

    async def _release(self, key: str, member: str) -> None:
        members = self._inflight.get(key)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._inflight[key]


    async def admit(self, keys: AdmitKeys, window_seconds: int) -> Admission:
        if keys.concurrent is not None and self._full(keys.inflight, keys.concurrent):
            return Admission("concurrency", None, None)
        requests = None
        if keys.requests_per_minute is not None:
            requests = await self.take(keys.requests, 1, keys.requests_per_minute, window_seconds)
            if not requests.allowed:
                return Admission("requests", requests, None)
        if keys.concurrent is not None:
            await self._acquire(keys.inflight, keys.member, keys.concurrent, keys.lease_seconds)  # not full: checked above
        tokens = await self.used(keys.tokens, window_seconds) if keys.tokens is not None else None
        return Admission(None, requests, tokens)

    def _full(self, key: str, limit: int) -> bool:
        now = time.monotonic()
        return sum(1 for end in self._inflight.get(key, {}).values() if end > now) >= limit

    async def finish(
        self, inflight: str, member: str | None, tokens: str | None, reserved_in: int | None, delta: int, window_seconds: int
    ) -> None:
        if member is not None:
            await self._release(inflight, member)
        if tokens is None:
            return
        current = window_start(window_seconds)
        if reserved_in == current:
            await self._adjust(tokens, current, delta, window_seconds)
        elif delta > 0:  # the estimate's window is over: what it missed counts now
            await self.take(tokens, delta, UNBOUNDED, window_seconds)


UNBOUNDED = 2**62  # a take that only records

# KEYS[1] window counter; ARGV cost, limit, ttl ms. Returns {allowed, used}.
_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if used + cost > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], cost)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, used}
"""

# KEYS[1] in-flight set, KEYS[2] request window, KEYS[3] token window ('' : not read).
# ARGV now ms, concurrent limit (-1: none), lease end ms, member, set ttl ms, requests limit (-1: none), window ttl ms.
# Returns {0 refused by concurrency | 1 refused by requests | 2 admitted, requests used, tokens used}.
_ADMIT = """
local tokens = 0
if KEYS[3] ~= '' then tokens = tonumber(redis.call('GET', KEYS[3]) or '0') end
local concurrent = tonumber(ARGV[2])
if concurrent >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  if redis.call('ZCARD', KEYS[1]) >= concurrent then return {0, 0, tokens} end
end
local used = 0
local limit = tonumber(ARGV[6])
if limit >= 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used + 1 > limit then return {1, used, tokens} end
  used = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
if concurrent >= 0 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return {2, used, tokens}
"""
# KEYS[1] in-flight set, KEYS[2] the reservation's token window, KEYS[3] the current one ('': none).
# ARGV member ('': none), delta, window ttl ms. The delta corrects the reservation's window while it
# exists (never below 0), else, when positive, counts in the current window.
_FINISH = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if KEYS[3] == '' then return 0 end
local delta = tonumber(ARGV[2])
if KEYS[2] == KEYS[3] and redis.call('EXISTS', KEYS[2]) == 1 then
  local used = redis.call('INCRBY', KEYS[2], delta)
  if used < 0 then redis.call('SET', KEYS[2], 0, 'KEEPTTL') end
elseif KEYS[2] ~= KEYS[3] and delta > 0 then
  redis.call('INCRBY', KEYS[3], delta)
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return 1
"""


class RedisCounters:
    """Every replica and worker: keys under KEY_PREFIX + 'rl:', expiring by themselves."""

    def __init__(self, redis: Redis):
        self._redis = redis
        self._take = redis.register_script(_TAKE)
        self._admit = redis.register_script(_ADMIT)
        self._finish = redis.register_script(_FINISH)

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

    async def admit(self, keys: AdmitKeys, window_seconds: int) -> Admission:
        now = time.time()
        start = window_start(window_seconds, now)
        now_ms, lease_ms = int(now * 1000), int(keys.lease_seconds * 1000)
        redis_keys = [
            f"{KEY_PREFIX}rl:{keys.inflight}",
            self._window_key(keys.requests, start),
            self._window_key(keys.tokens, start) if keys.tokens is not None else "",
        ]
        concurrent = -1 if keys.concurrent is None else keys.concurrent
        rpm = -1 if keys.requests_per_minute is None else keys.requests_per_minute
        args: list[str | int] = [now_ms, concurrent, now_ms + lease_ms, keys.member, lease_ms + 60_000, rpm,
                                 int((window_seconds + 5) * 1000)]
        outcome, requests_used, tokens_used = await self._admit(keys=redis_keys, args=args)
        reset = _reset(window_seconds, now)
        if int(outcome) == 0:
            return Admission("concurrency", None, None)
        requests = Taken(int(outcome) == 2, int(requests_used), reset) if keys.requests_per_minute is not None else None
        tokens = Taken(True, int(tokens_used), reset) if keys.tokens is not None else None
        return Admission(None if int(outcome) == 2 else "requests", requests, tokens)

    async def finish(
        self, inflight: str, member: str | None, tokens: str | None, reserved_in: int | None, delta: int, window_seconds: int
    ) -> None:
        if member is None and tokens is None:
            return
        if tokens is None:
            await self._redis.zrem(f"{KEY_PREFIX}rl:{inflight}", member or "")
            return
        now = time.time()
        current = window_start(window_seconds, now)
        reserved = self._window_key(tokens, reserved_in) if reserved_in is not None else ""
        redis_keys = [f"{KEY_PREFIX}rl:{inflight}", reserved, self._window_key(tokens, current)]
        await self._finish(keys=redis_keys, args=[member or "", delta, int((window_seconds + 5) * 1000)])
