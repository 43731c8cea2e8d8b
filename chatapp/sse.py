"""Server-Sent Events encoding (WHATWG HTML, "Server-sent events").

Every line of the data gets its own ``data:`` field, so text with newlines (HTML
fragments) survives; a parser joins the lines back with ``\\n``. CR and CRLF in the
data come back as LF: the format cannot carry them.
"""

from __future__ import annotations

import re

__all__ = ["encode_event", "encode_comment", "stream_response"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _check_field(name: str, value: str) -> None:
    """Raise ValueError when a single-line field value would break the framing."""
    if not isinstance(value, str):
        raise TypeError(f"SSE {name} must be a str, not {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"SSE {name} must not contain a line break: {value!r}")


def encode_event(
    data: str,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one event as UTF-8 bytes ending with a blank line."""
    if not isinstance(data, str):
        raise TypeError(f"SSE data must be a str, not {type(data).__name__}")
    parts: list[str] = []
    if event is not None:
        _check_field("event", event)
        parts.append(f"event: {event}\n")
    if id is not None:
        _check_field("id", id)
        if "\0" in id:  # a spec-following client ignores such an id
            raise ValueError("SSE id must not contain NUL")
        parts.append(f"id: {id}\n")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"SSE retry must be a non-negative int: {retry!r}")
        parts.append(f"retry: {retry}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """Encode a comment block (e.g. a heartbeat): ``: text`` lines and a blank line."""
    if not isinstance(text, str):
        raise TypeError(f"SSE comment must be a str, not {type(text).__name__}")
    lines = _LINE_BREAK.split(text)
    return ("".join(f": {line}\n" if line else ":\n" for line in lines) + "\n").encode("utf-8")


async def stream_response(body):
    """An event-stream response for an async iterator of encoded events.

    No caching, no proxy buffering (nginx reads X-Accel-Buffering), and no response timeout:
    an answer may stream for minutes.
    """
    from quart import make_response

    response = await make_response(body, 200, {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    response.timeout = None
    return response
