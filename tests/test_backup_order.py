"""Backups list rows in primary-key order (format 2): restores must not depend on parents first."""
from __future__ import annotations

import gzip
import hashlib
import json
import uuid

import pytest

from chatapp import backup as backup_module
from chatapp import create_app, db
from s3 import overrides, run_sql, seed_history, table_checksums, target  # noqa: F401  (fixtures)

LOCAL = pytest.mark.parametrize("target", ["local"], indirect=True)


@pytest.fixture
def cli(overrides, clean_database):
    """A CLI runner for this test's archive target, on empty (migrated) tables."""
    run_sql(clean_database.url, db.migrate)
    return create_app(overrides).test_cli_runner()


async def _descending_chain(conn, length: int) -> list[uuid.UUID]:
    """A thread whose messages each answer the previous one but have ever smaller ids."""
    ids = sorted((uuid.uuid4() for _ in range(length)), reverse=True)
    user_id, thread_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute("INSERT INTO users (id, email, password_hash) VALUES ($1, 'chain@example.com', 'x')", user_id)
    await conn.execute("INSERT INTO threads (id, user_id, title) VALUES ($1, $2, 'Chain')", thread_id, user_id)
    parent = None
    for n, mid in enumerate(ids):
        await conn.execute(
            "INSERT INTO messages (id, thread_id, parent_id, role, content) VALUES ($1, $2, $3, $4, $5)",
            mid, thread_id, parent, "user" if n % 2 == 0 else "assistant", f"message {n}")
        parent = mid
    await conn.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", thread_id, parent)
    return ids


def _backup(cli) -> str:
    result = cli.invoke(args=["backup"])
    assert result.exit_code == 0, result.output
    return result.output.split()[1].rstrip(":")


def _message_lines(target, manifest: dict) -> list[dict]:
    return [json.loads(line) for part in manifest["parts"] if part["table"] == "messages"
            for line in gzip.decompress(target.read(part["key"])).splitlines()]


async def _empty_database(conn) -> None:
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


def test_a_backup_whose_children_come_before_their_parents_restores_identically(cli, target, clean_database,
                                                                                 monkeypatch):
    monkeypatch.setattr(backup_module, "PART_BYTES", 2000)  # the chain spans several parts too
    # One INSERT checks its own rows only at its end: small batches make the order matter.
    monkeypatch.setattr(backup_module, "INSERT_BATCH", 3)
    url = clean_database.url
    run_sql(url, lambda conn: seed_history(conn, users=1, threads=1, turns=2))
    chain = run_sql(url, lambda conn: _descending_chain(conn, 40))
    before = run_sql(url, table_checksums)
    backup_id = _backup(cli)
    manifest = json.loads(target.read(f"backups/{backup_id}/manifest.json"))
    assert manifest["format"] == 2
    assert sum(1 for p in manifest["parts"] if p["table"] == "messages") > 1
    order = [line["id"] for line in _message_lines(target, manifest)]
    assert order == sorted(order)  # primary-key order, no parents-first walk
    assert order.index(str(chain[-1])) < order.index(str(chain[0]))  # the deepest answer precedes the root

    run_sql(url, _empty_database)
    restored = cli.invoke(args=["restore", backup_id])
    assert restored.exit_code == 0, restored.output
    assert run_sql(url, table_checksums) == before
    again = cli.invoke(args=["restore", backup_id])  # into a filled database: nothing new, nothing broken
    assert again.exit_code == 0 and "messages: 0 restored" in again.output
    assert run_sql(url, table_checksums) == before


@LOCAL
def test_restore_into_an_older_schema_defers_parent_checks_only_for_the_load(cli, target, clean_database,
                                                                             monkeypatch):
    monkeypatch.setattr(backup_module, "INSERT_BATCH", 3)
    url = clean_database.url
    run_sql(url, lambda conn: _descending_chain(conn, 10))
    before = run_sql(url, table_checksums)
    backup_id = _backup(cli)
    key = f"backups/{backup_id}/manifest.json"
    manifest = json.loads(target.read(key))
    manifest["schema_version"] = 6  # before messages.parent_id became DEFERRABLE (migrations/0007)
    target.write(key, json.dumps(manifest).encode())

    run_sql(url, _empty_database)
    restored = cli.invoke(args=["restore", backup_id])
    assert restored.exit_code == 0, restored.output
    assert run_sql(url, table_checksums) == before
    constraint = run_sql(url, lambda conn: conn.fetchrow(
        "SELECT condeferrable, condeferred FROM pg_constraint WHERE conname = 'messages_parent_id_fkey'"))
    # Put back NOT DEFERRABLE after the load, then migration 0007 ran as on any upgraded database.
    assert (constraint["condeferrable"], constraint["condeferred"]) == (True, False)


@LOCAL
def test_a_message_whose_parent_is_missing_refuses_the_whole_restore(cli, target, clean_database):
    url = clean_database.url
    chain = run_sql(url, lambda conn: _descending_chain(conn, 6))
    backup_id = _backup(cli)
    key = f"backups/{backup_id}/manifest.json"
    manifest = json.loads(target.read(key))
    part = next(p for p in manifest["parts"] if p["table"] == "messages")
    lines = gzip.decompress(target.read(part["key"])).splitlines()
    kept = [line for line in lines if json.loads(line)["id"] != str(chain[2])]  # a parent in the middle
    data = gzip.compress(b"\n".join(kept) + b"\n")
    target.write(part["key"], data)
    part.update(rows=len(kept), sha256=hashlib.sha256(data).hexdigest())
    target.write(key, json.dumps(manifest).encode())

    run_sql(url, _empty_database)
    result = cli.invoke(args=["restore", backup_id])
    assert result.exit_code == 1
    assert "does not fit this database (ForeignKeyViolationError" in result.output
    assert result.output.strip().endswith("nothing was restored")
    counts = run_sql(url, lambda conn: conn.fetchrow("SELECT (SELECT count(*) FROM messages) AS m, "
                                                     "(SELECT count(*) FROM threads) AS t"))
    assert (counts["m"], counts["t"]) == (0, 0)


def test_old_format_1_backups_still_restore(cli, target, clean_database):
    url = clean_database.url
    run_sql(url, lambda conn: seed_history(conn, users=1, threads=2, turns=3))  # ids grow: parents first
    before = run_sql(url, table_checksums)
    backup_id = _backup(cli)
    key = f"backups/{backup_id}/manifest.json"
    manifest = json.loads(target.read(key))
    del manifest["format"]  # the first manifests had no format field at all
    manifest["schema_version"] = 6
    target.write(key, json.dumps(manifest).encode())
    run_sql(url, _empty_database)
    restored = cli.invoke(args=["restore", backup_id])
    assert restored.exit_code == 0, restored.output
    assert run_sql(url, table_checksums) == before
