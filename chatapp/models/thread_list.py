"""The thread list: pinned threads, then pages of the rest by (updated_at, id), newest first."""
from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from .threads import COLUMNS, Thread

_T_COLUMNS = ", ".join("t." + c.strip() for c in COLUMNS.split(","))


async def select_pinned(conn: asyncpg.Connection, user_id: uuid.UUID, limit: int) -> list[Thread]:
    """The user's pinned threads (in folders or not), most recently active first."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM threads WHERE user_id = $1 AND pinned
            ORDER BY updated_at DESC, id DESC LIMIT $2""",
        user_id, limit,
    )
    return [Thread(**row) for row in rows]


async def select_page(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, folder_id: uuid.UUID | None = None,
    before: tuple[datetime, uuid.UUID] | None = None, limit: int = 50,
) -> list[Thread]:
    """One page of threads older than the cursor `before` (updated_at, id).

    Without a folder: the main list, every thread but the pinned ones (they are listed apart).
    With a folder: every thread in it, pinned or not.
    """
    stamp, last_id = before if before else (None, None)
    if folder_id is None:
        where = "t.user_id = $1 AND NOT t.pinned"
        args: list = [user_id]
    else:
        where = "t.user_id = $1 AND t.folder_id = $2"
        args = [user_id, folder_id]
    n = len(args)
    rows = await conn.fetch(
        f"""SELECT {_T_COLUMNS} FROM threads t
            WHERE {where} AND (${n + 1}::timestamptz IS NULL OR (t.updated_at, t.id) < (${n + 1}, ${n + 2}::uuid))
            ORDER BY t.updated_at DESC, t.id DESC LIMIT ${n + 3}""",
        *args, stamp, last_id, limit,
    )
    return [Thread(**row) for row in rows]
