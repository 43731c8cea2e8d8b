"""Migrations: a blank database gets the designed schema; a second run is a no-op."""
from __future__ import annotations

import secrets

import asyncpg
import pytest

from chatapp import db as chatdb
from services import _create_database, _drop_database, _with_database

EXPECTED = {
    "users": {"id", "email", "password_hash", "display_name", "is_admin", "disabled_at", "settings", "created_at"},
    "threads": {"id", "user_id", "title", "model", "system_prompt", "params", "current_leaf_id", "pinned",
                "folder", "folder_id", "created_at", "updated_at", "archived_at", "archive_key"},
    "messages": {"id", "thread_id", "parent_id", "role", "content", "status", "model", "prompt_tokens",
                 "completion_tokens", "usage_estimated", "finish_reason", "duration_ms", "error",
                 "created_at", "finished_at", "search"},
    "app_settings": {"key", "value", "updated_at", "updated_by"},
    "folders": {"id", "user_id", "name", "created_at"},
    "shares": {"id", "thread_id", "user_id", "title", "messages", "created_at"},
}


@pytest.fixture
async def blank_database(test_services):
    name = f"chatapp_blank_{secrets.token_hex(4)}"
    await _create_database(test_services.admin_database_url, name)
    conn = await asyncpg.connect(_with_database(test_services.admin_database_url, name))
    yield conn
    await conn.close()
    await _drop_database(test_services.admin_database_url, name)


async def test_blank_database_migrates_to_expected_columns_and_rerun_is_noop(blank_database):
    applied = await chatdb.migrate(blank_database)
    assert applied == [m.version for m in chatdb.list_migrations()]
    for table, columns in EXPECTED.items():
        rows = await blank_database.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table)
        assert columns <= {r["column_name"] for r in rows}, table
    indexes = {r["indexname"] for r in await blank_database.fetch("SELECT indexname FROM pg_indexes")}
    assert {"threads_user_updated_idx", "messages_search_idx", "users_email_lower_key"} <= indexes
    assert await chatdb.migrate(blank_database) == []
    assert await chatdb.schema_version(blank_database) == max(applied)  # numbers may have gaps


async def test_database_ahead_of_code_refuses_to_start(blank_database):
    await chatdb.migrate(blank_database)
    await blank_database.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    with pytest.raises(chatdb.DatabaseAheadError):
        await chatdb.migrate(blank_database)


def test_every_migration_opens_with_a_comment_saying_why():
    for migration in chatdb.list_migrations():
        first = migration.path.read_text().lstrip().splitlines()[0]
        assert first.startswith("-- Why:"), migration.path.name


async def test_concurrent_migrations_apply_once(test_services, blank_database):
    import asyncio

    url = _with_database(test_services.admin_database_url, await blank_database.fetchval("SELECT current_database()"))
    conns = [await asyncpg.connect(url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(chatdb.migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(r) for r in results) == [0, 0, len(chatdb.list_migrations())]
