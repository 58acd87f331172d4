"""Refusals of callers who come back before their Retry-After: answered when the wait is over.

A client that ignores Retry-After and retries its 429s in a tight loop costs the BFF a whole
request's handling per retry (~0.3 ms of the one event loop); a hundred such workers make
thousands of refusals a second and delay every other user's requests (scripts/bench_flood.py).
So a 429 for a user who was told to wait, and is back before that wait is over, is held until
it is (at most `max_hold_seconds`) and only then answered: a retry loop then costs one refusal
per worker per wait instead of fifty a second, and still gets its answer.

Never held: the refusal that tells a user to wait, a client that honours Retry-After, and any
admitted request. A held refusal is an open connection and a sleeping task, so they are
bounded per user and in all; past a bound refusals are answered at once, as without holds.
Per process on purpose: what is protected is this process's event loop, not a shared limit.
"""

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

_USERS_REMEMBERED = 10_000  # the users told to wait most recently; older waits are over anyway


@dataclass
class _Wait:
    until: float  # time.monotonic() at which the refusal that told the user to wait said to come back
    held: int = 0  # refusals of this user being held now


class EarlyRetries:
    def __init__(self, max_hold_seconds: float, max_held_per_user: int, max_held: int):
        self._max_hold = max_hold_seconds  # 0: never hold
        self._max_per_user = max_held_per_user
        self._max_held = max_held
        self._held = 0
        self._waits: OrderedDict[str, _Wait] = OrderedDict()

    @property
    def held(self) -> int:
        return self._held

    async def refusing(self, user_id: str | None, retry_after_seconds: float) -> float:
        """Called before a 429 with `Retry-After: retry_after_seconds` goes to `user_id`.
        Returns at once, or after holding the refusal; the result is the seconds it was held."""
        if user_id is None or self._max_hold <= 0:
            return 0.0
        now = time.monotonic()
        wait = self._waits.get(user_id)
        if wait is None or wait.until <= now:  # not told to wait, or the wait is over: told now
            self._waits[user_id] = _Wait(now + retry_after_seconds)
            self._waits.move_to_end(user_id)
            if len(self._waits) > _USERS_REMEMBERED:
                self._waits.popitem(last=False)
            return 0.0
        if wait.held >= self._max_per_user or self._held >= self._max_held:
            return 0.0
        hold = min(wait.until - now, self._max_hold)
        wait.held += 1
        self._held += 1
        try:
            await asyncio.sleep(hold)
        finally:
            wait.held -= 1
            self._held -= 1
        return hold
