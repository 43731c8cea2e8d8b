"""`archive`: idle threads move to the store, verified, and leave PostgreSQL; killed and rerun safely."""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import json

import pytest

import services
from chatapp import archive, create_app, db
from chatapp.storage import open_store
from s3 import overrides, run_sql, seed_history, table_checksums, target  # noqa: F401

LOCAL = pytest.mark.parametrize("target", ["local"], indirect=True)


class Killed(BaseException):
    """Stands for the process dying at a step (BaseException: nothing in chatapp catches it)."""


@pytest.fixture
def cli(overrides, clean_database):
    """A CLI runner for this test's archive target, on empty (migrated) tables."""
    run_sql(clean_database.url, db.migrate)
    return create_app(overrides).test_cli_runner()


@pytest.fixture
async def conn(test_services):
    """A connection to empty, migrated tables."""
    import asyncpg

    await services.reset_database(test_services.database_url)
    connection = await asyncpg.connect(test_services.database_url)
    await db.migrate(connection)
    yield connection
    await connection.close()


async def _messages(conn, thread_id) -> list[str]:
    rows = await conn.fetch("SELECT row_to_json(m)::text AS line FROM (SELECT id, parent_id, role, content, status, "
                            "created_at FROM messages WHERE thread_id = $1) m ORDER BY 1", thread_id)
    return [r["line"] for r in rows]


def _archived_rows(target, key: str) -> tuple[dict, list[dict]]:
    """Header and message rows of an archived thread, checked against the hash in its key."""
    payload = gzip.decompress(target.read(key))
    assert hashlib.sha256(payload).hexdigest() == key.rsplit("/", 1)[1].split(".")[0]
    header, *lines = payload.decode().splitlines()
    return json.loads(header), [json.loads(line) for line in lines]


