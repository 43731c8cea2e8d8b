"""API tokens: bearer credentials for /api/v1, stored only as SHA-256 digests."""
from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..ids import parse_id, uuid7
from .users import COLUMNS as USER_COLUMNS, User

PREFIX = "chatapp_"
HINT_CHARS = len(PREFIX) + 4
MAX_NAME_CHARS = 100
# Writing last_used_at on every request would turn each API read into a write; a minute is
# precise enough for "last used" in the settings page.
TOUCH_INTERVAL = "1 minute"

COLUMNS = "id, user_id, name, hint, created_at, last_used_at, revoked_at"


@dataclass
class ApiToken:
    """One token as the settings page lists it (never the token itself)."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def new_token() -> str:
    """A fresh random token: the `chatapp_` prefix (for secret scanners) and 256 random bits."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The stored form of a token.

    Plain SHA-256 is enough here (unlike for passwords): tokens carry 256 random bits, so
    there is nothing to brute-force, and the digest does not depend on SECRET_KEY, so
    rotating that key does not silently break every API client.
    """
    return hashlib.sha256(token.encode()).hexdigest()


async def insert_token(conn: asyncpg.Connection, user_id: uuid.UUID, name: str) -> tuple[ApiToken, str]:
    """Create a token; return its row and the raw token (shown to the user once, never stored)."""
    token = new_token()
    row = await conn.fetchrow(
        f"""INSERT INTO api_tokens (id, user_id, name, token_hash, hint)
            VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}""",
        uuid7(), user_id, name, digest(token), token[:HINT_CHARS],
    )
    return ApiToken(**row), token


async def select_tokens(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[ApiToken]:
    """The user's tokens that still work, newest first."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL
            ORDER BY created_at DESC, id DESC""",
        user_id,
    )
    return [ApiToken(**row) for row in rows]


async def revoke_token(conn: asyncpg.Connection, user_id: uuid.UUID, token_id: str | uuid.UUID) -> bool:
    """Revoke one of the user's tokens; False for another user's, unknown or malformed ids."""
    tid = parse_id(token_id)
    if tid is None:
        return False
    result = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
        tid, user_id,
    )
    return result == "UPDATE 1"


async def revoke_all(conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    """Revoke every token of a user (password change); return how many."""
    result = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
    return int(result.split()[-1])


async def select_user_by_token(conn: asyncpg.Connection, token: str) -> tuple[User, uuid.UUID] | None:
    """The active user owning a live token (and the token's id); None otherwise.

    Checked on every request, so a revoked token, a disabled account or a deleted one (its
    tokens go with it) stops working at once.
    """
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    columns = ", ".join("u." + c.strip() for c in USER_COLUMNS.split(","))
    row = await conn.fetchrow(
        f"""SELECT t.id AS token_id,
                   t.last_used_at IS NULL OR t.last_used_at < now() - interval '{TOUCH_INTERVAL}' AS stale,
                   {columns}
            FROM api_tokens t JOIN users u ON u.id = t.user_id
            WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL""",
        digest(token),
    )
    if row is None:
        return None
    data = dict(row)
    token_id, stale = data.pop("token_id"), data.pop("stale")
    if stale:
        await conn.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", token_id)
    return User(**data), token_id
