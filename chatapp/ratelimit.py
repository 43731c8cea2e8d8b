"""Fixed-window rate limits in Redis (INCR + EXPIRE in one round trip)."""
from __future__ import annotations

import time

from quart import current_app
from redis.exceptions import RedisError


async def hit(name: str, subject: str, limit: int, window_seconds: int) -> tuple[bool, int]:
    """Count one event; return (allowed, seconds until the window resets).

    Fails open when Redis is unreachable: a dead cache must not lock everyone out.
    """
    store = current_app.redis
    window = int(time.time() // window_seconds)
    key = store.key("rl", name, subject, window)
    try:
        async with store.fast.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_seconds + 1)
            count, _ = await pipe.execute()
    except (RedisError, OSError):
        return True, 0
    retry_after = window_seconds - int(time.time() % window_seconds)
    return count <= limit, retry_after


async def peek(name: str, subject: str, window_seconds: int) -> int:
    """How many events were counted in the current window."""
    store = current_app.redis
    window = int(time.time() // window_seconds)
    try:
        value = await store.fast.get(store.key("rl", name, subject, window))
    except (RedisError, OSError):
        return 0
    return int(value or 0)


async def reset(name: str, subject: str, window_seconds: int) -> None:
    """Clear the current window (after a successful login)."""
    store = current_app.redis
    window = int(time.time() // window_seconds)
    try:
        await store.fast.delete(store.key("rl", name, subject, window))
    except (RedisError, OSError):
        pass
