"""Background duties of every instance: hearing stop requests, and reaping orphaned answers.

An answer whose instance died (kill -9, lost machine) stays `streaming` in PostgreSQL with
no lease in Redis. The reaper, run by one instance at a time under a Redis lock, saves the
text that reached the Redis Stream and marks the answer `interrupted`.
"""
from __future__ import annotations

import asyncio
import logging
import uuid

from quart import Quart
from redis.exceptions import RedisError

from . import generation, metrics
from .models import messages

log = logging.getLogger(__name__)


async def _sleep_or_shutdown(app: Quart, seconds: float) -> bool:
    """Sleep; True when the app is shutting down (periodic tasks must return at once)."""
    try:
        await asyncio.wait_for(app.shutdown_event.wait(), timeout=seconds)
        return True
    except TimeoutError:
        return False


async def listen_for_stops(app: Quart) -> None:
    """Relay stop requests published by any instance to generations running here."""
    channel = app.redis.key("stop-channel")
    shutdown = asyncio.ensure_future(app.shutdown_event.wait())
    try:
        while not app.shutdown_event.is_set():
            pubsub = app.redis.blocking.pubsub()
            try:
                await pubsub.subscribe(channel)
                while True:
                    # Race the next message against shutdown so stopping the app never waits on Redis.
                    listen = asyncio.ensure_future(pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0))
                    await asyncio.wait({listen, shutdown}, return_when=asyncio.FIRST_COMPLETED)
                    if not listen.done():
                        listen.cancel()
                        return
                    message = listen.result()
                    if message and message.get("type") == "message":
                        _deliver_stop(app, message["data"])
            except (RedisError, OSError) as exc:
                log.warning("stop listener lost Redis: %s", exc)
                if await _sleep_or_shutdown(app, 1.0):
                    return
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError, asyncio.CancelledError):
                    pass
    finally:
        shutdown.cancel()


def _deliver_stop(app: Quart, data: bytes) -> None:
    try:
        message_id = uuid.UUID(data.decode())
    except ValueError:
        return
    running = app.extensions["generations"].get(message_id)
    if running is not None:
        running.stop.set()


async def stream_text(app: Quart, message_id: uuid.UUID) -> str:
    """The text of an answer as far as it reached its Redis Stream."""
    entries = await app.redis.fast.xrange(generation.stream_key(app, message_id))
    return "".join(fields[b"t"].decode() for _, fields in entries if b"t" in fields)


async def reap_once(app: Quart, min_age_seconds: float | None = None) -> list[uuid.UUID]:
    """Mark streaming answers with a lapsed lease as interrupted; return their ids."""
    lease_seconds = app.config["CHATAPP_LEASE_SECONDS"]
    min_age = lease_seconds if min_age_seconds is None else min_age_seconds
    redis = app.redis.fast
    lock = app.redis.key("reaper-lock")
    if not await redis.set(lock, b"1", nx=True, px=int(max(1.0, app.config["CHATAPP_REAPER_INTERVAL_SECONDS"]) * 1000)):
        return []
    reaped = []
    metrics.of(app).reaper_runs.inc()
    try:
        async with app.db.acquire() as conn:
            candidates = await messages.select_streaming(conn, min_age)
        for message_id in candidates:
            if message_id in app.extensions["generations"]:
                continue  # running right here
            if await redis.exists(generation.lease_key(app, message_id)):
                continue
            text = await stream_text(app, message_id)
            async with app.db.acquire() as conn:
                won = await messages.finish_message(
                    conn, message_id, content=text, status="interrupted",
                    error="The server answering this message stopped before it finished.",
                )
            if won:
                await generation.publish_done(app, message_id, "interrupted")
                reaped.append(message_id)
                metrics.of(app).reaper_interrupted.inc()
                log.info("reaped answer %s (%d characters kept)", message_id, len(text))
    finally:
        await redis.delete(lock)
    return reaped


async def reap_forever(app: Quart) -> None:
    """Run the reaper every CHATAPP_REAPER_INTERVAL_SECONDS until shutdown."""
    interval = app.config["CHATAPP_REAPER_INTERVAL_SECONDS"]
    while not await _sleep_or_shutdown(app, interval):
        try:
            await reap_once(app)
        except Exception as exc:  # Redis or PostgreSQL away: try again next round
            log.warning("reaper round failed: %s", exc)
