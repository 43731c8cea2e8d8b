"""Folders and pins: how a user organises threads. Every query is scoped by user_id."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..ids import parse_id, uuid7

MAX_NAME_CHARS = 100


@dataclass
class Folder:
    """A named group of threads."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    created_at: datetime
    thread_count: int = 0


async def select_folders(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[Folder]:
    """The user's folders by name, each with its number of threads."""
    rows = await conn.fetch(
        """SELECT f.id, f.user_id, f.name, f.created_at,
                  (SELECT count(*) FROM threads t WHERE t.folder_id = f.id) AS thread_count
           FROM folders f WHERE f.user_id = $1 ORDER BY lower(f.name), f.id""",
        user_id,
    )
    return [Folder(**row) for row in rows]


async def select_folder(conn: asyncpg.Connection, user_id: uuid.UUID, folder_id: str | uuid.UUID) -> Folder | None:
    """One of the user's folders; None for another user's, unknown or malformed ids."""
    fid = parse_id(folder_id)
    if fid is None:
        return None
    row = await conn.fetchrow(
        """SELECT f.id, f.user_id, f.name, f.created_at,
                  (SELECT count(*) FROM threads t WHERE t.folder_id = f.id) AS thread_count
           FROM folders f WHERE f.id = $1 AND f.user_id = $2""",
        fid, user_id,
    )
    return Folder(**row) if row else None


async def select_folder_by_name(conn: asyncpg.Connection, user_id: uuid.UUID, name: str) -> Folder | None:
    """The user's folder of that name (case-insensitive)."""
    row = await conn.fetchrow(
        "SELECT id, user_id, name, created_at FROM folders WHERE user_id = $1 AND lower(name) = lower($2)",
        user_id, name,
    )
    return Folder(**row) if row else None


async def insert_folder(conn: asyncpg.Connection, user_id: uuid.UUID, name: str) -> Folder | None:
    """Create a folder; None when the user already has one of that name."""
    row = await conn.fetchrow(
        """INSERT INTO folders (id, user_id, name) VALUES ($1, $2, $3)
           ON CONFLICT (user_id, lower(name)) DO NOTHING
           RETURNING id, user_id, name, created_at""",
        uuid7(), user_id, name,
    )
    return Folder(**row) if row else None


async def rename_folder(conn: asyncpg.Connection, user_id: uuid.UUID, folder_id: uuid.UUID, name: str) -> bool:
    """Rename a folder; False when another of the user's folders has that name."""
    try:
        await conn.execute("UPDATE folders SET name = $3 WHERE id = $1 AND user_id = $2", folder_id, user_id, name)
    except asyncpg.UniqueViolationError:
        return False
    return True


async def delete_folder(conn: asyncpg.Connection, user_id: uuid.UUID, folder_id: uuid.UUID) -> bool:
    """Delete a folder; its threads go back to the main list (ON DELETE SET NULL)."""
    result = await conn.execute("DELETE FROM folders WHERE id = $1 AND user_id = $2", folder_id, user_id)
    return result == "DELETE 1"


async def move_thread(
    conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID, folder_id: uuid.UUID | None
) -> bool:
    """Put a thread into one of the user's folders (None: out of any); False if either is not theirs."""
    if folder_id is None:
        result = await conn.execute(
            "UPDATE threads SET folder_id = NULL WHERE id = $1 AND user_id = $2", thread_id, user_id
        )
    else:  # the folder must be the same user's: the foreign key alone would accept anyone's
        result = await conn.execute(
            """UPDATE threads SET folder_id = f.id FROM folders f
               WHERE threads.id = $1 AND threads.user_id = $2 AND f.id = $3 AND f.user_id = $2""",
            thread_id, user_id, folder_id,
        )
    return result == "UPDATE 1"


async def toggle_pin(conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID) -> bool | None:
    """Flip a thread's pin; the new state, or None when it is not the user's."""
    return await conn.fetchval(
        "UPDATE threads SET pinned = NOT pinned WHERE id = $1 AND user_id = $2 RETURNING pinned",
        thread_id, user_id,
    )


async def select_thread_folder(conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID) -> uuid.UUID | None:
    """The folder a thread of the user is in (None: the main list)."""
    return await conn.fetchval(
        "SELECT folder_id FROM threads WHERE id = $1 AND user_id = $2", thread_id, user_id
    )
