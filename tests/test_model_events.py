"""The model's event stream as chatapp reads it (llm.read_events), byte by byte if need be.

The end-to-end path (the real SDK sending to the scripted model server) is covered by the
streaming tests; these are the shapes of the wire format that server does not produce.
"""
from __future__ import annotations

import json

import httpx2
import openai
import pytest

from chatapp import llm


def _response(body: bytes, piece: int | None = None) -> httpx2.Response:
    async def pieces():
        step = piece or len(body) or 1
        for start in range(0, len(body), step):
            yield body[start: start + step]
    return httpx2.Response(200, content=pieces(), request=httpx2.Request("POST", "http://model.test/v1/chat/completions"))


async def _read(body: bytes, piece: int | None = None) -> list[dict]:
    return [event async for event in llm.read_events(_response(body, piece))]


def _chunk(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


WIRE = (b": a comment\n\nevent: message\nid: 7\ndata: " + json.dumps(_chunk("Hel")).encode() + b"\n\n"
        b"data: " + json.dumps(_chunk("lo €"), ensure_ascii=False).encode() + b"\r\n\r\n"
        b"data: {\"choices\": [{\"index\": 0,\ndata: \"delta\": {\"content\": \"!\"}}]}\n\n"
        b"data: [DONE]\n\ndata: " + json.dumps(_chunk("after done")).encode() + b"\n\n")


@pytest.mark.parametrize("piece", [None, 1, 2, 7])
async def test_events_whole_or_split_anywhere(piece):
    events = await _read(WIRE, piece)
    texts = [e["choices"][0]["delta"]["content"] for e in events]
    assert texts == ["Hel", "lo €", "!"]  # multi-line data joined; nothing after [DONE]


async def test_last_event_without_its_blank_line_still_counts():
    body = b"data: " + json.dumps(_chunk("tail")).encode()
    assert [e["choices"][0]["delta"]["content"] for e in await _read(body)] == ["tail"]


async def test_an_error_object_raises_like_the_sdk():
    body = b"data: " + json.dumps(_chunk("a")).encode() + b"\n\ndata: {\"error\": {\"message\": \"overloaded\"}}\n\n"
    with pytest.raises(openai.APIError, match="overloaded"):
        await _read(body)
    with pytest.raises(openai.APIError, match="An error occurred during streaming"):
        await _read(b"data: {\"error\": \"x\"}\n\n")
