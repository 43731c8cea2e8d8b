"""Queries only the JSON API needs: keyset pages of threads and full-text search of messages."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .threads import COLUMNS as THREAD_COLUMNS, Thread

SNIPPET_START, SNIPPET_STOP = "[[", "]]"


async def select_threads_page(
    conn: asyncpg.Connection, user_id: uuid.UUID, limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[Thread]:
    """Up to `limit` of the user's threads, most recently active first, after a keyset position.

    Ordered by (updated_at, id) so a page boundary is exact even when threads share a timestamp.
    """
    rows = await conn.fetch(
        f"""SELECT {THREAD_COLUMNS} FROM threads
            WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (updated_at, id) < ($2, $3::uuid))
            ORDER BY updated_at DESC, id DESC LIMIT $4""",
        user_id, after[0] if after else None, after[1] if after else None, limit,
    )
    return [Thread(**row) for row in rows]


@dataclass
class Hit:
    """One search match."""

    message_id: uuid.UUID
    thread_id: uuid.UUID
    thread_title: str
    role: str
    snippet: str
    created_at: datetime


async def search_messages(conn: asyncpg.Connection, user_id: uuid.UUID, query: str, limit: int) -> list[Hit]:
    """The user's messages matching a web-search style query, best match first.

    websearch_to_tsquery never raises on odd input (quotes, dashes, operators), so any text a
    user types is a valid query; one that has no searchable words matches nothing.
    """
    rows = await conn.fetch(
        """WITH q AS (SELECT websearch_to_tsquery('simple', $2) AS query)
           SELECT m.id AS message_id, m.thread_id, t.title AS thread_title, m.role, m.created_at,
                  ts_headline('simple', m.content, q.query,
                              'StartSel=' || $4 || ', StopSel=' || $5 || ', MaxWords=30, MinWords=10')
                      AS snippet
           FROM q, messages m JOIN threads t ON t.id = m.thread_id
           WHERE t.user_id = $1 AND m.search @@ q.query
           ORDER BY ts_rank(m.search, q.query) DESC, m.created_at DESC
           LIMIT $3""",
        user_id, query, limit, SNIPPET_START, SNIPPET_STOP,
    )
    return [Hit(**row) for row in rows]
