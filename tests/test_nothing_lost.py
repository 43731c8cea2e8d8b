"""Nothing lost: many concurrent chats under random model faults and reconnecting readers.

CHATAPP_STRESS_CHATS chats (10 by default; the full run is
`CHATAPP_STRESS_CHATS=50 python -m pytest tests/test_nothing_lost.py`) of 10 messages each,
on two app instances. The model server answers each message with a seeded random mix of a
normal answer, a cut connection, a stream without [DONE], an error event, a stall (longer than
CHATAPP_MODEL_READ_TIMEOUT) and a 429/500 before the first byte. Readers drop their SSE
connection at random and reconnect, to either instance, with Last-Event-ID (or without it, as
htmx-ext-sse does after a hard close). Then:

- every acknowledged user message (HTTP 200 on send) is in PostgreSQL;
- every answer ends in exactly one final status, with exactly the text the model server sent
  before its fault, and the page a reader assembled from the events shows that text;
- nothing is left `streaming` after the reaper interval;
- reconnects never cause a second model call (one streaming request per answer).
"""
from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest

from chatapp import render
from live import PLACEHOLDER_RE, WebUser
from model_server import Reply, last_user_message
from sse_client import connect_sse
from streamtools import page_text, text_of

pytestmark = pytest.mark.slow

CHATS = int(os.environ.get("CHATAPP_STRESS_CHATS", "10"))
MESSAGES = int(os.environ.get("CHATAPP_STRESS_MESSAGES", "10"))
SEED = int(os.environ.get("CHATAPP_STRESS_SEED", "20260407"))
READ_TIMEOUT = 2.0  # CHATAPP_MODEL_READ_TIMEOUT: a stall ends the answer after this
REAPER_INTERVAL, LEASE = 1.0, 5
KINDS = ["normal"] * 8 + ["cut"] * 2 + ["no_done"] * 2 + ["error_event"] * 2 + ["stall"] * 2 + ["429", "500"]
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()


def _text(rng: random.Random) -> str:
    """An answer with paragraphs, a list and sometimes code, so blocks complete mid-stream."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        shape = rng.random()
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        if shape < 0.6:
            parts.append(words.capitalize() + ".")
        elif shape < 0.85:
            parts.append("\n".join(f"- {w}" for w in words.split()[:4]))
        else:
            parts.append(f"```\n{words}\n```")
    return "\n\n".join(parts)


def scripted(body: dict) -> Reply:
    """The model server's answer, chosen by a seeded RNG from the question (order-independent)."""
    if not body.get("stream"):
        return Reply.text("A Title")  # automatic titles: not what this test counts
    question = last_user_message(body)
    rng = random.Random(f"{SEED}:{question}")
    kind = rng.choice(KINDS)
    reply = Reply.text(_text(rng), delay=rng.choice([0.0, 0.005, 0.01, 0.02]))
    if kind in ("429", "500"):
        return Reply(fault="status", status=int(kind), first_delay=rng.choice([0.0, 0.05]))
    if kind != "normal":
        reply.fault = kind
        if kind in ("cut", "error_event", "stall"):
            reply.fault_after = rng.randint(0, len(reply.chunks))
    return reply


def expected(reply: Reply) -> tuple[str, str]:
    """(status, stored text) an answer must end with, given what the model server sent."""
    if reply.fault == "status":
        return "error", ""
    sent = reply.chunks if reply.fault_after is None else reply.chunks[: reply.fault_after]
    text = "".join(sent)
    if reply.fault is None:
        return "complete", text
    if reply.fault == "no_done":
        return "interrupted", text
    return ("interrupted" if text else "error"), text


@dataclass
class Answer:
    """One acknowledged exchange and what its reader saw."""

    question: str
    answer_id: str
    events: list = field(default_factory=list)
    connections: int = 0
    final_html: str = ""


async def _read_answer(readers: list[WebUser], answer: Answer, rng: random.Random) -> None:
    """Follow one answer like a flaky browser: drop at random, reconnect anywhere."""
    last_id: str | None = None
    for _ in range(50):
        reader = rng.choice(readers)
        answer.connections += 1
        budget = rng.randint(1, 6) if rng.random() < 0.6 else 10_000  # events before dropping
        send_id = last_id if rng.random() < 0.8 else None  # sometimes a hard close: no id
        async with connect_sse(reader.client, f"/messages/{answer.answer_id}/stream",
                               last_event_id=send_id) as stream:
            assert stream.response.status_code == 200
            events = _with_timeout(stream, 30)
            try:
                async for event in events:
                    answer.events.append(event)
                    if event.event == "done":
                        answer.final_html = event.data
                        return
                    budget -= 1
                    if budget <= 0:
                        break
            finally:
                await events.aclose()
            last_id = stream.last_event_id or last_id
    raise AssertionError(f"answer {answer.answer_id} never finished")


