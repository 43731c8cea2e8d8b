"""Queries of the admin page: every account with its usage."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

MAX_USERS_LISTED = 500


@dataclass
class UserUsage:
    """An account as the admin page lists it."""

    id: uuid.UUID
    email: str
    is_admin: bool
    disabled_at: datetime | None
    created_at: datetime
    threads: int
    messages: int
    tokens: int


async def select_users_with_usage(
    conn: asyncpg.Connection, limit: int = MAX_USERS_LISTED, only: uuid.UUID | None = None
) -> list[UserUsage]:
    """Accounts, newest first, with thread and message counts and the tokens their answers used."""
    rows = await conn.fetch(
        """SELECT u.id, u.email, u.is_admin, u.disabled_at, u.created_at,
                  coalesce(t.threads, 0) AS threads, coalesce(m.messages, 0) AS messages,
                  coalesce(m.tokens, 0) AS tokens
           FROM users u
           LEFT JOIN (SELECT user_id, count(*) AS threads FROM threads GROUP BY user_id) t ON t.user_id = u.id
           LEFT JOIN (SELECT th.user_id,
                             count(*) FILTER (WHERE msg.role = 'user') AS messages,
                             sum(coalesce(msg.prompt_tokens, 0) + coalesce(msg.completion_tokens, 0)) AS tokens
                      FROM messages msg JOIN threads th ON th.id = msg.thread_id
                      GROUP BY th.user_id) m ON m.user_id = u.id
           WHERE $2::uuid IS NULL OR u.id = $2
           ORDER BY u.created_at DESC, u.id DESC
           LIMIT $1""",
        limit, only,
    )
    return [UserUsage(**row) for row in rows]


async def select_user_usage(conn: asyncpg.Connection, user_id: uuid.UUID) -> UserUsage | None:
    """One account's row of the admin page."""
    rows = await select_users_with_usage(conn, 1, only=user_id)
    return rows[0] if rows else None
