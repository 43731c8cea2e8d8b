"""Users: accounts with argon2 password hashes and case-insensitive unique emails."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..ids import parse_id, uuid7

_hasher = PasswordHasher()
# A real hash of a random password: verifying against it when the email is unknown costs the
# same time as a real check, so response timing does not reveal which emails exist.
_DUMMY_HASH = _hasher.hash(uuid.uuid4().hex)

COLUMNS = "id, email, password_hash, display_name, is_admin, disabled_at, settings, created_at"


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


def hash_password(password: str) -> str:
    """Hash a password with argon2id."""
    return _hasher.hash(password)


def verify_password(user: User | None, password: str) -> bool:
    """Check a password in constant-ish time whether or not the user exists."""
    try:
        return _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


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
        uuid7(), email.strip(), hash_password(password), display_name, is_admin,
    )
    return User(**row) if row else None


async def update_password(conn: asyncpg.Connection, user_id: uuid.UUID, password: str) -> None:
    """Replace a user's password hash."""
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, hash_password(password))


async def update_disabled(conn: asyncpg.Connection, user_id: uuid.UUID, disabled: bool) -> None:
    """Disable (or re-enable) an account."""
    await conn.execute(
        "UPDATE users SET disabled_at = CASE WHEN $2 THEN now() ELSE NULL END WHERE id = $1",
        user_id, disabled,
    )


async def update_settings(conn: asyncpg.Connection, user_id: uuid.UUID, settings: dict[str, Any]) -> None:
    """Merge keys into a user's settings."""
    await conn.execute("UPDATE users SET settings = settings || $2::jsonb WHERE id = $1", user_id, settings)


async def delete_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Delete a user and, through cascades, all of their data."""
    await conn.execute("DELETE FROM users WHERE id = $1", user_id)
