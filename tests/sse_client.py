"""A spec-following Server-Sent Events parser and an incremental httpx2 reader for tests.

Follows the WHATWG "event stream interpretation" algorithm: lines end with CRLF, CR or
LF; a line starting with ":" is a comment; "field: value" loses one leading space;
``data`` lines are joined with LF; a blank line dispatches; the last event id persists
across events; an unfinished event at end of stream is discarded.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import re
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import httpx2

__all__ = ["Event", "SSEParser", "SSEStream", "parse_events", "connect_sse", "read_events"]

_EOL = re.compile(r"\r\n|\r|\n")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Event:
    """One dispatched event: type (default "message"), data, and the last event id."""

    event: str = "message"
    data: str = ""
    id: str = ""


class SSEParser:
    """Incremental event-stream parser; feed text or bytes, get dispatched events."""

    def __init__(self) -> None:
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._has_data = False
        self._event = ""

    def feed_bytes(self, chunk: bytes) -> list[Event]:
        """Feed raw bytes (may split UTF-8 sequences and line ends anywhere)."""
        return self.feed(self._decoder.decode(chunk))

    def feed(self, text: str) -> list[Event]:
        """Feed decoded text; return the events completed by it."""
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buf = self._buf + text
        events: list[Event] = []
        pos = 0
        for match in _EOL.finditer(buf):
            self._line(buf[pos : match.start()], events)
            pos = match.end()
            if match.group() == "\r" and pos == len(buf):
                self._skip_lf = True  # a CRLF may be split across two feeds
        self._buf = buf[pos:]
        return events

    def _line(self, line: str, events: list[Event]) -> None:
        """Process one line per the spec."""
        if line == "":
            self._dispatch(events)
            return
        if line.startswith(":"):
            self.comments.append(line[2:] if line.startswith(": ") else line[1:])
            return
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry":
            if _DIGITS.fullmatch(value):
                self.retry = int(value)

    def _dispatch(self, events: list[Event]) -> None:
        """Dispatch the buffered event (if it has data) and reset the buffers."""
        if self._has_data:
            events.append(Event(self._event or "message", "\n".join(self._data), self.last_event_id))
        self._data, self._has_data, self._event = [], False, ""


def parse_events(raw: bytes | str) -> list[Event]:
    """Parse a complete event stream; a trailing unfinished event is discarded."""
    parser = SSEParser()
    return parser.feed_bytes(raw) if isinstance(raw, (bytes, bytearray)) else parser.feed(raw)


class SSEStream:
    """An open SSE response read incrementally; iterate it for Events as they arrive."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.events: list[Event] = []

    @property
    def last_event_id(self) -> str:
        """The id to send as Last-Event-ID when reconnecting."""
        return self.parser.last_event_id

    @property
    def comments(self) -> list[str]:
        """Comment lines received so far (heartbeats)."""
        return self.parser.comments

    async def __aiter__(self) -> AsyncIterator[Event]:
        async for chunk in self.response.aiter_bytes():
            for event in self.parser.feed_bytes(chunk):
                self.events.append(event)
                yield event


@contextlib.asynccontextmanager
async def connect_sse(
    client: httpx2.AsyncClient,
    url: str,
    *,
    method: str = "GET",
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs,
) -> AsyncIterator[SSEStream]:
    """Open ``url`` as a stream (with Last-Event-ID if given) and yield an SSEStream."""
    hdrs = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id is not None:
        hdrs["Last-Event-ID"] = last_event_id
    hdrs.update(headers or {})
    async with client.stream(method, url, headers=hdrs, **kwargs) as response:
        yield SSEStream(response)


async def read_events(
    client: httpx2.AsyncClient,
    url: str,
    *,
    until: Callable[[Event], bool] | None = None,
    timeout: float = 10.0,
    **kwargs,
) -> tuple[list[Event], str]:
    """Read events until the stream ends or ``until(event)`` is true; return (events, last id).

    Raises TimeoutError if neither happens within ``timeout`` seconds.
    """
    async with connect_sse(client, url, **kwargs) as sse:
        sse.response.raise_for_status()

        async def consume() -> None:
            async for event in sse:
                if until is not None and until(event):
                    return

        await asyncio.wait_for(consume(), timeout)
        return sse.events, sse.last_event_id
