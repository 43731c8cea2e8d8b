"""Runs each answer in the background: model deltas -> Redis Stream -> PostgreSQL once at the end.

The Redis Stream `gen:<message_id>` holds the answer's text as it arrives so any instance can
replay and tail it; a lease key shows the generating instance is alive; a stop flag (plus a
pub/sub nudge) stops it from any instance. The final text, status and usage are written to
PostgreSQL in one UPDATE; only then is the `done` entry appended.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from quart import Quart
from redis.exceptions import RedisError

from . import llm, metrics, prompt, titles
from .stream_writer import StreamWriter
from .models import messages

log = logging.getLogger(__name__)

STREAM_TTL_SECONDS = 3600  # finished streams linger for readers that reconnect late


class StopSignal:
    """Asks a running answer to stop by cancelling its task; the answer then ends `stopped`.

    A cancel rather than a task watching an Event: one task less per running answer.
    """

    def __init__(self) -> None:
        self.requested = False
        self.task: asyncio.Task | None = None  # None once the answer is being recorded

    def set(self) -> None:
        """Request the stop (idempotent)."""
        if self.requested:
            return
        self.requested = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self.requested


@dataclass
class Running:
    """One generation running in this process."""

    message_id: uuid.UUID
    stop: StopSignal = field(default_factory=StopSignal)
    text: list[str] = field(default_factory=list)
    spawned_at: float = field(default_factory=time.monotonic)  # the send was acknowledged
    preloaded: tuple | None = None  # (thread, turns) from the send's own statement
    first_token_at: float | None = None


def stream_key(app: Quart, message_id: uuid.UUID | str) -> str:
    """The Redis Stream of one answer."""
    return app.redis.key("gen", message_id)


def lease_key(app: Quart, message_id: uuid.UUID | str) -> str:
    """The lease that shows an answer's instance is alive."""
    return app.redis.key("lease", message_id)


def stop_key(app: Quart, message_id: uuid.UUID | str) -> str:
    """The flag that asks an answer to stop."""
    return app.redis.key("stop", message_id)


def spawn(app: Quart, message_id: uuid.UUID, preloaded: tuple | None = None) -> None:
    """Start generating an answer in the background (never inside the request).

    `preloaded` is (thread, turns before the answer) when the caller already holds them.
    """
    running = Running(message_id, preloaded=preloaded)
    app.extensions["generations"][message_id] = running
    app.add_background_task(_run, app, running)


async def request_stop(app: Quart, message_id: uuid.UUID) -> None:
    """Ask the generating instance, wherever it is, to stop this answer."""
    redis = app.redis.fast
    await redis.set(stop_key(app, message_id), b"1", ex=STREAM_TTL_SECONDS)
    await redis.publish(app.redis.key("stop-channel"), str(message_id).encode())
    local = app.extensions["generations"].get(message_id)
    if local is not None:
        local.stop.set()


async def keep_leases(app: Quart) -> None:
    """One task per instance: refresh every running answer's lease, notice stop flags set anywhere.

    One pipelined round trip for all answers instead of a task and two commands per answer (at
    1,000 concurrent answers those commands were ~9% of a worker's CPU). The stop flag check
    backs up the pub/sub nudge, which a reconnecting listener can miss.
    """
    seconds = app.config["CHATAPP_LEASE_SECONDS"]
    while True:
        try:
            await asyncio.wait_for(app.shutdown_event.wait(), timeout=max(0.2, seconds / 3))
            return  # shutting down: the running answers end as interrupted, leases lapse
        except TimeoutError:
            pass
        running = list(app.extensions["generations"].values())
        if running:
            await refresh_leases(app, running, seconds)


async def refresh_leases(app: Quart, running: list[Running], seconds: float) -> None:
    """Set the leases of these answers and raise their stop events if a stop flag is set."""
    try:
        async with app.redis.fast.pipeline(transaction=False) as pipe:
            for item in running:
                pipe.set(lease_key(app, item.message_id), b"1", ex=seconds)
            pipe.mget([stop_key(app, item.message_id) for item in running])
            *_, flags = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("lease refresh failed for %d answers: %s", len(running), exc)
        return
    for item, flag in zip(running, flags):
        if flag:
            item.stop.set()


_first_leases: set[asyncio.Task] = set()


