"""Appends an answer's deltas to its Redis Stream, coalescing only what arrives within a frame.

A delta goes out at once unless the previous entry went out less than COALESCE_SECONDS ago
(then it waits for the rest of that frame, with whatever else arrives meanwhile): chunks slower
than the eye can see are never held back. A task exists only while something is being written,
so a stalled answer costs no task. Redis trouble is logged and never stops the answer: the text
is kept in memory and PostgreSQL gets it at the end.
"""
from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.016  # deltas closer than one frame (60 Hz) share one stream entry


class StreamWriter:
    """The writer of one answer's Redis Stream."""

    def __init__(self, redis, key: str) -> None:
        self.redis, self.key = redis, key
        self.pending: list[str] = []
        self.sent_at = 0.0
        self.flushing: asyncio.Task | None = None
        self.closed = False

    def add(self, text: str) -> None:
        """Queue a delta; it is written now or at the end of the current frame."""
        self.pending.append(text)
        if self.flushing is None:
            self.flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self.pending:
                wait = self.sent_at + COALESCE_SECONDS - time.monotonic()
                if wait > 0 and not self.closed:
                    await asyncio.sleep(wait)
                chunk, self.pending = "".join(self.pending), []
                self.sent_at = time.monotonic()
                try:
                    await self.redis.xadd(self.key, {b"t": chunk.encode()})
                except (RedisError, OSError) as exc:
                    log.warning("could not append to %s: %s", self.key, exc)
        finally:
            self.flushing = None

    async def close(self) -> None:
        """Write what is pending (without waiting for the frame) and stop."""
        self.closed = True
        if self.flushing is not None:
            await self.flushing
        if self.pending:
            self.flushing = asyncio.create_task(self._flush())
            await self.flushing
