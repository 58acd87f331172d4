"""The Redis that replicas and workers share (REDIS_URL), or None: state stays in this process.

Owners of shared state (rate limits, unsettled spend, alert de-duplication, image jobs)
each keep their keys under KEY_PREFIX and pick their Redis or in-process variant from this.
"""

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bff.settings import Settings

log = logging.getLogger("bff.shared_state")

KEY_PREFIX = "llm-bff:"
Redis = aioredis.Redis


def connect(settings: Settings) -> Redis | None:
    if settings.redis_url is None:
        return None
    return aioredis.from_url(
        settings.redis_url.get_secret_value(),
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
        max_connections=256,  # bounded: a burst waits for a connection instead of opening thousands
    )


async def problem(client: Redis | None) -> str | None:
    """None when Redis answers (or is not used), else a short description for /health/ready."""
    if client is None:
        return None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return f"unreachable ({type(exc).__name__})"
    return None
