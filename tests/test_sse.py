"""SSE encoding (chatapp.sse) against the spec-following parser in tests/sse_client.py."""

from __future__ import annotations

import asyncio
import re

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatapp.sse import encode_comment, encode_event

try:
    from sse_client import Event, SSEParser, connect_sse, parse_events, read_events
except ImportError:  # tests/ is a package
    from tests.sse_client import Event, SSEParser, connect_sse, parse_events, read_events

_chars = st.characters(blacklist_categories=("Cs",))
_tricky = st.sampled_from(["\r", "\n", "\r\n", "\n\n", " ", "  ", ":", ": ", "data: x", "\ufeff", "\0",
                           "\u2028", "\x85", "\x0b", "<p>", "é", "😀"])
DATA = st.lists(st.one_of(_tricky, _chars), max_size=30).map("".join)
LINE = st.lists(st.one_of(st.sampled_from([" ", ":", ": ", "\0", "😀", "\u2028"]),
                          st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")),
                max_size=12).map("".join)
EVENT_NAME = st.none() | LINE
EVENT_ID = st.none() | LINE.map(lambda s: s.replace("\0", ""))
RETRY = st.none() | st.integers(min_value=0, max_value=10**9)


def normalized(data: str) -> str:
    """What a parser gives back: CR and CRLF become LF."""
    return re.sub(r"\r\n?", "\n", data)


@settings(max_examples=300, deadline=None)
@given(data=DATA, event=EVENT_NAME, id=EVENT_ID, retry=RETRY)
def test_round_trip_one_event(data, event, id, retry):
    raw = encode_event(data, event=event, id=id, retry=retry)
    assert raw.endswith(b"\n\n")
    assert parse_events(raw) == [Event(event or "message", normalized(data), id or "")]
    parser = SSEParser()
    parser.feed_bytes(raw)
    assert parser.retry == retry


@settings(deadline=None)
@given(st.lists(st.tuples(DATA, EVENT_NAME, EVENT_ID), max_size=8), st.lists(LINE, max_size=3))
def test_round_trip_many_events_with_comments(items, comments):
    raw = b""
    expected = []
    last_id = ""
    for i, (data, event, id) in enumerate(items):
        if comments and i % 2 == 0:
            raw += encode_comment(comments[i % len(comments)])
        raw += encode_event(data, event=event, id=id)
        last_id = id if id is not None else last_id  # the id persists across events
        expected.append(Event(event or "message", normalized(data), last_id))
    assert parse_events(raw) == expected
    assert parse_events(raw.decode("utf-8")) == expected


@settings(deadline=None)
@given(st.lists(st.tuples(DATA, EVENT_NAME, EVENT_ID), min_size=1, max_size=4), st.data())
def test_incremental_parse_any_split(items, split):
    raw = b"".join(encode_event(d, event=e, id=i) for d, e, i in items)
    cuts = sorted(split.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    parser = SSEParser()
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)]):
        events += parser.feed_bytes(raw[start:end])  # may split UTF-8 sequences and CRLF
    assert events == parse_events(raw)


@settings(deadline=None)
@given(LINE)
def test_comment_is_ignored_and_recorded(text):
    raw = encode_comment(text)
    assert raw.endswith(b"\n\n") and raw.startswith(b":")
    parser = SSEParser()
    assert parser.feed_bytes(raw) == []
    assert parser.comments == [text]


def test_encoding_examples():
    assert encode_event("hi") == b"data: hi\n\n"
    assert encode_event("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert encode_event("", event="done", id="7", retry=1000) == b"event: done\nid: 7\nretry: 1000\ndata: \n\n"
    assert encode_event("<p>é</p>") == "data: <p>é</p>\n\n".encode()
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment() == b":\n\n"
    assert encode_comment("a\nb") == b": a\n: b\n\n"


@pytest.mark.parametrize("kwargs", [
    {"event": "a\nb"}, {"event": "a\rb"}, {"event": "\r\n"},
    {"id": "1\n"}, {"id": "\r1"}, {"id": "1\0"},
    {"retry": -1}, {"retry": True}, {"retry": 1.5},
])
def test_invalid_fields_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        encode_event("data", **kwargs)


def test_non_str_data_raises_type_error():
    with pytest.raises(TypeError):
        encode_event(b"bytes")  # type: ignore[arg-type]


def test_parser_spec_details():
    raw = (
        "\ufeffdata:no space\n\n"  # BOM at stream start is dropped; no space after the colon
        "data:  two spaces\n\n"  # only one leading space is removed
        "data\n\n"  # a field name alone: empty value -> an event with empty data
        "event: only-type\n\n"  # no data: nothing dispatched
        "id: 5\nfoo: unknown field\nretry: soon\ndata: x\r\n\r\n"  # unknown field and bad retry ignored
        "data: y\r\rid\n"  # CR line ends; "id" alone resets the id to ""
        "data: z\n\n"
        "id: 9\0\ndata: nul id ignored\n\n"
        "data: unfinished"  # discarded at end of stream
    )
    assert parse_events(raw) == [
        Event("message", "no space", ""),
        Event("message", " two spaces", ""),
        Event("message", "", ""),
        Event("message", "x", "5"),
        Event("message", "y", "5"),
        Event("message", "z", ""),
        Event("message", "nul id ignored", ""),
    ]


@pytest.mark.asyncio
async def test_async_reader_yields_events_as_they_arrive():
    got_first = asyncio.Event()
    seen_headers = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        except ConnectionError:  # the second client stops reading early
            pass

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        seen_headers.update(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        writer.write(encode_event("first", id="1") + encode_comment("heartbeat"))
        await writer.drain()
        await asyncio.wait_for(got_first.wait(), 5)  # the client saw event 1 before event 2 exists
        second = encode_event("é\nsecond", event="update", id="2").replace(b"\n", b"\r\n")
        cut = second.index("é".encode()) + 1  # split inside a UTF-8 sequence, then inside a CRLF
        for piece in (second[:cut], second[cut:-1], second[-1:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(encode_event("third"))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/stream"
    try:
        async with httpx2.AsyncClient(timeout=5) as client:
            async with connect_sse(client, url, last_event_id="0") as sse:
                assert sse.response.status_code == 200
                received = []
                async for event in sse:
                    received.append(event)
                    got_first.set()
            assert seen_headers["last-event-id"] == "0"
            assert seen_headers["accept"] == "text/event-stream"
            assert received == [Event("message", "first", "1"), Event("update", "é\nsecond", "2"),
                                Event("message", "third", "2")]
            assert sse.events == received and sse.last_event_id == "2" and sse.comments == ["heartbeat"]

            events, last_id = await read_events(client, url, until=lambda e: e.data == "first", timeout=5)
            assert events == [Event("message", "first", "1")] and last_id == "1"
    finally:
        server.close()
