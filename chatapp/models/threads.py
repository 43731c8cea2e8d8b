"""Threads: a user's conversations. Every query is scoped by user_id."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..ids import parse_id, uuid7

COLUMNS = (
    "id, user_id, title, model, system_prompt, params, current_leaf_id, pinned, folder, "
    "created_at, updated_at, archived_at, archive_key"
)
DEFAULT_TITLE = "New chat"
MAX_TITLE_CHARS = 200


@dataclass
class Thread:
    """A conversation."""

    id: uuid.UUID
    user_id: uuid.UUID
    title: str
    model: str | None
    system_prompt: str
    params: dict[str, Any]
    current_leaf_id: uuid.UUID | None
    pinned: bool
    folder: str | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    archive_key: str | None


async def select_thread(conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: str | uuid.UUID) -> Thread | None:
    """One of the user's threads; None for another user's, unknown or malformed ids."""
    tid = parse_id(thread_id)
    if tid is None:
        return None
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM threads WHERE id = $1 AND user_id = $2", tid, user_id)
    return Thread(**row) if row else None


async def select_threads(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, limit: int = 50, before: datetime | None = None
) -> list[Thread]:
    """The user's threads, most recently active first (pinned first)."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM threads
            WHERE user_id = $1 AND ($2::timestamptz IS NULL OR updated_at < $2)
            ORDER BY pinned DESC, updated_at DESC LIMIT $3""",
        user_id, before, limit,
    )
    return [Thread(**row) for row in rows]


async def insert_thread(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, title: str = DEFAULT_TITLE, model: str | None = None,
    system_prompt: str = "", params: dict[str, Any] | None = None,
) -> Thread:
    """Create a thread."""
    row = await conn.fetchrow(
        f"""INSERT INTO threads (id, user_id, title, model, system_prompt, params)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}""",
        uuid7(), user_id, title, model, system_prompt, params or {},
    )
    return Thread(**row)


async def update_title(conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID, title: str) -> Thread | None:
    """Rename a thread; None when it is not the user's."""
    row = await conn.fetchrow(
        f"UPDATE threads SET title = $3 WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}",
        thread_id, user_id, title,
    )
    return Thread(**row) if row else None


async def update_title_if_default(conn: asyncpg.Connection, thread_id: uuid.UUID, title: str) -> bool:
    """Set an automatic title unless the user already renamed the thread."""
    result = await conn.execute(
        "UPDATE threads SET title = $2 WHERE id = $1 AND title = $3", thread_id, title, DEFAULT_TITLE
    )
    return result.endswith("1")


async def update_settings(
    conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID, *, model: str | None,
    system_prompt: str, params: dict[str, Any],
) -> Thread | None:
    """Change a thread's model, system prompt and sampling parameters."""
    row = await conn.fetchrow(
        f"""UPDATE threads SET model = $3, system_prompt = $4, params = $5
            WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}""",
        thread_id, user_id, model, system_prompt, params,
    )
    return Thread(**row) if row else None


async def update_leaf(conn: asyncpg.Connection, thread_id: uuid.UUID, leaf_id: uuid.UUID) -> None:
    """Make a message the end of the visible branch and mark the thread active."""
    await conn.execute(
        "UPDATE threads SET current_leaf_id = $2, updated_at = now() WHERE id = $1", thread_id, leaf_id
    )


async def delete_thread(conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID) -> bool:
    """Delete a thread and its messages; False when it is not the user's."""
    result = await conn.execute("DELETE FROM threads WHERE id = $1 AND user_id = $2", thread_id, user_id)
    return result.endswith(" 1")
