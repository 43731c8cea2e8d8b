"""Turns an answer's Redis Stream into Server-Sent Events for one reader.

Events: `reset` (all completed blocks, replacing what the page shows; sent first when the
reader brings no Last-Event-ID), `block` (newly completed Markdown blocks, appended), `delta`
(an edit of the open part: an append, sent at once, or a replacement of the last block,
throttled; see tail_delta.py), `tail` (the open block, replaced whole when no edit can express
the change, and after a reconnect), `title`
(out-of-band swap of the thread list entry), `done` (the final message fragment). Event ids
are Redis Stream entry ids, so a reader that reconnects with Last-Event-ID gets exactly what it
missed; `delta` events carry no id (a reader that reconnects gets the whole tail again).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import AsyncIterator, Awaitable, Callable

from quart import Quart

from . import generation, hub, metrics, render, sse, tail_delta

TAIL_INTERVAL_SECONDS = 0.15  # the last block is re-sent at most this often (appends are not throttled)
_ENTRY_ID_CHARS = set("0123456789-")


def valid_entry_id(value: str | None) -> bytes | None:
    """A Last-Event-ID that looks like a Redis Stream id, else None (treated as absent)."""
    if not value or len(value) > 40 or not set(value) <= _ENTRY_ID_CHARS or value.count("-") != 1:
        return None
    return value.encode()


def wrap_block(html: str) -> str:
    """Model output goes inside hx-disable so htmx never acts on attributes in it."""
    return f'<div class="blk" hx-disable>{html}</div>'


class Relay:
    """State of one reader: the text so far and the incremental renderer."""

    def __init__(self, app: Quart, message_id: uuid.UUID,
                 render_final: Callable[[bool], Awaitable[str]],
                 render_title: Callable[[str, str], Awaitable[str]]) -> None:
        self.app, self.message_id = app, message_id
        self.render_final, self.render_title = render_final, render_title
        self.key = generation.stream_key(app, message_id)
        self.renderer = render.IncrementalRenderer()
        self.text: list[str] = []
        self.last_id = b"0-0"
        self.shown = tail_delta.ShownTail()  # what the reader's tail element shows
        self.tail_sent_at = 0.0  # when the tail element was last sent whole (or its last block)
        # Completed blocks the reader sees inside its tail element, not yet sent as `block`:
        # while `delta` edits can bring the page up to date they need not be sent twice. Only
        # `reset` and `block` events carry ids, and they leave nothing unsealed, so a reader that
        # resumes from an id holds every block completed at that entry.
        self.unsealed: list[str] = []
        self.unsealed_html = ""

    def _apply(self, entries: list[hub.Entry]) -> tuple[list[tuple[str, str]], bool]:
        """Fold entries into the text; return (title events, done?)."""
        titles, done = [], False
        for entry_id, fields in entries:
            self.last_id = entry_id
            if b"t" in fields:
                self.text.append(fields[b"t"].decode())
            elif b"title" in fields:
                titles.append((fields[b"thread"].decode(), fields[b"title"].decode()))
            elif b"done" in fields:
                done = True
        return titles, done

    def _id(self) -> str:
        return self.last_id.decode()

    async def events(self, last_event_id: bytes | None, heartbeat: float) -> AsyncIterator[bytes]:
        """Yield SSE bytes until the answer is done (or the app shuts down)."""
        gauge = metrics.of(self.app).active_streams
        gauge.inc()
        inner = self._events(last_event_id, heartbeat)
        try:
            async for chunk in inner:
                yield chunk
        finally:
            gauge.dec()
            await inner.aclose()  # unsubscribe from the hub now, not when the GC gets to it

    async def _events(self, last_event_id: bytes | None, heartbeat: float) -> AsyncIterator[bytes]:
        entries = await self.app.redis.fast.xrange(self.key)
        if last_event_id is not None:
            seen = [e for e in entries if hub._id_tuple(e[0]) <= hub._id_tuple(last_event_id)]
            self._apply(seen)
            self.renderer.update("".join(self.text))  # the reader already has these blocks
            entries = entries[len(seen):]
            if not seen:
                last_event_id = None  # an unknown id: start over with a full reset
        titles, done = self._apply(entries)
        blocks, tail = self.renderer.update("".join(self.text))
        if last_event_id is None:
            # A fresh renderer returns every completed block: replace whatever the page shows.
            yield self._blocks_event("reset", blocks, tail)
        elif blocks:
            yield self._blocks_event("block", blocks, tail)
        else:
            yield self._tail_event(tail)
        async for chunk in self._after(titles, done, tail):
            yield chunk
        if not done:
            async for chunk in self._follow(heartbeat):
                yield chunk

    @staticmethod
    def _blocks_html(blocks: list[str]) -> str:
        return "".join(wrap_block(b) for b in blocks)

    def _blocks_event(self, name: str, blocks: list[str], tail: str) -> bytes:
        """New blocks and the new tail in ONE event: the tail rides out-of-band.

        Two events could be swapped in two frames, and for one frame the page would show a
        finished paragraph twice (as a block and still in the old tail).
        """
        self.shown.replace(tail)
        self.tail_sent_at, self.unsealed, self.unsealed_html = time.monotonic(), [], ""
        oob = (f'<div id="tail-{self.message_id}" hx-swap-oob="innerHTML">'
               f'{wrap_block(tail) if tail else ""}</div>')
        return sse.encode_event(self._blocks_html(blocks) + oob, event=name, id=self._id())

    def _tail_event(self, tail: str) -> bytes:
        self.shown.replace(tail)
        self.tail_sent_at = time.monotonic()
        return sse.encode_event(wrap_block(tail) if tail else "", event="tail", id=self._id())

    def _catch_up(self, blocks: list[str], tail: str, throttled: bool) -> bytes | None:
        """The one event that brings the reader's page to the text so far, or None.

        An append goes at once; replacing the last block waits for the throttle, and when no
        edit can do it, a `block` event (sealing the completed blocks) or a whole `tail`.
        """
        if blocks:
            self.unsealed += blocks
            self.unsealed_html += "".join(blocks)
        view = self.unsealed_html + tail
        if view == self.shown.html:
            return None
        # The first text of an empty tail goes at once: it is the time to first token.
        may_replace = not throttled or not self.shown.html
        edit = self.shown.edit(view, may_replace)
        if edit is not None:
            if edit[0] == "=":
                self.tail_sent_at = time.monotonic()
            return sse.encode_event(edit, event="delta")
        if not may_replace:
            return None  # owed: sent when the throttle allows
        if self.unsealed:
            return self._blocks_event("block", self.unsealed, tail)
        return self._tail_event(tail)

    async def _after(self, titles: list[tuple[str, str]], done: bool, tail: str) -> AsyncIterator[bytes]:
        """Title announcements, and at the end the last tail and the final fragment."""
        for thread_id, title in titles:
            yield sse.encode_event(await self.render_title(thread_id, title), event="title")
        if done:
            last = self._catch_up([], tail, throttled=False)
            if last is not None:
                yield last
            # The reader holds the whole text now: the final fragment keeps its body (hx-preserve).
            yield sse.encode_event(await self.render_final(True), event="done")

    async def _follow(self, heartbeat: float) -> AsyncIterator[bytes]:
        the_hub = hub.get_hub(self.app)
        reader = await the_hub.subscribe(self.key, self.last_id)
        pending = False  # the open block changed but was sent too recently
        try:
            while True:
                wait = heartbeat
                if pending:
                    wait = max(0.0, self.tail_sent_at + TAIL_INTERVAL_SECONDS - time.monotonic())
                try:
                    entries = await reader.take(wait)
                except TimeoutError:
                    if pending:
                        owed = self._catch_up([], self.renderer.update("".join(self.text))[1], throttled=False)
                        if owed is not None:
                            yield owed
                        pending = False
                    else:
                        yield sse.encode_comment("keep-alive")
                    continue
                if entries is None:
                    return  # the instance is shutting down; the browser reconnects elsewhere
                titles, done = self._apply(entries)
                blocks, tail = self.renderer.update("".join(self.text))
                throttled = time.monotonic() - self.tail_sent_at < TAIL_INTERVAL_SECONDS
                event = self._catch_up(blocks, tail, throttled)
                if event is not None:
                    yield event
                pending = self.unsealed_html + tail != self.shown.html  # a throttled edit is owed
                async for chunk in self._after(titles, done, tail):
                    yield chunk
                if done:
                    return
        finally:
            the_hub.unsubscribe(reader)
