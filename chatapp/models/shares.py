"""Share links: read-only snapshots of a thread's visible branch, one per thread."""
from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

COLUMNS = "id, thread_id, user_id, title, messages, created_at"
# secrets.token_urlsafe(24): 32 characters of the URL-safe base64 alphabet (192 bits).
_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")


@dataclass
class Share:
    """A snapshot: title and messages (role, content, status, model, created_at) at share time."""

    id: str
    thread_id: uuid.UUID
    user_id: uuid.UUID
    title: str
    messages: list[dict[str, Any]]
    created_at: datetime


def new_share_id() -> str:
    """A fresh unguessable link id (192 bits)."""
    return secrets.token_urlsafe(24)


async def select_share(conn: asyncpg.Connection, share_id: str) -> Share | None:
    """The share behind a link (public: anyone holding the id); None for malformed or revoked ids."""
    if not _ID.match(share_id or ""):
        return None
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM shares WHERE id = $1", share_id)
    return Share(**row) if row else None


async def select_thread_share(conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID) -> Share | None:
    """The share of one of the user's threads, if it is shared."""
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM shares WHERE thread_id = $1 AND user_id = $2", thread_id, user_id
    )
    return Share(**row) if row else None


async def upsert_share(
    conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID, title: str, messages: list[dict[str, Any]]
) -> Share:
    """Share a thread (the caller checked it is the user's), or refresh its snapshot under the same link."""
    row = await conn.fetchrow(
        f"""INSERT INTO shares (id, thread_id, user_id, title, messages) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (thread_id) DO UPDATE SET title = EXCLUDED.title, messages = EXCLUDED.messages,
                created_at = now()
            RETURNING {COLUMNS}""",
        new_share_id(), thread_id, user_id, title, messages,
    )
    return Share(**row)


async def delete_share(conn: asyncpg.Connection, user_id: uuid.UUID, thread_id: uuid.UUID) -> bool:
    """Revoke a thread's share link; False when there was none."""
    result = await conn.execute("DELETE FROM shares WHERE thread_id = $1 AND user_id = $2", thread_id, user_id)
    return result == "DELETE 1"
