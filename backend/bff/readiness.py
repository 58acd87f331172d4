"""Readiness that does not flap: a dependency is down only after it stayed silent a while."""

import logging
import time

from bff.upstream.litellm import LiteLLMClient, UpstreamError

log = logging.getLogger("bff.health")


class SteadyProbe:
    """LiteLLM's liveness as readiness reports it: down only when no probe answered within
    the grace, so one slow probe on a busy machine does not flip the BFF out of service."""

    TIMEOUT_SECONDS = 3.0

    def __init__(self, litellm: LiteLLMClient, grace_seconds: float):
        self._litellm = litellm
        self._grace = grace_seconds
        self._last_ok: float | None = None

    async def problem(self) -> str | None:
        try:
            answer = await self._litellm.get("/health/liveliness", timeout_seconds=self.TIMEOUT_SECONDS)
            problem = None if answer.status_code == 200 else f"liveliness answered {answer.status_code}"
        except UpstreamError as exc:
            problem = f"unreachable ({type(exc).__name__})"
        now = time.monotonic()
        if problem is None:
            self._last_ok = now
            return None
        if self._last_ok is not None and now - self._last_ok < self._grace:
            log.warning("LiteLLM probe failed (%s); answered %.0f s ago, still ready", problem, now - self._last_ok)
            return None
        return problem
