"""Backups of the whole database to `<archive>/backups/<backup-id>/`, and restoring them.

A backup is one REPEATABLE READ snapshot of every table (except schema_migrations), read
through a server-side cursor into gzip JSON-lines parts of bounded size, so memory stays flat
however large the database. `manifest.json` is written last: a folder without one is an
unfinished backup and is never restored.
"""
from __future__ import annotations

import gzip
import io
import json
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import asyncpg

from . import db, rows
from .storage import NotFound, Store, sha256_hex

FORMAT = 1
PART_BYTES = 32 * 1024 * 1024  # JSON text per part: its gzip (held in memory until put) is smaller
INSERT_BATCH = 500
BACKUP_LOCK_KEY = 7_424_518_302  # pg_advisory_lock: one backup at a time across instances


class BackupError(RuntimeError):
    """A backup or restore that must stop; the message is one line for the operator."""


def new_backup_id() -> str:
    """A time-sortable folder name: 20250102T031500Z-3fa9c1."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def backup_prefix(backup_id: str) -> str:
    """The folder of one backup inside the archive."""
    if not backup_id or "/" in backup_id or backup_id.startswith("."):
        raise BackupError(f"{backup_id!r} is not a backup id (see `quart --app chatapp list-backups`)")
    return f"backups/{backup_id}"


@dataclass
class TablePlan:
    """One table of a backup and (when counted) its rows."""

    table: rows.Table
    rows: int | None = None


class _PartWriter:
    """Gzip JSON lines into memory, one bounded part at a time."""

    def __init__(self, store: Store, prefix: str, index: int, table: rows.Table) -> None:
        self.store, self.prefix, self.index, self.table = store, prefix, index, table
        self.parts: list[dict] = []
        self._open()

    def _open(self) -> None:
        self.buffer = io.BytesIO()
        self.gzip = gzip.GzipFile(fileobj=self.buffer, mode="wb", compresslevel=6, mtime=0)
        self.rows = 0
        self.size = 0

    def write(self, line: str) -> None:
        """Append one JSON row."""
        data = line.encode() + b"\n"
        self.gzip.write(data)
        self.rows += 1
        self.size += len(data)

    @property
    def full(self) -> bool:
        """True once the part holds PART_BYTES of text: time to upload it."""
        return self.size >= PART_BYTES

    async def close_part(self) -> None:
        """Finish the current part and upload it (never overwriting)."""
        self.gzip.close()
        data = self.buffer.getvalue()
        key = f"{self.prefix}/{self.index:03d}-{self.table.name}-{len(self.parts):05d}.jsonl.gz"
        await self.store.put(key, data, content_type="application/gzip", if_none_match=True)
        self.parts.append({"key": key, "table": self.table.name, "rows": self.rows,
                           "sha256": sha256_hex(data), "columns": list(self.table.columns)})
        self._open()


async def plan(conn: asyncpg.Connection, count: bool) -> list[TablePlan]:
    """The tables a backup copies, in dependency order (with row counts when asked)."""
    plans = []
    for name in await rows.tables_in_dependency_order(conn):
        table = await rows.describe(conn, name)
        plans.append(TablePlan(table, await conn.fetchval(rows.count_sql(table)) if count else None))
    return plans


async def write_backup(
    conn: asyncpg.Connection, store: Store, *, backup_id: str | None = None, count: bool = False,
    progress: Callable[[int], None] | None = None, on_plan: Callable[[list[TablePlan]], None] | None = None,
) -> dict:
    """Snapshot every table into parts plus manifest.json; return the manifest."""
    backup_id = backup_id or new_backup_id()
    prefix = backup_prefix(backup_id)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        version = await db.schema_version(conn)
        taken_at = await conn.fetchval("SELECT now()")  # the snapshot's moment
        plans = await plan(conn, count)
        if on_plan:
            on_plan(plans)
        parts: list[dict] = []
        for index, item in enumerate(plans, start=1):
            writer = _PartWriter(store, prefix, index, item.table)
            total = 0
            async for record in conn.cursor(rows.select_sql(item.table), prefetch=1000):
                writer.write(record["line"])
                total += 1
                if writer.full:
                    await writer.close_part()
                if progress and total % 1000 == 0:
                    progress(1000)
            if writer.rows or not writer.parts:  # every table gets at least one (maybe empty) part
                await writer.close_part()
            if progress:
                progress(total % 1000)
            # A self-referencing table is read parent-first; a row in a reference cycle (not
            # possible for messages, but for a table added later) would be silently missing.
            expected = await conn.fetchval(rows.count_sql(item.table)) if item.table.parent else total
            if total != expected:
                raise BackupError(f"{item.table.name}: read {total} of {expected} rows; refusing an incomplete backup")
            parts.extend(writer.parts)
    manifest = {
        "format": FORMAT, "backup_id": backup_id, "schema_version": version,
        "created_at": taken_at.astimezone(timezone.utc).isoformat(timespec="seconds"), "parts": parts,
    }
    body = json.dumps(manifest, indent=1).encode()
    await store.put(f"{prefix}/manifest.json", body, content_type="application/json", if_none_match=True)
    return manifest


async def list_backups(store: Store) -> list[str]:
    """Ids of the complete backups (those with a manifest), oldest first."""
    found = []
    async for info in store.list("backups/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json":
            found.append(parts[1])
    return sorted(found)


async def read_manifest(store: Store, backup_id: str) -> dict:
    """Load and check a backup's manifest; refuse one this code cannot restore."""
    try:
        raw = await store.get(f"{backup_prefix(backup_id)}/manifest.json")
    except NotFound:
        raise BackupError(f"there is no backup {backup_id} in {store.url}") from None
    try:
        manifest = json.loads(raw)
        version = int(manifest["schema_version"])
        parts = manifest["parts"]
        assert isinstance(parts, list) and all({"key", "table", "rows", "sha256"} <= set(p) for p in parts)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise BackupError(f"the manifest of backup {backup_id} is damaged or not a chatapp manifest") from None
    known = max((m.version for m in db.list_migrations()), default=0)
    if version > known:
        raise BackupError(f"backup {backup_id} has schema version {version}, newer than this chatapp "
                          f"knows ({known}); upgrade chatapp before restoring it")
    if int(manifest.get("format", 1)) > FORMAT:
        raise BackupError(f"backup {backup_id} uses a newer backup format; upgrade chatapp before restoring it")
    return manifest


