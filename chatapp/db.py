"""PostgreSQL: the asyncpg pool, JSON codecs and the forward-only migration runner.

Connections are acquired only around queries (never for a request's lifetime): an open SSE
stream would otherwise hold a pool connection for minutes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from .config import ROOT

log = logging.getLogger(__name__)
MIGRATIONS_DIR = ROOT / "migrations"
# One constant key for pg_advisory_lock so concurrent instances migrate one at a time.
MIGRATION_LOCK_KEY = 7_424_518_301
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class DatabaseAheadError(RuntimeError):
    """The database has migrations this code does not know: refuse to start."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    path: Path


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Register JSON codecs so jsonb columns read and write Python objects."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(url: str, max_size: int = 10) -> asyncpg.Pool:
    """Open the connection pool with our codecs on every connection."""
    return await asyncpg.create_pool(
        url, min_size=1, max_size=max_size, init=_init_connection, command_timeout=30
    )


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; refuses gaps and duplicates."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise RuntimeError(f"migration file name must look like 0001_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations, one transaction each, under an advisory lock; return applied versions."""
    migrations = list_migrations(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        known = {m.version for m in migrations}
        ahead = sorted(applied - known)
        if ahead:
            raise DatabaseAheadError(
                f"the database has migrations {ahead} that this version of chatapp does not know; "
                "upgrade chatapp before starting it against this database"
            )
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def schema_version(conn: asyncpg.Connection) -> int:
    """The newest applied migration version (0 for a blank database)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")


async def open_database(app) -> None:
    """Resolve the URL (starting the embedded server if none is set), open the pool, migrate."""
    from . import embedded

    url = app.config.get("DATABASE_URL")
    if not url:
        instance_dir = Path(app.config["CHATAPP_INSTANCE_DIR"])
        try:
            url, handle = await asyncio.to_thread(embedded.start_postgres, instance_dir)
        except embedded.EmbeddedError as exc:
            embedded.exit_with(exc)
        app.extensions["pgserver"] = handle
    app.config["EFFECTIVE_DATABASE_URL"] = url
    app.db = await create_pool(url, app.config["CHATAPP_DB_POOL_MAX"])
    async with app.db.acquire() as conn:
        applied = await migrate(conn)
    if applied:
        log.info("applied migrations %s", applied)


async def close_database(app) -> None:
    """Close the pool, then leave the embedded server (the last process out stops it)."""
    from . import embedded

    pool = getattr(app, "db", None)
    if pool is not None:
        await pool.close()
    handle = app.extensions.pop("pgserver", None)
    if handle is not None:
        await asyncio.to_thread(embedded.stop_postgres, handle)


def init_app(app) -> None:
    """Open the database before serving and close it after."""

    @app.before_serving
    async def _open() -> None:
        await open_database(app)

    @app.after_serving
    async def _close() -> None:
        await close_database(app)
