"""Fixed-window rate limits in Redis (INCR + EXPIRE in one round trip)."""
from __future__ import annotations

import time

from quart import current_app


async def hit(name: str, subject: str, limit: int, window_seconds: int) -> tuple[bool, int]:
    """Count one event; return (allowed, seconds until the window resets).

    Fails open when Redis is unreachable (or its circuit breaker is open): a dead cache must
    not lock everyone out, and a hung one must not stall the request.
    """
    counted = await count(name, subject, limit, window_seconds)
    return (True, 0) if counted is None else counted


async def count(name: str, subject: str, limit: int, window_seconds: int) -> tuple[bool, int] | None:
    """Like `hit`, but None when Redis is unreachable (for callers that need Redis anyway)."""
    store = current_app.redis
    window = int(time.time() // window_seconds)
    key = store.key("rl", name, subject, window)

    async def count_one() -> int:
        async with store.fast.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_seconds + 1)
            counted, _ = await pipe.execute()
        return counted

    counted = await store.guarded(count_one)
    if counted is None:
        return None
    retry_after = window_seconds - int(time.time() % window_seconds)
    return counted <= limit, retry_after


async def peek(name: str, subject: str, window_seconds: int) -> int:
    """How many events were counted in the current window."""
    store = current_app.redis
    window = int(time.time() // window_seconds)
    value = await store.guarded(lambda: store.fast.get(store.key("rl", name, subject, window)))
    return int(value or 0)


async def reset(name: str, subject: str, window_seconds: int) -> None:
    """Clear the current window (after a successful login)."""
    store = current_app.redis
    window = int(time.time() // window_seconds)
    await store.guarded(lambda: store.fast.delete(store.key("rl", name, subject, window)))
