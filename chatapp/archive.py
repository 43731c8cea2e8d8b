"""Cold storage of idle threads (`archive`) and bringing one back on request (rehydrate).

A thread's messages become one object `threads/<user>/<thread>/<sha256>.jsonl.gz`, named by
the SHA-256 of its uncompressed content. The steps, each safe to be killed after:

1. build the object from the messages;  2. put it with If-None-Match (never overwrite);
3. read it back and check the hash;     4. in one transaction, lock the thread, check nothing
   changed, delete its messages and record archived_at + archive_key.

Killed before 4 and rerun, the same content gives the same key: the put finds the object,
the read-back verifies it and step 4 completes, so each message ends in PostgreSQL or in exactly
one verified object. The thread row itself stays, so the thread stays in its owner's list.

Rehydrating keeps the object: backups taken while the thread was archived point at it.
"""
from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Awaitable, Callable

import asyncpg

from . import db, rows
from .storage import AlreadyExists, NotFound, Store

FORMAT = 1
ARCHIVE_LOCK_KEY = 7_424_518_303  # pg_advisory_lock: one archive run at a time across instances
INSERT_BATCH = 500


class ArchiveError(RuntimeError):
    """Archiving or restoring one thread must stop; the message is one line for a person."""


@dataclass
class Candidate:
    """A thread idle long enough to archive."""

    id: uuid.UUID
    user_id: uuid.UUID
    title: str
    messages: int
    last_activity: datetime


async def select_candidates(conn: asyncpg.Connection, older_than_days: int) -> list[Candidate]:
    """Unarchived threads with messages, no answer in progress and no activity for N days."""
    rows_ = await conn.fetch(
        """SELECT t.id, t.user_id, t.title, count(m.id) AS messages,
                  greatest(t.updated_at, max(coalesce(m.finished_at, m.created_at))) AS last_activity
           FROM threads t JOIN messages m ON m.thread_id = t.id
           WHERE t.archived_at IS NULL
           GROUP BY t.id
           HAVING bool_and(m.status <> 'streaming')
              AND greatest(t.updated_at, max(coalesce(m.finished_at, m.created_at)))
                  <= now() - make_interval(days => $1)
           ORDER BY last_activity, t.id""",
        older_than_days,
    )
    return [Candidate(**dict(r)) for r in rows_]


async def check_schema(conn: asyncpg.Connection) -> None:
    """Refuse when another table references messages: deleting them would lose its rows."""
    others = await conn.fetch(
        """SELECT DISTINCT src.relname FROM pg_constraint c JOIN pg_class src ON src.oid = c.conrelid
           WHERE c.contype = 'f' AND c.confrelid = 'messages'::regclass
             AND c.conrelid NOT IN ('messages'::regclass, 'threads'::regclass)"""
    )
    if others:
        names = ", ".join(r["relname"] for r in others)
        raise ArchiveError(f"table(s) {names} reference messages; archiving would lose their rows, so it is refused")


async def build_payload(conn: asyncpg.Connection, thread_id: uuid.UUID,
                        table: rows.Table | None = None) -> tuple[bytes, str, list]:
    """The thread's messages as JSON lines after a header line; the content's sha256; their ids."""
    thread = await conn.fetchrow("SELECT user_id, current_leaf_id FROM threads WHERE id = $1", thread_id)
    table = table or await rows.describe(conn, "messages")
    keyed = await rows.fetch_lines(conn, table, "t.thread_id = $1", thread_id)
    lines = [line for _, line in keyed]
    header = {
        "format": FORMAT, "kind": "thread", "schema_version": await db.schema_version(conn),
        "thread_id": str(thread_id), "user_id": str(thread["user_id"]),
        # Deleting the messages nulls threads.current_leaf_id (ON DELETE SET NULL): keep it here.
        "current_leaf_id": str(thread["current_leaf_id"]) if thread["current_leaf_id"] else None,
        "table": "messages", "columns": list(table.columns), "rows": len(lines),
    }
    payload = ("\n".join([json.dumps(header, sort_keys=True), *lines]) + "\n").encode()
    return payload, hashlib.sha256(payload).hexdigest(), [k for k, _ in keyed]


def object_key(user_id: uuid.UUID, thread_id: uuid.UUID, digest: str) -> str:
    """Where a thread's archived content lives (named by its hash, so reruns find it)."""
    return f"threads/{user_id}/{thread_id}/{digest}.jsonl.gz"


def verified_payload(data: bytes, key: str) -> bytes:
    """Decompress an archived thread and check it against the hash in its key."""
    expected = key.rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        payload = gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        raise ArchiveError(f"{key} is corrupt or truncated (not valid gzip)") from None
    if hashlib.sha256(payload).hexdigest() != expected:
        raise ArchiveError(f"{key} is corrupt (sha256 mismatch)")
    return payload


async def _has_streaming(conn: asyncpg.Connection, thread_id: uuid.UUID) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE thread_id = $1 AND status = 'streaming')", thread_id
    )


Step = Callable[[str, uuid.UUID], Awaitable[None] | None]


async def _step(on_step: Step | None, name: str, thread_id: uuid.UUID) -> None:
    """Tests stop the run here ("killed") or act between steps; production passes nothing."""
    if on_step is not None:
        result = on_step(name, thread_id)
        if inspect.isawaitable(result):
            await result


