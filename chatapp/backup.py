"""Backups of the whole database to `<archive>/backups/<backup-id>/`, and restoring them.

A backup is one REPEATABLE READ snapshot of every table (except schema_migrations), read
through a server-side cursor in primary-key order into gzip JSON-lines parts of bounded size,
so memory stays flat however large the database. While one batch of rows is compressed (in a
thread) PostgreSQL prepares the next and finished parts upload in the background.
`manifest.json` is written last: a folder without one is an unfinished backup and is never
restored.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import secrets
import tempfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable

import asyncpg

from . import db, rows
from .storage import NotFound, Store, sha256_hex

# 2: rows in primary-key order, so a message may precede its parent (restore defers that check).
# 1: a self-referencing table parents first. Both are restored.
FORMAT = 2
PART_BYTES = 32 * 1024 * 1024  # JSON text per part: its gzip (held in memory until put) is smaller
# JSON text per cursor fetch (rows per fetch follow the rows' size); 4 MiB cost 20 MiB RSS, no faster.
BATCH_BYTES = 1024 * 1024
FIRST_BATCH_ROWS = 100  # before the rows' size is known
MAX_BATCH_ROWS = 20_000
GZIP_LEVEL = 3  # about twice as fast as 6 for ~15% more bytes; the backup's speed bounds the nightly run
UPLOADS_IN_FLIGHT = 2  # finished parts being put while the next is read (bounds memory)
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


class _Uploads:
    """Puts running in the background, at most UPLOADS_IN_FLIGHT at once; the first failure is raised."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    async def _reap(self, until: int) -> None:
        while len(self.tasks) > until:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self.tasks.discard(task)
                task.result()

    async def start(self, put: Callable[[], Awaitable[object]]) -> None:
        """Wait for a free slot, then run put() in the background."""
        await self._reap(UPLOADS_IN_FLIGHT - 1)
        self.tasks.add(asyncio.ensure_future(put()))

    async def finish(self) -> None:
        """Wait for every put (raising the first failure)."""
        await self._reap(0)

    async def abort(self) -> None:
        """Stop what is still running (the backup failed; no manifest will name those parts)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


class _PartWriter:
    """Gzip JSON lines of one table into memory, one bounded part at a time."""

    def __init__(self, store: Store, prefix: str, index: int, table: rows.Table, uploads: _Uploads) -> None:
        self.store, self.prefix, self.index, self.table, self.uploads = store, prefix, index, table, uploads
        self.parts: list[dict] = []
        self._open()

    def _open(self) -> None:
        # wbits 31: a gzip stream (header mtime 0, so equal rows give equal bytes).
        self.compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self.chunks: list[bytes] = []
        self.digest = hashlib.sha256()
        self.rows = 0
        self.size = 0

    def _compress(self, lines: list[str]) -> tuple[int, int, bool]:
        """Join, encode and compress the lines that fit in this part (at least one), in a thread
        (zlib releases the GIL): (lines taken, their bytes, whether the part is now full)."""
        data = ("\n".join(lines) + "\n").encode()
        taken, room = len(lines), PART_BYTES - self.size
        if len(data) > room and taken > 1:  # the part fills up in this batch: split it at a row
            taken = size = 0
            for line in lines:
                step = len(line.encode()) + 1
                if taken and size + step > room:
                    break
                taken, size = taken + 1, size + step
            data = data[:size]
        chunk = self.compressor.compress(data)
        if chunk:
            self.chunks.append(chunk)
            self.digest.update(chunk)
        return taken, len(data), taken < len(lines) or self.size + len(data) >= PART_BYTES

    async def write(self, lines: list[str]) -> int:
        """Append a batch of JSON rows, starting each part's upload once it is full; the batch's bytes."""
        total = 0
        while lines:
            taken, size, full = await asyncio.to_thread(self._compress, lines)
            self.rows, self.size, total = self.rows + taken, self.size + size, total + size
            if full:
                await self.close_part()
            lines = lines[taken:]
        return total

    async def close_part(self) -> None:
        """Finish the current part and start its upload (never overwriting)."""
        tail = self.compressor.flush()
        self.chunks.append(tail)
        self.digest.update(tail)
        data = b"".join(self.chunks)
        key = f"{self.prefix}/{self.index:03d}-{self.table.name}-{len(self.parts):05d}.jsonl.gz"
        self.parts.append({"key": key, "table": self.table.name, "rows": self.rows,
                           "sha256": self.digest.hexdigest(), "columns": list(self.table.columns)})
        await self.uploads.start(
            lambda: self.store.put(key, data, content_type="application/gzip", if_none_match=True))
        self._open()


async def plan(conn: asyncpg.Connection, count: bool) -> list[TablePlan]:
    """The tables a backup copies, in dependency order (with row counts when asked)."""
    plans = []
    for name in await rows.tables_in_dependency_order(conn):
        table = await rows.describe(conn, name)
        plans.append(TablePlan(table, await conn.fetchval(rows.count_sql(table)) if count else None))
    return plans


async def _copy_table(conn: asyncpg.Connection, writer: _PartWriter,
                      progress: Callable[[int], None] | None) -> None:
    """Stream one table through the writer; PostgreSQL fetches the next batch while one is compressed."""
    cursor = await conn.cursor(rows.select_sql(writer.table))
    limit = FIRST_BATCH_ROWS
    pending = asyncio.ensure_future(cursor.fetch(limit))
    try:
        while records := await pending:
            pending = asyncio.ensure_future(cursor.fetch(limit))
            size = await writer.write([record[0] for record in records])
            # Rows per fetch follow the rows' size: few wide rows or many narrow ones, ~BATCH_BYTES each.
            limit = max(10, min(MAX_BATCH_ROWS, BATCH_BYTES * len(records) // max(size, 1)))
            if progress:
                progress(len(records))
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await pending
    if writer.rows or not writer.parts:  # every table gets at least one (maybe empty) part
        await writer.close_part()


async def write_backup(
    conn: asyncpg.Connection, store: Store, *, backup_id: str | None = None, count: bool = False,
    progress: Callable[[int], None] | None = None, on_plan: Callable[[list[TablePlan]], None] | None = None,
) -> dict:
    """Snapshot every table into parts plus manifest.json; return the manifest."""
    backup_id = backup_id or new_backup_id()
    prefix = backup_prefix(backup_id)
    uploads = _Uploads()
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            version = await db.schema_version(conn)
            taken_at = await conn.fetchval("SELECT now()")  # the snapshot's moment
            plans = await plan(conn, count)
            if on_plan:
                on_plan(plans)
            parts: list[dict] = []
            for index, item in enumerate(plans, start=1):
                writer = _PartWriter(store, prefix, index, item.table, uploads)
                await _copy_table(conn, writer, progress)
                parts.extend(writer.parts)
        await uploads.finish()
    finally:
        await uploads.abort()  # nothing left after finish(); after a failure, the puts still running
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
    altered: list[rows.Table] = []
    async with conn.transaction():
        await conn.execute("SET CONSTRAINTS ALL DEFERRED")  # threads.current_leaf_id -> messages
        for name in dict.fromkeys(part["table"] for part in manifest["parts"]):
            if not await conn.fetchval("SELECT to_regclass(quote_ident($1)) IS NOT NULL", name):
                raise BackupError(f"the backup has a table {name!r} this database does not have")
            tables[name] = await rows.describe(conn, name)
            # Format 2 lists rows in key order: an answer may come before its question.
            if int(manifest.get("format", 1)) >= 2 and await rows.defer_self_reference(conn, tables[name]):
                altered.append(tables[name])
        for part, path in zip(manifest["parts"], paths):
            table = tables[part["table"]]
            columns = [c for c in part.get("columns") or table.columns if c in table.columns]
            batch: list[str] = []
            with gzip.open(path, "rt", encoding="utf-8") as lines:
                for line in lines:
                    batch.append(line.rstrip("\n"))
                    if len(batch) >= INSERT_BATCH:
                        await _insert(conn, table, columns, batch, stats, progress)
                        batch = []
            await _insert(conn, table, columns, batch, stats, progress)
        await rows.undo_deferral(conn, altered)
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
