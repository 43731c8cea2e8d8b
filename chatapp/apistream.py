"""An answer for API clients: text deltas as Server-Sent Events, or a wait for the final status.

Both read the same Redis Stream the browser's stream reads (`gen:<message_id>`, written by
generation.py), through the instance's shared reader (hub.py), so they work on any instance
and resume after `Last-Event-ID` exactly like the browser stream. Browsers get rendered HTML;
API clients get the model's raw text (`delta`) and the finished message as JSON (`done`).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import AsyncIterator, Awaitable, Callable

from quart import Quart

from . import generation, hub, sse

FinalMessage = Callable[[], Awaitable[str]]


def _entry_events(entries: list[hub.Entry]) -> tuple[list[bytes], bool]:
    """SSE events for stream entries, and whether the `done` entry was among them."""
    events, done = [], False
    for entry_id, fields in entries:
        event_id = entry_id.decode()
        if b"t" in fields:
            events.append(sse.encode_event(json.dumps({"text": fields[b"t"].decode()}), event="delta", id=event_id))
        elif b"title" in fields:
            payload = {"thread_id": fields[b"thread"].decode(), "title": fields[b"title"].decode()}
            events.append(sse.encode_event(json.dumps(payload), event="title", id=event_id))
        elif b"done" in fields:
            done = True
    return events, done


async def events(app: Quart, message_id: uuid.UUID, final_message: FinalMessage,
                 last_event_id: bytes | None, heartbeat: float) -> AsyncIterator[bytes]:
    """Replay the answer after `last_event_id`, follow it live, end with `done` (the message JSON)."""
    key = generation.stream_key(app, message_id)
    start = last_event_id or b"0-0"
    entries = await app.redis.fast.xrange(key, min=b"(" + start if last_event_id else b"-")
    chunks, done = _entry_events(entries)
    for chunk in chunks:
        yield chunk
    if entries:
        start = entries[-1][0]
    if not done:
        the_hub = hub.get_hub(app)
        reader = await the_hub.subscribe(key, start)
        try:
            while not done:
                try:
                    batch = await reader.take(heartbeat)
                except TimeoutError:
                    yield sse.encode_comment("keep-alive")
                    continue
                if batch is None:
                    return  # this instance is shutting down: the client reconnects with Last-Event-ID
                chunks, done = _entry_events(batch)
                for chunk in chunks:
                    yield chunk
        finally:
            the_hub.unsubscribe(reader)
    yield sse.encode_event(await final_message(), event="done")


async def wait_done(app: Quart, message_id: uuid.UUID, timeout: float) -> bool:
    """Wait until the answer's `done` entry appears (True) or `timeout` seconds pass (False)."""
    key = generation.stream_key(app, message_id)
    the_hub = hub.get_hub(app)
    reader = await the_hub.subscribe(key, b"0-0")
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                batch = await reader.take(left)
            except TimeoutError:
                return False
            if batch is None:
                return False  # shutting down: the caller answers with what PostgreSQL holds
            if any(b"done" in fields for _, fields in batch):
                return True
    finally:
        the_hub.unsubscribe(reader)
