"""`backup`, `list-backups` and `restore` through the CLI, against a local folder and moto's S3."""
from __future__ import annotations

import gzip
import hashlib
import json

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


def _backup(cli, *args) -> str:
    result = cli.invoke(args=["backup", *args])
    assert result.exit_code == 0, result.output
    return result.output.split()[1].rstrip(":")  # "backup <id>: N rows in M parts at URL"


async def _empty_database(conn) -> None:
    """As after losing the database: no tables at all, not even schema_migrations."""
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


def test_backup_then_restore_into_an_empty_database_gives_identical_tables(cli, target, clean_database, monkeypatch):
    monkeypatch.setattr(backup_module, "PART_BYTES", 5000)  # several parts per big table
    url = clean_database.url
    run_sql(url, lambda conn: seed_history(conn, users=3, threads=2, turns=4))
    before = run_sql(url, table_checksums)
    assert before["messages"][0] == 3 * 2 * 4 * 3

    result = cli.invoke(args=["backup"])
    assert result.exit_code == 0, result.output
    backup_id = result.output.split()[1].rstrip(":")
    assert "█" not in result.output and "#" not in result.output  # no progress bar when not on a terminal
    manifest = json.loads(target.read(f"backups/{backup_id}/manifest.json"))
    assert manifest["schema_version"] == max(m.version for m in db.list_migrations())
    assert manifest["created_at"] and isinstance(manifest["parts"], list)
    tables = [p["table"] for p in manifest["parts"]]
    assert "schema_migrations" not in tables
    assert tables.index("users") < tables.index("threads") < tables.index("messages")
    assert tables.count("messages") > 1, "bounded parts: the messages span several objects"
    for part in manifest["parts"]:
        stored = target.read(part["key"])
        assert part["key"].startswith(f"backups/{backup_id}/") and part["key"].endswith(".jsonl.gz")
        assert hashlib.sha256(stored).hexdigest() == part["sha256"]
        assert len(gzip.decompress(stored).splitlines()) == part["rows"]
    for table, (count, _) in before.items():
        assert sum(p["rows"] for p in manifest["parts"] if p["table"] == table) == count

    listed = cli.invoke(args=["list-backups"])
    assert listed.exit_code == 0 and listed.output.split() == [backup_id]

    run_sql(url, _empty_database)
    restored = cli.invoke(args=["restore", backup_id])
    assert restored.exit_code == 0, restored.output
    assert "messages: 72 restored, 0 already there" in restored.output
    assert run_sql(url, table_checksums) == before
    version = run_sql(url, lambda conn: conn.fetchval("SELECT max(version) FROM schema_migrations"))
    assert version == manifest["schema_version"]

    again = cli.invoke(args=["restore", backup_id])  # restoring twice duplicates nothing
    assert again.exit_code == 0 and "messages: 0 restored, 72 already there" in again.output
    assert run_sql(url, table_checksums) == before


@LOCAL
def test_dry_run_prints_the_plan_and_writes_nothing(cli, target, clean_database):
    run_sql(clean_database.url, lambda conn: seed_history(conn, users=1, threads=1, turns=1))
    result = cli.invoke(args=["backup", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would write a backup" in result.output and "  messages: 3 rows" in result.output
    assert target.keys() == []


@LOCAL
def test_quiet_backup_prints_nothing_and_min_interval_skips(cli, target, clean_database):
    assert cli.invoke(args=["backup", "-q"]).output == ""
    assert len(target.keys("backups/")) > 1
    skipped = cli.invoke(args=["backup", "--min-interval-hours", "1"])
    assert skipped.exit_code == 0 and skipped.output.startswith("skipped: backup ")
    assert len(cli.invoke(args=["list-backups"]).output.split()) == 1


@LOCAL
def test_a_second_backup_waits_its_turn(cli, target, clean_database):
    async def hold_lock_and_back_up(conn):
        await conn.execute("SELECT pg_advisory_lock($1)", backup_module.BACKUP_LOCK_KEY)
        import asyncio

        return await asyncio.to_thread(cli.invoke, args=["backup"])

    result = run_sql(clean_database.url, hold_lock_and_back_up)
    assert result.exit_code == 0 and "skipped: another backup is running" in result.output
    assert target.keys() == []


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_restore_refuses_a_damaged_part_and_changes_nothing(cli, target, clean_database, damage):
    url = clean_database.url
    run_sql(url, lambda conn: seed_history(conn, users=1, threads=1, turns=2))
    backup_id = _backup(cli)
    manifest = json.loads(target.read(f"backups/{backup_id}/manifest.json"))
    part = next(p for p in manifest["parts"] if p["table"] == "messages")
    stored = target.read(part["key"])
    target.write(part["key"], stored[:-9] if damage == "truncated" else stored[:20] + b"X" + stored[21:])
    run_sql(url, _empty_database)
    result = cli.invoke(args=["restore", backup_id])
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: part {part['key']} is corrupt or truncated (sha256 mismatch); "
                                     "nothing was restored")
    tables = run_sql(url, lambda conn: conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    assert tables == []  # refused before touching the database


@LOCAL
def test_restore_refuses_a_manifest_from_a_newer_schema(cli, target, clean_database):
    backup_id = _backup(cli)
    key = f"backups/{backup_id}/manifest.json"
    manifest = json.loads(target.read(key))
    manifest["schema_version"] = 9999
    target.write(key, json.dumps(manifest).encode())
    result = cli.invoke(args=["restore", backup_id])
    assert result.exit_code == 1
    assert "schema version 9999, newer than this chatapp knows" in result.output
    assert len(result.output.strip().splitlines()) == 1


@LOCAL
@pytest.mark.parametrize(("backup_id", "message"), [
    ("20200101T000000Z-000000", "there is no backup 20200101T000000Z-000000"),
    ("../etc", "is not a backup id"),
])
def test_restore_of_an_unknown_backup_is_a_clear_error(cli, target, backup_id, message):
    result = cli.invoke(args=["restore", backup_id])
    assert result.exit_code == 1 and message in result.output


@pytest.mark.parametrize("target", ["s3"], indirect=True)
@pytest.mark.parametrize(("problem", "command", "message"), [
    ("missing bucket", ["backup"], "error: the bucket 'chatapp-missing-bucket' does not exist"),
    ("wrong credentials", ["restore", "20200101T000000Z-0"], "error: S3 denied access to s3://"),
    ("unreachable endpoint", ["archive", "--older-than", "0"], "error: cannot reach the S3 endpoint http://127.0.0.1:9"),
    ("wrong credentials", ["archive", "--older-than", "0"], "error: S3 denied access to s3://"),
], ids=["missing-bucket-backup", "wrong-credentials-restore", "unreachable-archive", "wrong-credentials-archive"])
def test_bad_s3_settings_fail_with_one_line_and_delete_nothing(target, overrides, clean_database, moto_s3,
                                                              monkeypatch, problem, command, message):
    url = clean_database.url
    run_sql(url, lambda conn: seed_history(conn, users=1, threads=1, turns=1, idle_days=400))
    if problem == "missing bucket":
        overrides["ARCHIVE_URL"] = "s3://chatapp-missing-bucket/x"
    elif problem == "unreachable endpoint":
        overrides["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    before = run_sql(url, table_checksums)
    runner = create_app(overrides).test_cli_runner()
    if problem == "wrong credentials":
        with moto_s3.checking_credentials():
            result = runner.invoke(args=command)
    else:
        result = runner.invoke(args=command)
    assert result.exit_code == 1
    assert result.output.startswith(message) and len(result.output.strip().splitlines()) == 1, result.output
    assert run_sql(url, table_checksums) == before
