"""Queries of export and import: whole message trees, threads in batches, bulk inserts."""
from __future__ import annotations

import uuid
from typing import Any, Iterable

import asyncpg

from ..ids import uuid7
from .messages import COLUMNS as MESSAGE_COLUMNS
from .messages import Message
from .threads import COLUMNS as THREAD_COLUMNS
from .threads import Thread

INSERT_BATCH = 500  # rows per INSERT statement of an import
_T_COLUMNS = ", ".join("t." + c.strip() for c in THREAD_COLUMNS.split(","))


async def select_tree(conn: asyncpg.Connection, thread_id: uuid.UUID) -> list[Message]:
    """Every message of a thread (all versions), oldest first."""
    rows = await conn.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = $1 ORDER BY created_at, id", thread_id
    )
    return [Message(**row) for row in rows]


async def select_folder_name(conn: asyncpg.Connection, thread_id: uuid.UUID) -> str | None:
    """The name of the folder a thread is in."""
    return await conn.fetchval(
        "SELECT f.name FROM threads t JOIN folders f ON f.id = t.folder_id WHERE t.id = $1", thread_id
    )


async def select_thread_batch(
    conn: asyncpg.Connection, user_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[tuple[Thread, str | None]]:
    """The user's threads after an id (ids are time-ordered UUIDv7), with their folder names."""
    rows = await conn.fetch(
        f"""SELECT {_T_COLUMNS}, f.name AS folder_name FROM threads t
            LEFT JOIN folders f ON f.id = t.folder_id
            WHERE t.user_id = $1 AND ($2::uuid IS NULL OR t.id > $2) ORDER BY t.id LIMIT $3""",
        user_id, after, limit,
    )
    result = []
    for row in rows:
        data = dict(row)
        folder_name = data.pop("folder_name")
        result.append((Thread(**data), folder_name))
    return result


async def select_trees(conn: asyncpg.Connection, thread_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Message]]:
    """Every message of several threads, grouped by thread, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ANY($1::uuid[])
            ORDER BY thread_id, created_at, id""",
        thread_ids,
    )
    trees: dict[uuid.UUID, list[Message]] = {tid: [] for tid in thread_ids}
    for row in rows:
        trees[row["thread_id"]].append(Message(**row))
    return trees


async def folder_ids_by_name(conn: asyncpg.Connection, user_id: uuid.UUID, names: Iterable[str]) -> dict[str, uuid.UUID]:
    """Ids of the user's folders of these names (case-insensitive), creating the missing ones."""
    found: dict[str, uuid.UUID] = {}
    for name in names:
        await conn.execute(
            """INSERT INTO folders (id, user_id, name) VALUES ($1, $2, $3)
               ON CONFLICT (user_id, lower(name)) DO NOTHING""",
            uuid7(), user_id, name,
        )
        found[name] = await conn.fetchval(
            "SELECT id FROM folders WHERE user_id = $1 AND lower(name) = lower($2)", user_id, name
        )
    return found


async def insert_threads(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert imported threads: (id, user_id, title, model, system_prompt, params, current_leaf_id,
    pinned, folder_id, created_at, updated_at). The leaf's foreign key is deferred to commit."""
    for start in range(0, len(rows), INSERT_BATCH):
        await conn.executemany(
            """INSERT INTO threads (id, user_id, title, model, system_prompt, params, current_leaf_id,
                                    pinned, folder_id, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            rows[start:start + INSERT_BATCH],
        )


async def insert_messages(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert imported messages, parents before children: (id, thread_id, parent_id, role, content,
    status, model, prompt_tokens, completion_tokens, usage_estimated, finish_reason, duration_ms,
    error, created_at, finished_at).

    In batches: each statement stays well inside the pool's command timeout (computing the
    full-text vectors of a 50 MiB import takes PostgreSQL tens of seconds in all).
    """
    for start in range(0, len(rows), INSERT_BATCH):
        await conn.executemany(
            """INSERT INTO messages (id, thread_id, parent_id, role, content, status, model, prompt_tokens,
                                     completion_tokens, usage_estimated, finish_reason, duration_ms, error,
                                     created_at, finished_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
            rows[start:start + INSERT_BATCH],
        )
