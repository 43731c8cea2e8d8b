"""Messages: a tree per thread (adjacency list); the visible branch ends at current_leaf_id."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from ..ids import parse_id, uuid7

COLUMNS = (
    "id, thread_id, parent_id, role, content, status, model, prompt_tokens, completion_tokens, "
    "usage_estimated, finish_reason, duration_ms, error, created_at, finished_at"
)
FINAL_STATUSES = ("complete", "stopped", "interrupted", "error")


@dataclass
class Message:
    """One turn of a conversation."""

    id: uuid.UUID
    thread_id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str
    content: str
    status: str
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    usage_estimated: bool
    finish_reason: str | None
    duration_ms: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    sibling_ids: list[uuid.UUID] = field(default_factory=list)

    @property
    def sibling_index(self) -> int:
        """1-based position among its siblings (for "< 2/3 >")."""
        return self.sibling_ids.index(self.id) + 1 if self.id in self.sibling_ids else 1

    @property
    def streaming(self) -> bool:
        """True while an answer is still being generated."""
        return self.status == "streaming"


def _siblings(alias: str) -> str:
    """SQL for the ids of a message's siblings, oldest first.

    `parent_id = x` uses the parent index; only roots (parent NULL) look within their thread.
    (`IS NOT DISTINCT FROM` would be shorter but no index serves it: a table scan per row.)
    """
    return f"""(CASE WHEN {alias}.parent_id IS NULL
                THEN ARRAY(SELECT s.id FROM messages s WHERE s.thread_id = {alias}.thread_id
                           AND s.parent_id IS NULL ORDER BY s.created_at, s.id)
                ELSE ARRAY(SELECT s.id FROM messages s WHERE s.parent_id = {alias}.parent_id
                           ORDER BY s.created_at, s.id) END)"""


def _message(row: asyncpg.Record) -> Message:
    data = dict(row)
    data["sibling_ids"] = list(data.get("sibling_ids") or [])
    return Message(**data)


async def insert_message(
    conn: asyncpg.Connection, thread_id: uuid.UUID, parent_id: uuid.UUID | None, role: str,
    content: str, *, status: str = "complete", model: str | None = None,
) -> Message:
    """Insert one message."""
    row = await conn.fetchrow(
        f"""INSERT INTO messages (id, thread_id, parent_id, role, content, status, model)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}""",
        uuid7(), thread_id, parent_id, role, content, status, model,
    )
    return _message(row)


async def select_message(conn: asyncpg.Connection, user_id: uuid.UUID, message_id: str | uuid.UUID) -> Message | None:
    """A message of one of the user's threads; None for anyone else's or malformed ids."""
    mid = parse_id(message_id)
    if mid is None:
        return None
    row = await conn.fetchrow(
        f"""SELECT {', '.join('m.' + c.strip() for c in COLUMNS.split(','))},
                   {_siblings("m")} AS sibling_ids
            FROM messages m JOIN threads t ON t.id = m.thread_id
            WHERE m.id = $1 AND t.user_id = $2""",
        mid, user_id,
    )
    return _message(row) if row else None


async def select_branch(conn: asyncpg.Connection, thread_id: uuid.UUID, leaf_id: uuid.UUID | None) -> list[Message]:
    """The visible branch, root first, with each message's siblings (one query)."""
    if leaf_id is None:
        return []
    rows = await conn.fetch(
        f"""WITH RECURSIVE branch AS (
                SELECT {COLUMNS}, 0 AS depth FROM messages WHERE id = $1 AND thread_id = $2
                UNION ALL
                SELECT {', '.join('p.' + c.strip() for c in COLUMNS.split(','))}, b.depth + 1
                FROM messages p JOIN branch b ON p.id = b.parent_id
            )
            SELECT {COLUMNS},
                   {_siblings("b")} AS sibling_ids
            FROM branch b ORDER BY depth DESC""",
        leaf_id, thread_id,
    )
    return [_message(row) for row in rows]


@dataclass
class BranchSlice:
    """The part of the visible branch a page shows, and how long the branch is around it."""

    messages: list[Message]  # root first
    total: int  # messages of the whole branch
    upto: int  # messages of the branch before `before` (the whole branch without it)
    chain: bytes = b""  # every id of the branch, root first, 16 bytes each