async def _run(app: Quart, running: Running) -> None:
    """Generate one answer from start to final status."""
    started = time.monotonic()
    message_id = running.message_id
    outcome: dict = {"status": "error", "error": "The answer could not be generated."}
    writer = StreamWriter(app.redis.fast, stream_key(app, message_id))
    # The instance's refresher keeps the lease from now on; the first one is set here so the
    # reaper never sees a fresh answer without one (held in a set, not for the answer's life).
    first_lease = asyncio.create_task(refresh_leases(app, [running], app.config["CHATAPP_LEASE_SECONDS"]))
    _first_leases.add(first_lease)
    first_lease.add_done_callback(_first_leases.discard)
    del first_lease
    stream = None
    model = None
    running.stop.task = asyncio.current_task()
    try:
        if running.stop.is_set():
            raise asyncio.CancelledError  # stopped before it started
        if running.preloaded is not None:
            (thread, history), running.preloaded = running.preloaded, None
        else:
            async with app.db.acquire() as conn:
                thread, history = await prompt.load_for_answer(conn, message_id)
        model = thread.model or app.config["CHATAPP_DEFAULT_MODEL"]
        client = llm.client_of(app)
        if client is None:
            outcome = {"status": "error", "error": llm.NOT_CONFIGURED}
            return
        budget = app.config["CHATAPP_CONTEXT_TOKENS"]
        stream = llm.stream_reply(app, client, prompt.build(thread, history, budget), model,
                                  prompt.sampling_params(thread))
        async for delta in stream:  # a cancel closes the upstream response: the provider stops too
            if running.first_token_at is None:
                running.first_token_at = time.monotonic()
            running.text.append(delta)
            writer.add(delta)
        if stream.finish_reason is None:
            # A stream that ends without finish_reason was cut off: never call it complete.
            outcome = {"status": "interrupted", "error": "The model server ended the answer early."}
        else:
            outcome = {"status": "complete", "finish_reason": stream.finish_reason}
    except asyncio.CancelledError:
        if running.stop.is_set():
            asyncio.current_task().uncancel()  # the stop is handled: recording may await again
            outcome = {"status": "stopped"}
        else:
            # Shutdown (SIGTERM) cancels background tasks: keep the partial text as interrupted.
            outcome = {"status": "interrupted", "error": "The server restarted while answering."}
    except Exception as exc:  # the model, the database or something unexpected: record it
        log.info("answer %s failed: %r", message_id, exc, exc_info=not llm.is_model_error(exc))
        outcome = {"status": "interrupted" if running.text else "error", "error": llm.describe_error(exc)}
    finally:
        running.stop.task = None  # a late stop must not cancel the recording below
        await _finish(app, running, writer, stream, model, outcome, started)


async def _finish(app: Quart, running: Running, writer: StreamWriter, stream, model, outcome, started) -> None:
    """Persist the final state (one UPDATE), then tell readers with a `done` entry."""
    message_id = running.message_id
    text = "".join(running.text)
    usage = stream.usage if stream is not None else None
    try:
        await asyncio.shield(writer.close())
        async with app.db.acquire() as conn:
            won = await messages.finish_message(
                conn, message_id, content=text, status=outcome["status"], model=model,
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                usage_estimated=bool(usage and usage.estimated),
                finish_reason=outcome.get("finish_reason"),
                duration_ms=int((time.monotonic() - started) * 1000), error=outcome.get("error"),
            )
            if won:
                _count(app, running, outcome["status"], usage)
            if won and outcome["status"] == "complete":
                await titles.maybe_title(app, conn, message_id, text)
        await publish_done(app, message_id, outcome["status"])
    except Exception:
        log.exception("could not record the end of answer %s; the reaper will", message_id)
    finally:
        app.extensions["generations"].pop(message_id, None)
        try:
            await app.redis.fast.delete(lease_key(app, message_id))
        except (RedisError, OSError):
            pass


def _count(app: Quart, running: Running, status: str, usage) -> None:
    """Metrics of one finished answer: outcome, time to first token, tokens."""
    instruments = metrics.of(app)
    instruments.generations.inc(status=status)
    if running.first_token_at is not None:
        instruments.first_token_seconds.observe(running.first_token_at - running.spawned_at)
    if usage is not None:
        instruments.tokens.inc(usage.prompt_tokens, kind="prompt")
        instruments.tokens.inc(usage.completion_tokens, kind="completion")


async def publish_done(app: Quart, message_id: uuid.UUID, status: str) -> None:
    """Append the final `done` entry and let the stream expire later."""
    key = stream_key(app, message_id)
    async with app.redis.fast.pipeline(transaction=True) as pipe:
        pipe.xadd(key, {b"done": status.encode()})
        pipe.expire(key, STREAM_TTL_SECONDS)
        await pipe.execute()


def init_app(app: Quart) -> None:
    """Create the model client and start the stop listener and the reaper with the app."""
    from . import reaper

    app.extensions["generations"] = {}
    app.config.setdefault("BACKGROUND_TASK_SHUTDOWN_TIMEOUT", 5)

    @app.before_serving
    async def _start() -> None:
        app.extensions["llm"] = None  # built on first use: the SDK is imported only then
        app.add_background_task(reaper.listen_for_stops, app)
        app.add_background_task(keep_leases, app)
        app.add_background_task(reaper.reap_forever, app)

    @app.after_serving
    async def _stop() -> None:
        client = app.extensions.pop("llm", None)
        if client is not None:
            await client.close()