def test_archive_moves_idle_threads_and_a_rerun_is_a_no_op(cli, target, clean_database):
    url = clean_database.url
    old = run_sql(url, lambda c: seed_history(c, users=2, threads=1, turns=2, idle_days=40))
    recent = run_sql(url, lambda c: seed_history(c, users=1, threads=1, turns=1, idle_days=1))
    busy = run_sql(url, lambda c: seed_history(c, users=1, threads=1, turns=1, idle_days=40))
    run_sql(url, lambda c: c.execute("UPDATE messages SET status = 'streaming' WHERE thread_id = $1 "
                                     "AND role = 'assistant'", busy[0]))
    leaves = {t: run_sql(url, lambda c: c.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", t)) for t in old}
    originals = {t: run_sql(url, lambda c: c.fetch("SELECT id, content FROM messages WHERE thread_id = $1", t)) for t in old}
    before = run_sql(url, table_checksums)

    dry = cli.invoke(args=["archive", "--older-than", "30", "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith("would archive 2 threads (12 messages)")
    assert all(str(t) in dry.output for t in old) and run_sql(url, table_checksums) == before
    assert target.keys() == []

    result = cli.invoke(args=["archive", "--older-than", "30"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("archived 2 threads (12 messages) to ")
    for thread_id in old:
        row = run_sql(url, lambda c: c.fetchrow("SELECT user_id, archived_at, archive_key FROM threads WHERE id = $1",
                                                thread_id))
        assert row["archived_at"] is not None
        assert target.keys(f"threads/{row['user_id']}/{thread_id}/") == [row["archive_key"]]
        header, stored = _archived_rows(target, row["archive_key"])
        assert header["current_leaf_id"] == str(leaves[thread_id]) and header["rows"] == 6
        assert {(m["id"], m["content"]) for m in stored} == {(str(r["id"]), r["content"]) for r in originals[thread_id]}
        assert run_sql(url, lambda c: c.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", thread_id)) == 0
    untouched = run_sql(url, lambda c: c.fetchval(
        "SELECT count(*) FROM messages WHERE thread_id = ANY($1::uuid[])", [recent[0], busy[0]]))
    assert untouched == 6

    keys = target.keys()
    rerun = cli.invoke(args=["archive", "--older-than", "30"])
    assert rerun.exit_code == 0 and rerun.output.startswith("archived 0 threads")
    assert target.keys() == keys

    everything = cli.invoke(args=["archive", "--older-than", "0"])  # all idle threads, never one answering
    assert everything.output.startswith("archived 1 threads (3 messages)")
    assert run_sql(url, lambda c: c.fetchval("SELECT count(*) FROM messages")) == 3  # the busy thread


@pytest.mark.parametrize("step", ["before_put", "after_put", "before_delete"])
async def test_killed_at_any_step_then_rerun_leaves_each_message_in_exactly_one_place(conn, target, step):
    [thread_id] = await seed_history(conn, users=1, threads=1, turns=2, idle_days=10)
    original = await _messages(conn, thread_id)

    def die(name, tid):
        if name == step:
            raise Killed(name)

    async with open_store(target.url, target.settings["AWS_ENDPOINT_URL"]) as store:
        with pytest.raises(Killed):
            await archive.archive_threads(conn, store, 5, on_step=die)
        # Killed: every message is still in PostgreSQL; an object exists only once it was put.
        assert await _messages(conn, thread_id) == original
        assert await conn.fetchval("SELECT archived_at FROM threads WHERE id = $1", thread_id) is None
        assert len(target.keys("threads/")) == (0 if step == "before_put" else 1)

        done = await archive.archive_threads(conn, store, 5)
        assert done["archived"] == 1 and done["failed"] == 0
        key = await conn.fetchval("SELECT archive_key FROM threads WHERE id = $1", thread_id)
        assert target.keys("threads/") == [key]  # exactly one object...
        assert await _messages(conn, thread_id) == []  # ...and nothing left behind in PostgreSQL
        _, stored = _archived_rows(target, key)
        assert len(stored) == len(original)

        assert (await archive.archive_threads(conn, store, 5))["archived"] == 0  # a rerun is a no-op
        assert target.keys("threads/") == [key]

        # And back: the same rows, the same visible branch.
        user_id = await conn.fetchval("SELECT user_id FROM threads WHERE id = $1", thread_id)
        assert await archive.rehydrate(conn, store, user_id, thread_id)
        assert await _messages(conn, thread_id) == original


async def test_a_thread_that_changes_while_archiving_stays_in_postgresql(conn, target, test_services):
    import asyncpg

    from chatapp.ids import uuid7

    [thread_id] = await seed_history(conn, users=1, threads=1, turns=1, idle_days=10)
    other = await asyncpg.connect(test_services.database_url)
    steps = []

    async def user_replies(name, tid):
        steps.append(name)
        if name == "before_delete":  # between the verified put and the delete, as the app sends a message
            async with other.transaction():
                leaf = await other.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1 FOR UPDATE", tid)
                new = uuid7()
                await other.execute("INSERT INTO messages (id, thread_id, parent_id, role, content) "
                                    "VALUES ($1, $2, $3, 'user', 'one more thing')", new, tid, leaf)
                await other.execute("UPDATE threads SET current_leaf_id = $2, updated_at = now() WHERE id = $1",
                                    tid, new)

    try:
        async with open_store(target.url, target.settings["AWS_ENDPOINT_URL"]) as store:
            key = await archive.archive_thread(conn, store, thread_id, user_replies)
    finally:
        await other.close()
    assert steps == ["before_put", "after_put", "before_delete"]
    assert key is None  # refused: the thread changed
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", thread_id) == 4
    assert await conn.fetchval("SELECT archived_at FROM threads WHERE id = $1", thread_id) is None
    assert target.keys("threads/") == []  # the object this run wrote (and nothing references) is gone again


@LOCAL
def test_a_corrupt_object_in_the_way_is_reported_and_the_thread_stays(cli, target, clean_database, overrides):
    url = clean_database.url
    [thread_id] = run_sql(url, lambda c: seed_history(c, users=1, threads=1, turns=1, idle_days=10))
    assert cli.invoke(args=["archive", "--older-than", "5"]).exit_code == 0
    key, user_id = run_sql(url, lambda c: c.fetchrow("SELECT archive_key, user_id FROM threads WHERE id = $1", thread_id))

    async def bring_back(conn):
        async with open_store(target.url) as store:
            return await archive.rehydrate(conn, store, user_id, thread_id)

    assert run_sql(url, bring_back)
    target.write(key, b"not gzip at all")  # damaged behind our back; the same content maps to this key
    run_sql(url, lambda c: c.execute("UPDATE threads SET updated_at = now() - interval '10 days'"))
    result = cli.invoke(args=["archive", "--older-than", "5"])
    assert result.exit_code == 1
    assert f"error: thread {thread_id}: {key} is corrupt or truncated (not valid gzip); the thread stays in " \
           "PostgreSQL (remove the object to archive it)" in result.output
    assert run_sql(url, lambda c: c.fetchval("SELECT count(*) FROM messages")) == 3
    assert target.read(key) == b"not gzip at all"  # never overwritten


@LOCAL
def test_only_one_archive_run_at_a_time(cli, target, clean_database):
    url = clean_database.url
    run_sql(url, lambda c: seed_history(c, users=1, threads=1, turns=1, idle_days=10))

    async def hold_lock_and_archive(conn):
        await conn.execute("SELECT pg_advisory_lock($1)", archive.ARCHIVE_LOCK_KEY)
        return await asyncio.to_thread(cli.invoke, args=["archive", "--older-than", "5"])

    result = run_sql(url, hold_lock_and_archive)
    assert result.exit_code == 0 and "skipped: another archive run holds the lock" in result.output
    assert run_sql(url, lambda c: c.fetchval("SELECT count(*) FROM messages")) == 3


@LOCAL
def test_quiet_archive_prints_nothing(cli, target, clean_database):
    run_sql(clean_database.url, lambda c: seed_history(c, users=1, threads=1, turns=1, idle_days=10))
    result = cli.invoke(args=["archive", "--older-than", "5", "-q"])
    assert result.exit_code == 0 and result.output == ""
    assert len(target.keys("threads/")) == 1
