"""PostgreSQL: the asyncpg pool, JSON codecs and the forward-only migration runner.

Connections are acquired only around queries (never for a request's lifetime): an open SSE
stream would otherwise hold a pool connection for minutes.
"""
from __future__ import annotations

import asyncio
import contextlib
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


async def create_pool(url: str, max_size: int = 10, timeout: float = 30.0) -> asyncpg.Pool:
    """Open the connection pool with our codecs on every connection.

    `timeout` bounds connecting and every query: a hung PostgreSQL raises TimeoutError
    (answered 503 by errors.py) instead of holding the request forever.
    """
    return await asyncpg.create_pool(
        url, min_size=1, max_size=max_size, init=_init_connection, reset=_reset_connection,
        command_timeout=timeout, timeout=timeout,
    )


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Make a released connection fit for the next user, without a round trip when it is.

    asyncpg's default reset sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    on every release (5-6% of a busy worker). chatapp keeps no session state on pooled
    connections: no LISTEN, no SET, and the CLI's advisory locks are released in `finally`.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class Database:
    """The serving pool, with a deadline on acquiring (and so on releasing) a connection."""

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self.pool, self.timeout = pool, timeout

    @contextlib.asynccontextmanager
    async def acquire(self):
        """`async with db.acquire() as conn`: like Pool.acquire, but never waits forever."""
        conn = await self.pool.acquire(timeout=self.timeout)
        try:
            yield conn
        except TimeoutError:
            # A query timed out: PostgreSQL may be hung, so do not also wait for the
            # cancellation to come back; drop the connection (the pool opens a new one).
            conn.terminate()
            raise
        finally:
            await self.pool.release(conn, timeout=self.timeout)

    async def close(self) -> None:
        """Close gracefully, or terminate when PostgreSQL does not answer."""
        try:
            await asyncio.wait_for(self.pool.close(), self.timeout)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.pool.terminate()

    def __getattr__(self, name: str):
        return getattr(self.pool, name)


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


async def open_database(app, serving: bool = False) -> None:
    """Resolve the URL (starting the embedded server if none is set), migrate, open the pool.

    Serving pools bound connects, acquires and queries by CHATAPP_DB_TIMEOUT; CLI pools keep
    30 s (a backup's queries may be long).
    """
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
    # Migrations get their own connection without the short request timeout: they may be slow.
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    timeout = app.config["CHATAPP_DB_TIMEOUT"] if serving else 30.0
    app.db = Database(await create_pool(url, app.config["CHATAPP_DB_POOL_MAX"], timeout), timeout)
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
        await open_database(app, serving=True)

    @app.after_serving
    async def _close() -> None:
        await close_database(app)
