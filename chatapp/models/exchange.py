"""A send in one round trip: lock the thread, store the question and its answer, move the leaf.

This is the statement between pressing Send and the model call, so it is one SQL statement
(data-modifying CTEs, atomic on its own) instead of a transaction of six round trips. The
thread row is locked and must not be archived: the archiver may run at the same moment.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from ..ids import uuid7
from .messages import COLUMNS, Message

_SEND_SQL = f"""
WITH RECURSIVE locked AS (
    SELECT id, current_leaf_id FROM threads WHERE id = $1 AND archived_at IS NULL FOR UPDATE
), chain AS (  -- the branch the question extends, for the prompt: no second read before the model call
    SELECT m.id, m.parent_id, m.role, m.content, m.status, 0 AS depth
    FROM messages m JOIN locked l ON m.id = l.current_leaf_id
    UNION ALL
    SELECT m.id, m.parent_id, m.role, m.content, m.status, c.depth + 1
    FROM messages m JOIN chain c ON m.id = c.parent_id
), earlier AS (
    SELECT role, content, status FROM chain ORDER BY depth DESC
), question AS (
    INSERT INTO messages (id, thread_id, parent_id, role, content, status)
    SELECT $2, id, current_leaf_id, 'user', $4, 'complete' FROM locked
    RETURNING {COLUMNS}
), answer AS (
    INSERT INTO messages (id, thread_id, parent_id, role, content, status, model)
    SELECT $3, thread_id, id, 'assistant', '', 'streaming', $5 FROM question
    RETURNING {COLUMNS}
), leaf AS (
    UPDATE threads SET current_leaf_id = $3, updated_at = now()
    WHERE id = (SELECT thread_id FROM answer)
)
SELECT 0 AS position, q.*,
       -- The statement's snapshot does not hold the new rows: the question joins its siblings.
       (CASE WHEN q.parent_id IS NULL
             THEN ARRAY(SELECT s.id FROM messages s WHERE s.thread_id = q.thread_id
                        AND s.parent_id IS NULL ORDER BY s.created_at, s.id)
             ELSE ARRAY(SELECT s.id FROM messages s WHERE s.parent_id = q.parent_id
                        ORDER BY s.created_at, s.id) END) || q.id AS sibling_ids,
       ARRAY(SELECT role FROM earlier) AS turn_roles,
       ARRAY(SELECT content FROM earlier) AS turn_contents,
       ARRAY(SELECT status FROM earlier) AS turn_statuses
FROM question q
UNION ALL SELECT 1, a.*, ARRAY[a.id], NULL::text[], NULL::text[], NULL::text[] FROM answer a
ORDER BY position
"""
_EXTRA = ("position", "turn_roles", "turn_contents", "turn_statuses")


@dataclass
class Sent:
    """A stored exchange: the question, its streaming answer, and the branch up to the question."""

    question: Message
    answer: Message
    turns: list[tuple[str, str, str]]  # (role, content, status) of each message, root first


async def send(conn: asyncpg.Connection, thread_id: uuid.UUID, content: str, model: str | None) -> Sent | None:
    """Append a question and its streaming answer to the current branch; None if archived.

    Both come back with their sibling ids (for "< 2/2 >"), so the reply needs no second read,
    and with the branch the prompt is built from, so the model call needs none either.
    """
    question_id = uuid7()
    answer_id = uuid7()
    rows = await conn.fetch(_SEND_SQL, thread_id, question_id, answer_id, content, model)
    if len(rows) != 2:
        return None
    first = rows[0]
    question, answer = ({k: v for k, v in row.items() if k not in _EXTRA} for row in rows)
    question["sibling_ids"], answer["sibling_ids"] = list(question["sibling_ids"]), list(answer["sibling_ids"])
    turns = list(zip(first["turn_roles"], first["turn_contents"], first["turn_statuses"]))
    turns.append(("user", content, "complete"))
    return Sent(Message(**question), Message(**answer), turns)