async def _with_timeout(stream, seconds: float):
    iterator = stream.__aiter__()
    try:
        while True:
            try:
                yield await asyncio.wait_for(iterator.__anext__(), seconds)
            except StopAsyncIteration:
                return
    finally:
        await iterator.aclose()


async def _chat(index: int, servers, answers: list[Answer], acknowledged: list[str], refused: list,
                signups: asyncio.Semaphore) -> None:
    rng = random.Random(f"{SEED}:chat:{index}")
    writer = WebUser(rng.choice(servers).url)
    async with signups:  # argon2 hashing runs on the event loop: do not stall it with 50 at once
        await writer.signup(f"stress{index}@example.com")
    readers = [WebUser(s.url, cookies=writer.client.cookies) for s in servers]
    try:
        thread_id = await writer.new_thread()
        for number in range(MESSAGES):
            question = f"chat {index} message {number} {uuid.uuid4().hex[:6]}"
            response = await writer.post(f"/threads/{thread_id}/messages", {"content": question})
            if response.status_code != 200:
                refused.append((question, response.status_code))
                continue
            acknowledged.append(question)
            placeholder = PLACEHOLDER_RE.search(response.text)
            assert placeholder, "a send's reply always opens the answer's stream, even for a fast answer"
            answer = Answer(question, placeholder.group(1))
            answers.append(answer)
            await _read_answer(readers, answer, rng)
    finally:
        for person in [writer, *readers]:
            await person.close()


async def test_no_acknowledged_message_or_streamed_text_is_lost(live_factory, model_server, db, record_property):
    limits = {"CHATAPP_RATE_LIMIT_PER_MINUTE": 100_000, "CHATAPP_MAX_CONCURRENT_GENERATIONS": 100,
              "CHATAPP_MODEL_READ_TIMEOUT": READ_TIMEOUT, "CHATAPP_REAPER_INTERVAL_SECONDS": REAPER_INTERVAL,
              "CHATAPP_LEASE_SECONDS": LEASE, "CHATAPP_DB_POOL_MAX": 20}
    servers = [live_factory(**limits), live_factory(**limits)]
    default = model_server.default
    model_server.default = scripted
    answers: list[Answer] = []
    acknowledged: list[str] = []
    refused: list = []
    started = time.monotonic()
    try:
        signups = asyncio.Semaphore(2)
        await asyncio.gather(*(_chat(i, servers, answers, acknowledged, refused, signups) for i in range(CHATS)))
    finally:
        model_server.default = default
    elapsed = time.monotonic() - started
    assert not refused, refused[:5]

    stored_questions = {r["content"] for r in await db.fetch("SELECT content FROM messages WHERE role = 'user'")}
    assert set(acknowledged) <= stored_questions  # every acknowledged message is in PostgreSQL

    requests = [r for r in model_server.matching() if (r["json"] or {}).get("stream")]
    per_question = Counter(last_user_message(r["json"]) for r in requests)
    assert set(per_question) == set(acknowledged)
    assert max(per_question.values()) == 1  # a reconnect never caused a second model call
    sent = {last_user_message(r["json"]): r for r in requests}

    rows = {str(r["id"]): r for r in await db.fetch(
        "SELECT id, status, content, error FROM messages WHERE role = 'assistant'")}
    outcomes = Counter()
    for answer in answers:
        request = sent[answer.question]
        if request["reply"].fault != "stall":  # a stall ends when the app gives up and hangs up
            assert request["outcome"] != "disconnected", "the app hung up on the model early"
        status, text = expected(request["reply"])
        row = rows[answer.answer_id]
        assert (row["status"], row["content"]) == (status, text), (answer.question, request["reply"].fault)
        assert page_text(answer.events) == text_of(render.render_markdown(text)), answer.question
        label = {"complete": None, "interrupted": "Interrupted", "error": "Error"}[status]
        assert label is None or label in text_of(answer.final_html)
        outcomes[(request["reply"].fault or "normal", status)] += 1

    await asyncio.sleep(REAPER_INTERVAL + 0.5)
    assert await db.fetchval("SELECT count(*) FROM messages WHERE status = 'streaming'") == 0
    reconnects = sum(a.connections - 1 for a in answers)
    summary = {"chats": CHATS, "answers": len(answers), "seconds": round(elapsed, 1),
               "sse_reconnects": reconnects, "outcomes": {f"{k[0]}->{k[1]}": v for k, v in sorted(outcomes.items())}}
    record_property("nothing_lost", summary)
    print(f"\nnothing lost: {summary}")
    assert reconnects > 0 and len(outcomes) >= 4  # the run really exercised drops and faults
