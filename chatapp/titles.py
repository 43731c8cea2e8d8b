"""Automatic thread titles after the first answer, announced on that answer's stream."""
from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg
from quart import Quart
from redis.exceptions import RedisError

from . import llm
from .models import threads

log = logging.getLogger(__name__)

TITLE_TIMEOUT_SECONDS = 5.0
MAX_WORDS = 8


def fallback_title(text: str) -> str:
    """The first words of the user's message."""
    words = text.split()
    title = " ".join(words[:MAX_WORDS])
    return (title[:80] + ("…" if len(words) > MAX_WORDS or len(title) > 80 else "")) or threads.DEFAULT_TITLE


def clean_title(raw: str) -> str:
    """Strip quotes, markup and trailing punctuation a model tends to add."""
    title = " ".join(raw.replace("*", "").replace("#", "").split()).strip("\"'“”. ")
    return title[:80]


async def maybe_title(app: Quart, conn: asyncpg.Connection, answer_id: uuid.UUID, answer_text: str) -> None:
    """Name the thread after its first exchange unless the user already did."""
    row = await conn.fetchrow(
        """SELECT t.id, t.title, t.model, u.content AS question,
                  (SELECT count(*) FROM messages x WHERE x.thread_id = t.id) AS total
           FROM messages a JOIN threads t ON t.id = a.thread_id
           JOIN messages u ON u.id = a.parent_id WHERE a.id = $1""",
        answer_id,
    )
    if row is None or row["title"] != threads.DEFAULT_TITLE or row["total"] > 2:
        return
    title = ""
    client = llm.client_of(app)
    if client is not None:
        ask = [
            {"role": "system", "content": "Reply with a 3 to 6 word title for this conversation. No quotes."},
            {"role": "user", "content": row["question"][:2000]},
            {"role": "assistant", "content": answer_text[:2000]},
            {"role": "user", "content": "Title?"},
        ]
        try:
            async with asyncio.timeout(TITLE_TIMEOUT_SECONDS):
                title = clean_title(await llm.complete(client, ask, row["model"] or app.config["CHATAPP_DEFAULT_MODEL"]))
        except Exception as exc:  # a title is a nicety: fall back to the first words
            log.info("automatic title failed: %s", exc)
    title = title or fallback_title(row["question"])
    if await threads.update_title_if_default(conn, row["id"], title):
        from .generation import stream_key

        try:
            await app.redis.fast.xadd(
                stream_key(app, answer_id), {b"title": title.encode(), b"thread": str(row["id"]).encode()}
            )
        except (RedisError, OSError):  # the title still shows on the next page load
            log.info("could not announce the new title of thread %s", row["id"])