async def archive_thread(conn: asyncpg.Connection, store: Store, thread_id: uuid.UUID,
                         on_step: Step | None = None) -> str | None:
    """Move one thread's messages to the store; its key, or None when it changed meanwhile."""
    user_id = await conn.fetchval("SELECT user_id FROM threads WHERE id = $1", thread_id)
    if user_id is None:  # deleted since it was selected
        return None
    table = await rows.describe(conn, "messages")
    payload, digest, _ = await build_payload(conn, thread_id, table)
    key = object_key(user_id, thread_id, digest)
    await _step(on_step, "before_put", thread_id)
    created = True
    try:
        await store.put(key, gzip.compress(payload, compresslevel=6, mtime=0),
                        content_type="application/gzip", if_none_match=True)
    except AlreadyExists:
        created = False  # an earlier run was killed after its put, or this content was archived before
    await _step(on_step, "after_put", thread_id)
    try:
        verified_payload(await store.get(key), key)
    except (ArchiveError, NotFound) as exc:
        raise ArchiveError(f"{exc}; the thread stays in PostgreSQL (remove the object to archive it)") from None
    await _step(on_step, "before_delete", thread_id)
    async with conn.transaction():
        locked = await conn.fetchrow("SELECT archived_at FROM threads WHERE id = $1 FOR UPDATE", thread_id)
        # The app changes a thread's messages together with its row (current_leaf_id), so with
        # the row locked they hold still: compare them with what was stored, and delete exactly
        # the rows that were compared (by id), never one that arrived since.
        current = await build_payload(conn, thread_id, table) if locked is not None else None
        unchanged = (current is not None and locked["archived_at"] is None and current[1] == digest
                     and not await _has_streaming(conn, thread_id))
        if unchanged:
            await conn.execute("DELETE FROM messages WHERE thread_id = $1 AND id = ANY($2::uuid[])",
                               thread_id, current[2])
            await conn.execute("UPDATE threads SET archived_at = now(), archive_key = $2 WHERE id = $1",
                               thread_id, key)
    if not unchanged:
        if created:  # written by this run and never referenced: no backup can point at it
            await store.delete(key)
        return None
    return key


async def archive_threads(conn: asyncpg.Connection, store: Store, older_than_days: int,
                          on_step: Step | None = None,
                          on_thread: Callable[[Candidate, str | None, str | None], None] | None = None) -> dict:
    """Archive every candidate; errors on one thread leave it in PostgreSQL and go on to the next."""
    await check_schema(conn)
    done = {"archived": 0, "messages": 0, "changed": 0, "failed": 0}
    for candidate in await select_candidates(conn, older_than_days):
        error = None
        try:
            key = await archive_thread(conn, store, candidate.id, on_step)
        except ArchiveError as exc:
            key, error = None, str(exc)
        if error:
            done["failed"] += 1
        elif key:
            done["archived"] += 1
            done["messages"] += candidate.messages
        else:
            done["changed"] += 1
        if on_thread:
            on_thread(candidate, key, error)
    return done


async def rehydrate(conn: asyncpg.Connection, store: Store, user_id: uuid.UUID, thread_id: uuid.UUID) -> bool:
    """Bring an archived thread's messages back into PostgreSQL; False when it was not archived."""
    row = await conn.fetchrow(
        "SELECT archive_key, archived_at FROM threads WHERE id = $1 AND user_id = $2", thread_id, user_id
    )
    if row is None or row["archived_at"] is None or not row["archive_key"]:
        return False
    key = row["archive_key"]
    try:
        payload = verified_payload(await store.get(key), key)
    except NotFound:
        raise ArchiveError(f"the archived copy {key} is missing") from None
    header_line, *lines = payload.decode().splitlines()
    header = json.loads(header_line)
    known = max((m.version for m in db.list_migrations()), default=0)
    if header.get("thread_id") != str(thread_id) or header.get("format", 1) > FORMAT:
        raise ArchiveError(f"{key} does not hold this thread")
    if int(header.get("schema_version", 0)) > known:
        raise ArchiveError(f"{key} was written by a newer chatapp (schema {header['schema_version']} > {known})")
    table = await rows.describe(conn, "messages")
    columns = [c for c in header.get("columns") or table.columns if c in table.columns]
    async with conn.transaction():
        locked = await conn.fetchrow(
            "SELECT archive_key, archived_at FROM threads WHERE id = $1 AND user_id = $2 FOR UPDATE",
            thread_id, user_id,
        )
        if locked is None or locked["archived_at"] is None or locked["archive_key"] != key:
            return False  # restored by a concurrent request
        for start in range(0, len(lines), INSERT_BATCH):
            await rows.insert_rows(conn, table, columns, lines[start:start + INSERT_BATCH])
        # Restoring counts as activity, or tonight's archive run would move it straight back.
        await conn.execute(
            """UPDATE threads SET archived_at = NULL, archive_key = NULL, current_leaf_id = $2, updated_at = now()
               WHERE id = $1""",
            thread_id, uuid.UUID(header["current_leaf_id"]) if header.get("current_leaf_id") else None,
        )
    return True
