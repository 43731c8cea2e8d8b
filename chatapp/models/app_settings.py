"""app_settings: run-time configuration saved by admins, winning over the environment."""
from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
from quart import Quart

from ..config import SETTINGS

RUNTIME_NAMES = tuple(s.name for s in SETTINGS if s.runtime)
CACHE_SECONDS = 5.0


async def select_all(conn: asyncpg.Connection) -> dict[str, Any]:
    """Every saved run-time setting."""
    rows = await conn.fetch("SELECT key, value FROM app_settings")
    return {row["key"]: row["value"] for row in rows}


async def upsert(conn: asyncpg.Connection, key: str, value: Any, updated_by: uuid.UUID | None) -> None:
    """Save one run-time setting."""
    if key not in RUNTIME_NAMES:
        raise KeyError(f"{key} is not a run-time setting")
    await conn.execute(
        """INSERT INTO app_settings (key, value, updated_by) VALUES ($1, $2, $3)
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now(),
                                           updated_by = EXCLUDED.updated_by""",
        key, value, updated_by,
    )


async def effective(app: Quart) -> dict[str, Any]:
    """Environment defaults merged with saved values, cached briefly per process."""
    cached = getattr(app, "_runtime_settings", None)
    if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    merged = {name: app.config[name] for name in RUNTIME_NAMES}
    async with app.db.acquire() as conn:
        saved = await select_all(conn)
    merged.update({k: v for k, v in saved.items() if k in RUNTIME_NAMES})
    app._runtime_settings = (time.monotonic(), merged)
    return merged


def forget(app: Quart) -> None:
    """Drop the cached merge after an admin saved a value."""
    app._runtime_settings = None