async def select_branch_window(conn: asyncpg.Connection, thread_id: uuid.UUID, leaf_id: uuid.UUID | None,
                               last: int | None, before: uuid.UUID | None = None) -> BranchSlice:
    """The newest `last` messages of the branch (all when None) that come before `before`.

    Only ids are walked up the whole branch; columns and siblings are read for the shown
    messages alone, so a 1,000-message thread costs what its 50 shown messages cost.
    An unknown `before` gives an empty slice.
    """
    if leaf_id is None:
        return BranchSlice([], 0, 0)
    rows = await conn.fetch(
        f"""WITH RECURSIVE walk AS (
                SELECT id, parent_id, 0 AS depth FROM messages WHERE id = $1 AND thread_id = $2
                UNION ALL
                SELECT p.id, p.parent_id, w.depth + 1 FROM messages p JOIN walk w ON p.id = w.parent_id
            ),
            cut AS (SELECT CASE WHEN $3::uuid IS NULL THEN -1
                                ELSE (SELECT depth FROM walk WHERE id = $3) END AS depth),
            counts AS (SELECT count(*) AS total,
                              count(*) FILTER (WHERE w.depth > cut.depth) AS upto
                       FROM walk w, cut),
            shown AS (SELECT w.id, w.depth FROM walk w, cut WHERE w.depth > cut.depth
                      ORDER BY w.depth LIMIT $4)
            SELECT counts.total, counts.upto,
                   (SELECT string_agg(uuid_send(id), ''::bytea ORDER BY depth DESC) FROM walk) AS chain, b.*
            FROM counts LEFT JOIN LATERAL (
                SELECT {', '.join('m.' + c.strip() for c in COLUMNS.split(','))},
                       {_siblings("m")} AS sibling_ids, shown.depth
                FROM shown JOIN messages m ON m.id = shown.id
            ) b ON true
            ORDER BY b.depth DESC""",
        leaf_id, thread_id, before, last,
    )
    if not rows:
        return BranchSlice([], 0, 0)
    total, upto, chain = rows[0]["total"], rows[0]["upto"], rows[0]["chain"] or b""
    shown = []
    for row in rows:
        if row["id"] is not None:  # the LEFT JOIN's one empty row when nothing is shown
            data = dict(row)
            for extra in ("total", "upto", "depth", "chain"):
                del data[extra]
            shown.append(_message(data))
    return BranchSlice(shown, total, upto, chain)


async def select_shown(conn: asyncpg.Connection, thread_id: uuid.UUID, ids: list[uuid.UUID]) -> list[Message]:
    """Messages of a thread by id with their siblings, in the order of `ids` (missing ones left out)."""
    rows = await conn.fetch(
        f"""SELECT {', '.join('m.' + c.strip() for c in COLUMNS.split(','))}, {_siblings("m")} AS sibling_ids
            FROM unnest($2::uuid[]) WITH ORDINALITY AS shown(id, n) JOIN messages m ON m.id = shown.id
            WHERE m.thread_id = $1 ORDER BY shown.n""",
        thread_id, ids,
    )
    return [_message(row) for row in rows]


async def select_newest_leaf(conn: asyncpg.Connection, message_id: uuid.UUID) -> uuid.UUID:
    """Follow the newest child down from a message to a leaf (for switching branches)."""
    return await conn.fetchval(
        """WITH RECURSIVE walk AS (
               SELECT id, 0 AS depth FROM messages WHERE id = $1
               UNION ALL
               SELECT c.id, w.depth + 1 FROM walk w
               CROSS JOIN LATERAL (SELECT id FROM messages WHERE parent_id = w.id
                                   ORDER BY created_at DESC, id DESC LIMIT 1) c
           )
           SELECT id FROM walk ORDER BY depth DESC LIMIT 1""",
        message_id,
    )


async def finish_message(
    conn: asyncpg.Connection, message_id: uuid.UUID, *, content: str, status: str,
    model: str | None = None, prompt_tokens: int | None = None, completion_tokens: int | None = None,
    usage_estimated: bool = False, finish_reason: str | None = None, duration_ms: int | None = None,
    error: str | None = None,
) -> bool:
    """Write an answer's final state in one UPDATE; only the first writer wins (False after)."""
    assert status in FINAL_STATUSES
    result = await conn.execute(
        """UPDATE messages SET content = $2, status = $3, model = coalesce($4, model),
                  prompt_tokens = $5, completion_tokens = $6, usage_estimated = $7,
                  finish_reason = $8, duration_ms = $9, error = $10, finished_at = now()
           WHERE id = $1 AND status = 'streaming'""",
        message_id, content, status, model, prompt_tokens, completion_tokens, usage_estimated,
        finish_reason, duration_ms, error,
    )
    return result == "UPDATE 1"


async def select_streaming(conn: asyncpg.Connection, older_than_seconds: float) -> list[uuid.UUID]:
    """Answers still marked streaming that started more than N seconds ago (for the reaper)."""
    rows = await conn.fetch(
        """SELECT id FROM messages WHERE status = 'streaming'
           AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 500""",
        float(older_than_seconds),
    )
    return [row["id"] for row in rows]


async def count_streaming_for_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    """How many answers of a user are streaming now."""
    return await conn.fetchval(
        """SELECT count(*) FROM messages m JOIN threads t ON t.id = m.thread_id
           WHERE t.user_id = $1 AND m.status = 'streaming'""",
        user_id,
    )
