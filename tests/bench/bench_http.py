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
PASSWORD = "bench-password-123"
THREAD_RE = re.compile(r"/threads/([0-9a-f-]{36})")
# An answer that already ended (or failed) by the time the reply is rendered has no placeholder.
ANSWER_RE = re.compile(r'id="msg-([0-9a-f-]{36})" class="msg msg-assistant')


class BenchError(RuntimeError):
    """A request answered something the benchmark cannot go on with."""


def _client(base_url: str, cookies: httpx2.Cookies | None = None) -> httpx2.AsyncClient:
    """A plain-HTTP client; verify=False skips loading CA certificates (~0.2 s per client here)."""
    return httpx2.AsyncClient(base_url=base_url, cookies=cookies, timeout=60.0, follow_redirects=False,
                              verify=False, limits=httpx2.Limits(max_connections=200, max_keepalive_connections=200))


class User(WebUser):
    """A signed-up user with a bigger connection pool and the raw cookie at hand."""

    def __init__(self, base_url: str) -> None:  # noqa: D107 - WebUser's, with a cheaper client
        self.client = _client(base_url)
        self.token = ""
        self.email = ""

    @property
    def cookie(self) -> str:
        """The session cookie's value (for the raw SSE reader)."""
        return self.client.cookies.get(COOKIE) or ""

    def rebase(self, base_url: str) -> None:
        """Point the user at a restarted app (sessions live in Redis, so they survive)."""
        self.client = _client(base_url, self.client.cookies)

    async def send_message(self, thread_id: str, content: str) -> str:
        """POST a message as htmx does; return the id of the answer to stream."""
        response = await self.post(f"/threads/{thread_id}/messages", {"content": content})
        match = PLACEHOLDER_RE.search(response.text) or ANSWER_RE.search(response.text)
        if response.status_code != 200 or not match:
            raise BenchError(f"send answered {response.status_code}: {response.text[:200]}")
        return match.group(1)


async def login(self, password: str = PASSWORD) -> None:
    """Log in through the real login form (the session lands in Redis as for a person)."""
    await self.refresh_token("/login")
    response = await self.client.post("/login", data={"email": self.email, "password": password,
                                                      "csrf_token": self.token})
    if response.status_code != 303:
        raise BenchError(f"login of {self.email} answered {response.status_code}")
    await self.refresh_token("/")


User.login = login


async def create_users(bench, count: int, tag: str, concurrency: int = 8) -> list[User]:
    """`count` accounts inserted directly, then logged in over HTTP.

    The app hashes with argon2's defaults, which take ~0.5 s of CPU here and block the event
    loop; 100 signups would dominate a quick run. These rows carry a cheap argon2id hash
    (the parameters travel inside the hash, so the app's own verify is fast); the login
    path itself is the real one.
    """
    from argon2 import PasswordHasher

    from chatapp.ids import uuid7

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    emails = [f"{tag}-{i}-{uuid7().hex[-6:]}@bench.example.com" for i in range(count)]
    conn = await bench.connect_db()
    try:
        await conn.executemany("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)",
                               [(uuid7(), email, cheap) for email in emails])
    finally:
        await conn.close()
    gate = asyncio.Semaphore(concurrency)

    async def one(email: str) -> User:
        user = User(bench.url)
        user.email = email
        async with gate:
            await user.login()
        return user

    return list(await asyncio.gather(*(one(e) for e in emails)))


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
                try:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        return
                    data = (await reader.readexactly(size + 2))[:-2]
                except asyncio.IncompleteReadError:
                    raise BenchError(f"the stream of {self.answer_id} was cut (no final chunk)") from None
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


async def read_answer(port: int, user: User, answer_id: str, marker: str | None = None,
                      timeout: float = 60.0) -> dict:
    """Stream one answer to its `done` event; return arrival times and the text events."""
    try:
        async with asyncio.timeout(timeout):
            return await _read_answer(port, user, answer_id, marker)
    except TimeoutError:
        raise BenchError(f"no `done` for {answer_id} within {timeout:.0f} s") from None


async def _read_answer(port: int, user: User, answer_id: str, marker: str | None) -> dict:
    sse = await RawSSE(port, answer_id, user.cookie).open()
    first = None
    texts: list[tuple[float, str, str, str]] = []  # (arrival, event, data, event id)
    done = None
    try:
        async for arrived, event in sse.events():
            if event.event in ("reset", "block", "tail", "delta"):
                texts.append((arrived, event.event, event.data, event.id))
                if first is None and marker is not None and marker in event.data:
                    first = arrived
            elif event.event == "done":
                # A finished answer is sent whole in `done` (the GET came after the end).
                if first is None and marker is not None and marker in event.data:
                    first = arrived
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
