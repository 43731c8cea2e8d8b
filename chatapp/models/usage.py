"""Usage totals per user, from the answers' recorded token counts."""
from __future__ import annotations

import uuid

import asyncpg


async def select_user_totals(conn: asyncpg.Connection, user_id: uuid.UUID) -> dict[str, int]:
    """Messages sent, answers received and tokens used by one user."""
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE m.role = 'user') AS messages,
                  count(*) FILTER (WHERE m.role = 'assistant') AS answers,
                  coalesce(sum(m.prompt_tokens), 0) AS prompt_tokens,
                  coalesce(sum(m.completion_tokens), 0) AS completion_tokens
           FROM messages m JOIN threads t ON t.id = m.thread_id WHERE t.user_id = $1""",
        user_id,
    )
    return dict(row)
