"""Helpers for streaming tests: wait for a final status, read what a page would show."""
from __future__ import annotations

import asyncio
import uuid

from bs4 import BeautifulSoup

FINAL = ("complete", "stopped", "interrupted", "error")


async def wait_status(db, message_id: str, statuses=FINAL, timeout: float = 10.0):
    """Poll PostgreSQL until the message reaches one of `statuses`; return its row."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        row = await db.fetchrow("SELECT status, content, error, prompt_tokens, completion_tokens, usage_estimated "
                                "FROM messages WHERE id = $1", uuid.UUID(str(message_id)))
        if row["status"] in statuses:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"message stayed {row['status']}")
        await asyncio.sleep(0.05)


def text_of(html: str) -> str:
    """Visible text with whitespace collapsed."""
    return " ".join(BeautifulSoup(html, "html.parser").get_text(" ").split())


def assemble(events) -> str:
    """The answer text a page shows after applying reset/block/tail events in order.

    `reset` and `block` events carry the new tail out-of-band (an element with hx-swap-oob).
    """
    blocks, tail = [], ""
    for event in events:
        if event.event in ("reset", "block"):
            soup = BeautifulSoup(event.data, "html.parser")
            oob = soup.find(attrs={"hx-swap-oob": True})
            if oob is not None:
                tail = oob.decode_contents()
                oob.extract()
            blocks = [str(soup)] if event.event == "reset" else blocks + [str(soup)]
        elif event.event == "tail":
            tail = event.data
        elif event.event == "delta":
            tail = apply_delta(tail, event.data)
    return text_of("".join(blocks) + tail)


def apply_delta(tail: str, data: str) -> str:
    """The tail HTML after a `delta` event, applied as static/app.js does."""
    op, _, fragment = data.partition(" ")
    soup = BeautifulSoup(tail, "html.parser")
    element = soup.find()  # the block's wrapper
    assert element is not None, f"a delta on an empty tail: {data!r}"
    if op == "=":
        last = element.find_all(recursive=False)[-1]
        while last.next_sibling is not None:
            last.next_sibling.extract()
        last.replace_with(BeautifulSoup(fragment, "html.parser"))
        return str(soup)
    assert op.startswith("+"), f"unknown delta {data!r}"
    for _ in range(int(op[1:])):
        children = element.find_all(recursive=False)
        assert children, f"a delta for depth {op} on a tail without it: {tail!r}"
        element = children[-1]
    element.append(BeautifulSoup(fragment, "html.parser"))
    return str(soup)


def page_text(events) -> str:
    """What a page shows once the stream ended with `done`.

    A `done` fragment whose body is not `hx-preserve` (the stream was answered from PostgreSQL,
    e.g. after reconnecting to a finished answer) replaces the streamed text; otherwise the page
    keeps what the reset/block/tail events built.
    """
    if events and events[-1].event == "done":
        body = BeautifulSoup(events[-1].data, "html.parser").select_one(".msg-body")
        if body is not None and not body.has_attr("hx-preserve"):
            return text_of(str(body))
    return assemble(events)