async def download_verified(store: Store, manifest: dict, folder: Path,
                            progress: Callable[[int], None] | None = None) -> list[Path]:
    """Fetch every part into folder, checking each sha256; refuse on the first mismatch."""
    prefix = backup_prefix(manifest["backup_id"]) + "/" if manifest.get("backup_id") else ""
    paths = []
    for number, part in enumerate(manifest["parts"]):
        if prefix and not part["key"].startswith(prefix):
            raise BackupError(f"the manifest names {part['key']}, outside its backup; refusing")
        try:
            data = await store.get(part["key"])
        except NotFound:
            raise BackupError(f"part {part['key']} is missing; nothing was restored") from None
        if sha256_hex(data) != part["sha256"]:
            raise BackupError(f"part {part['key']} is corrupt or truncated (sha256 mismatch); nothing was restored")
        path = folder / f"{number:05d}.jsonl.gz"
        path.write_bytes(data)
        paths.append(path)
        if progress:
            progress(1)
    return paths


async def migrate_to(conn: asyncpg.Connection, version: int) -> None:
    """Apply the migrations up to `version` only (an empty database restored at the backup's schema)."""
    with tempfile.TemporaryDirectory(prefix="chatapp-migrate-") as folder:
        for migration in db.list_migrations():
            if migration.version <= version:
                (Path(folder) / migration.path.name).write_text(migration.path.read_text())
        await db.migrate(conn, Path(folder))


async def load(conn: asyncpg.Connection, manifest: dict, paths: list[Path],
               progress: Callable[[int], None] | None = None) -> dict[str, tuple[int, int]]:
    """Insert every verified part in one transaction, skipping rows that exist; per table (new, skipped)."""
    if await db.schema_version(conn) == 0:
        # An empty database: build it at the backup's schema so later migrations (and their
        # data changes) run over the restored rows exactly as they did on the original.
        await migrate_to(conn, int(manifest["schema_version"]))
    else:
        await db.migrate(conn)
    try:
        stats = await _load_parts(conn, manifest, paths, progress)
    except asyncpg.PostgresError as exc:  # e.g. a foreign key to a row this database lacks
        raise BackupError(f"the backup does not fit this database ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0]}); nothing was restored") from None
    await db.migrate(conn)
    return stats


async def _load_parts(conn: asyncpg.Connection, manifest: dict, paths: list[Path],
                      progress: Callable[[int], None] | None) -> dict[str, tuple[int, int]]:
    stats: dict[str, tuple[int, int]] = {}
    tables: dict[str, rows.Table] = {}
    async with conn.transaction():
        await conn.execute("SET CONSTRAINTS ALL DEFERRED")  # threads.current_leaf_id -> messages
        for part, path in zip(manifest["parts"], paths):
            name = part["table"]
            if name not in tables:
                if not await conn.fetchval("SELECT to_regclass(quote_ident($1)) IS NOT NULL", name):
                    raise BackupError(f"the backup has a table {name!r} this database does not have")
                tables[name] = await rows.describe(conn, name)
            table = tables[name]
            columns = [c for c in part.get("columns") or table.columns if c in table.columns]
            batch: list[str] = []
            with gzip.open(path, "rt", encoding="utf-8") as lines:
                for line in lines:
                    batch.append(line.rstrip("\n"))
                    if len(batch) >= INSERT_BATCH:
                        await _insert(conn, table, columns, batch, stats, progress)
                        batch = []
            await _insert(conn, table, columns, batch, stats, progress)
        for table in tables.values():
            await rows.reset_sequences(conn, table)
    return stats


async def _insert(conn: asyncpg.Connection, table: rows.Table, columns: list[str], batch: list[str],
                  stats: dict[str, tuple[int, int]], progress: Callable[[int], None] | None) -> None:
    """Insert one batch and add (new, already there) to the table's totals."""
    new = await rows.insert_rows(conn, table, columns, batch)
    done, skipped = stats.get(table.name, (0, 0))
    stats[table.name] = (done + new, skipped + len(batch) - new)
    if progress:
        progress(len(batch))
