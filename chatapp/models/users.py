"""Users: accounts with argon2 password hashes and case-insensitive unique emails."""
from __future__ import annotations

import asyncio
import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..ids import parse_id, uuid7

_hasher = PasswordHasher()


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A real hash of a random password: checking an unknown email against it costs the same
    time as a real check, so timing does not reveal which emails exist. Made on first use,
    not at import (each hash takes a noticeable fraction of a second)."""
    return _hasher.hash(uuid.uuid4().hex)

COLUMNS = "id, email, password_hash, display_name, is_admin, disabled_at, settings, created_at, session_epoch"


@dataclass
class User:
    """An account."""

    id: uuid.UUID
    email: str
    password_hash: str
    display_name: str
    is_admin: bool
    disabled_at: datetime | None
    settings: dict[str, Any]
    created_at: datetime
    session_epoch: int = 0  # bumped to revoke every session (migrations/0006)


def hash_password(password: str) -> str:
    """Hash a password with argon2id."""
    return _hasher.hash(password)


def verify_password(user: User | None, password: str) -> bool:
    """Check a password in constant-ish time whether or not the user exists."""
    try:
        return _hasher.verify(user.password_hash if user else _dummy_hash(), password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


async def check_password(user: User | None, password: str) -> bool:
    """verify_password off the event loop: argon2 is deliberately slow and would stall every stream."""
    return await asyncio.to_thread(verify_password, user, password)


async def select_user(conn: asyncpg.Connection, user_id: str | uuid.UUID) -> User | None:
    """One user by id (None for unknown or malformed ids)."""
    uid = parse_id(user_id)
    if uid is None:
        return None
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM users WHERE id = $1", uid)
    return User(**row) if row else None


async def select_user_by_email(conn: asyncpg.Connection, email: str) -> User | None:
    """One user by email, case-insensitively."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM users WHERE lower(email) = lower($1)", email)
    return User(**row) if row else None


async def insert_user(
    conn: asyncpg.Connection, email: str, password: str, *, is_admin: bool = False, display_name: str = ""
) -> User | None:
    """Create a user; None when the email is taken."""
    row = await conn.fetchrow(
        f"""INSERT INTO users (id, email, password_hash, display_name, is_admin)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT DO NOTHING
            RETURNING {COLUMNS}""",
        uuid7(), email.strip(), await asyncio.to_thread(hash_password, password), display_name, is_admin,
    )
    return User(**row) if row else None


async def update_password(conn: asyncpg.Connection, user_id: uuid.UUID, password: str) -> None:
    """Replace a user's password hash."""
    password_hash = await asyncio.to_thread(hash_password, password)
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


async def update_disabled(conn: asyncpg.Connection, user_id: uuid.UUID, disabled: bool) -> None:
    """Disable (or re-enable) an account."""
    await conn.execute(
        "UPDATE users SET disabled_at = CASE WHEN $2 THEN now() ELSE NULL END WHERE id = $1",
        user_id, disabled,
    )


async def bump_session_epoch(conn: asyncpg.Connection, user_id: uuid.UUID | str) -> int | None:
    """Invalidate every session of a user (see chatapp/session_fallback.py); the new epoch."""
    uid = parse_id(user_id)
    if uid is None:
        return None
    return await conn.fetchval(
        "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1 RETURNING session_epoch", uid)


async def select_session_epoch(conn: asyncpg.Connection, user_id: uuid.UUID | str) -> int:
    """The epoch new sessions of a user are issued under (0 for unknown ids)."""
    uid = parse_id(user_id)
    if uid is None:
        return 0
    return await conn.fetchval("SELECT session_epoch FROM users WHERE id = $1", uid) or 0


async def update_settings(conn: asyncpg.Connection, user_id: uuid.UUID, settings: dict[str, Any]) -> None:
    """Merge keys into a user's settings."""
    await conn.execute("UPDATE users SET settings = settings || $2::jsonb WHERE id = $1", user_id, settings)


async def delete_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Delete a user and, through cascades, all of their data."""
    await conn.execute("DELETE FROM users WHERE id = $1", user_id)
