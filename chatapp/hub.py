"""One XREAD BLOCK loop per instance serving every open answer stream.

A blocking Redis connection per open SSE stream does not scale to thousands of readers, so
readers register here and one loop reads all their streams at once, handing each reader the
entries after its own position. A private "wake" stream interrupts the blocking read when a
new reader arrives.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from quart import Quart
from redis.exceptions import RedisError

from . import logs

log = logging.getLogger(__name__)

BLOCK_MS = 5000
Entry = tuple[bytes, dict[bytes, bytes]]


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    millis, _, seq = text.partition("-")
    return int(millis), int(seq or 0)


@dataclass(eq=False)
class Reader:
    """One stream reader's position and the batches handed to it (None: the hub is closing).

    A list and a future rather than an asyncio.Queue: a thousand idle readers hold a
    thousand of these, and a Queue carries three deques and an Event.
    """

    key: bytes
    last_id: bytes
    pending: list = field(default_factory=list)
    waiter: asyncio.Future | None = None

    def deliver(self, batch: list[Entry] | None) -> None:
        """Hand over a batch of entries (or None at shutdown)."""
        self.pending.append(batch)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def take(self, timeout: float) -> list[Entry] | None:
        """The next batch; raises TimeoutError when none comes within `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while not self.pending:
                self.waiter = asyncio.get_running_loop().create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
        return self.pending.pop(0)


class StreamHub:
    """Multiplexes many Redis Stream readers onto one blocking connection."""

    def __init__(self, app: Quart) -> None:
        self.app = app
        self.readers: dict[bytes, set[Reader]] = {}
        self.wake_key = app.redis.key("wake", uuid.uuid4().hex).encode()
        self.wake_pos = b"$"
        self.task: asyncio.Task | None = None

    async def subscribe(self, key: str, last_id: bytes) -> Reader:
        """Start receiving entries of `key` after `last_id`."""
        reader = Reader(key.encode(), last_id)
        self.readers.setdefault(reader.key, set()).add(reader)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._loop())
        await self._wake()
        return reader

    def unsubscribe(self, reader: Reader) -> None:
        """Stop delivering to a reader (its client went away)."""
        readers = self.readers.get(reader.key)
        if readers is not None:
            readers.discard(reader)
            if not readers:
                del self.readers[reader.key]

    async def _wake(self) -> None:
        try:
            async with self.app.redis.fast.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {b"w": b"1"}, maxlen=10, approximate=True)
                pipe.expire(self.wake_key, 3600)
                await pipe.execute()
        except (RedisError, OSError):
            pass  # the loop still picks the reader up within BLOCK_MS

    def _positions(self) -> dict[bytes, bytes]:
        positions = {self.wake_key: self.wake_pos}
        for key, readers in self.readers.items():
            positions[key] = min((r.last_id for r in readers), key=_id_tuple)
        return positions

    async def _loop(self) -> None:
        logs.forget_request()  # started by one reader's request, it serves every reader after
        redis = self.app.redis.blocking
        shutdown = asyncio.ensure_future(self.app.shutdown_event.wait())
        try:
            while self.readers and not self.app.shutdown_event.is_set():
                read = asyncio.ensure_future(redis.xread(self._positions(), block=BLOCK_MS, count=1000))
                await asyncio.wait({read, shutdown}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    return
                try:
                    result = read.result()
                except (RedisError, OSError) as exc:
                    log.warning("stream hub read failed: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                self._dispatch(result or [])
        finally:
            shutdown.cancel()
            for readers in self.readers.values():
                for reader in readers:
                    reader.deliver(None)  # tell readers to end (shutdown)

    def _dispatch(self, result: list) -> None:
        for key, entries in result:
            if key == self.wake_key:
                self.wake_pos = entries[-1][0]
                continue
            for reader in list(self.readers.get(key, ())):
                fresh = [e for e in entries if _id_tuple(e[0]) > _id_tuple(reader.last_id)]
                if fresh:
                    reader.last_id = fresh[-1][0]
                    reader.deliver(fresh)


def get_hub(app: Quart) -> StreamHub:
    """The instance's hub (created on first use)."""
    hub = app.extensions.get("stream_hub")
    if hub is None:
        hub = app.extensions["stream_hub"] = StreamHub(app)
    return hub
