"""Queries only the JSON API needs: keyset pages of threads (search is models/search.py)."""
from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from .threads import COLUMNS as THREAD_COLUMNS, Thread


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
