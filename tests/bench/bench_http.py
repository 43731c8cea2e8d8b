"""HTTP clients of the benchmarks: signed-up users (httpx2) and a raw-socket SSE reader.

The SSE reader speaks HTTP/1.1 over asyncio streams directly: thousands of open streams in
one process cost little, and each chunk is timestamped the moment it leaves the socket.
"""
from __future__ import annotations

import asyncio
import re
import statistics
import time
from typing import AsyncIterator

import httpx2

from live import PLACEHOLDER_RE, WebUser  # tests/ is on sys.path (bench_app)
from sse_client import Event, SSEParser

COOKIE = "chatapp_session"
THREAD_RE = re.compile(r"/threads/([0-9a-f-]{36})")


class BenchError(RuntimeError):
    """A request answered something the benchmark cannot go on with."""


class User(WebUser):
    """A signed-up user with a bigger connection pool and the raw cookie at hand."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.client = httpx2.AsyncClient(base_url=base_url, timeout=120.0, follow_redirects=False,
                                         limits=httpx2.Limits(max_connections=200, max_keepalive_connections=200))
        self.email = ""

    @property
    def cookie(self) -> str:
        """The session cookie's value (for the raw SSE reader)."""
        return self.client.cookies.get(COOKIE) or ""

    def rebase(self, base_url: str) -> None:
        """Point the user at a restarted app (sessions live in Redis, so they survive)."""
        cookies = self.client.cookies
        self.client = httpx2.AsyncClient(base_url=base_url, cookies=cookies, timeout=120.0,
                                         follow_redirects=False,
                                         limits=httpx2.Limits(max_connections=200, max_keepalive_connections=200))

    async def send_message(self, thread_id: str, content: str) -> str:
        """POST a message as htmx does; return the id of the answer to stream."""
        response = await self.post(f"/threads/{thread_id}/messages", {"content": content})
        match = PLACEHOLDER_RE.search(response.text)
        if response.status_code != 200 or not match:
            raise BenchError(f"send answered {response.status_code}: {response.text[:200]}")
        return match.group(1)


async def signup_users(base_url: str, count: int, tag: str, concurrency: int = 4) -> list[User]:
    """Sign up `count` users (argon2 makes each cost ~0.1 s of app CPU)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> User:
        user = User(base_url)
        user.email = f"{tag}-{i}@bench.example.com"
        async with gate:
            await user.signup(user.email, "bench-password-123")
        return user

    return list(await asyncio.gather(*(one(i) for i in range(count))))


class RawSSE:
    """One `GET /messages/<id>/stream` over a plain socket; chunks are timestamped on arrival."""

    def __init__(self, port: int, answer_id: str, cookie: str, last_event_id: str | None = None) -> None:
        self.port, self.answer_id, self.cookie = port, answer_id, cookie
        self.last_event_id = last_event_id
        self.parser = SSEParser()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.chunked = True

    async def open(self) -> "RawSSE":
        """Connect and read the response head; raise BenchError unless 200."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
        extra = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id else ""
        self.writer.write(
            f"GET /messages/{self.answer_id}/stream HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{extra}"
            f"Cookie: {COOKIE}={self.cookie}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            self.close()
            raise BenchError(f"stream answered {status}")
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        return self

    async def chunks(self) -> AsyncIterator[tuple[float, bytes]]:
        """Body chunks with their arrival time (time.time()) until the response ends."""
        reader = self.reader
        while True:
            if self.chunked:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    return
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
            yield time.time(), data

    async def events(self) -> AsyncIterator[tuple[float, Event]]:
        """Parsed events with the arrival time of the chunk that completed them."""
        async for arrived, data in self.chunks():
            for event in self.parser.feed_bytes(data):
                yield arrived, event

    @property
    def heartbeats(self) -> int:
        """Comment lines (keep-alives) received so far."""
        return len(self.parser.comments)

    def close(self) -> None:
        """Drop the connection (as a closed browser tab does)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def read_answer(port: int, user: User, answer_id: str, marker: str | None = None) -> dict:
    """Stream one answer to its `done` event; return arrival times and the text events."""
    sse = await RawSSE(port, answer_id, user.cookie).open()
    first = None
    texts: list[tuple[float, str, str]] = []
    done = None
    try:
        async for arrived, event in sse.events():
            if event.event in ("reset", "block", "tail"):
                texts.append((arrived, event.event, event.data))
                if first is None and marker is not None and marker in event.data:
                    first = arrived
            elif event.event == "done":
                done = (arrived, event.data)
                break
    finally:
        sse.close()
    if done is None:
        raise BenchError(f"stream of {answer_id} ended without `done`")
    return {"first": first, "texts": texts, "done_at": done[0], "done": done[1]}


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank on sorted values, linear between neighbours)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(pct) - 1] if pct < 100 else ordered[-1]


def new_thread_id(response: httpx2.Response) -> str:
    """The thread id a `POST /threads` redirect names."""
    match = THREAD_RE.search(response.headers.get("location", ""))
    if not match:
        raise BenchError(f"POST /threads answered {response.status_code}")
    return match.group(1)
