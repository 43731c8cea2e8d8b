"""Builds the model prompt from a thread's branch within a token budget."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from . import llm
from .models import messages, threads
from .models.messages import Message


@dataclass
class Turn:
    """One message of the branch before an answer, as the prompt needs it."""

    role: str
    content: str
    status: str


# The answer's thread and the branch before it in one round trip: this runs between the send
# and the model call, on every answer.
_BRANCH_SQL = f"""
WITH RECURSIVE chain AS (
    SELECT id, parent_id, thread_id, role, content, status, 0 AS depth FROM messages WHERE id = $1
    UNION ALL
    SELECT m.id, m.parent_id, m.thread_id, m.role, m.content, m.status, c.depth + 1
    FROM messages m JOIN chain c ON m.id = c.parent_id
), before AS (
    SELECT role, content, status FROM chain WHERE depth > 0 ORDER BY depth DESC
)
SELECT {", ".join("t." + c.strip() for c in threads.COLUMNS.split(","))},
       ARRAY(SELECT role FROM before) AS turn_roles,
       ARRAY(SELECT content FROM before) AS turn_contents,
       ARRAY(SELECT status FROM before) AS turn_statuses
FROM threads t WHERE t.id = (SELECT thread_id FROM chain WHERE depth = 0)
"""
_THREAD_FIELDS = [c.strip() for c in threads.COLUMNS.split(",")]


async def load_for_answer(conn: asyncpg.Connection, answer_id: uuid.UUID) -> tuple[threads.Thread, list[Turn]]:
    """The answer's thread and the branch before it (root first)."""
    row = await conn.fetchrow(_BRANCH_SQL, answer_id)
    if row is None:
        raise LookupError(f"message {answer_id} vanished")
    thread = threads.Thread(**{name: row[name] for name in _THREAD_FIELDS})
    turns = zip(row["turn_roles"], row["turn_contents"], row["turn_statuses"])
    return thread, [Turn(*turn) for turn in turns]


def build(thread: threads.Thread, history: list[Turn] | list[Message], budget_tokens: int) -> list[dict[str, Any]]:
    """System prompt first, then the turns; the oldest turns are dropped to fit the budget."""
    turns = [
        {"role": m.role, "content": m.content}
        for m in history
        if m.role in ("user", "assistant") and m.content and m.status != "error"
    ]
    system = [{"role": "system", "content": thread.system_prompt}] if thread.system_prompt.strip() else []
    used = sum(llm.estimate_tokens(m["content"]) for m in system)
    kept: list[dict[str, Any]] = []
    for turn in reversed(turns):
        cost = llm.estimate_tokens(turn["content"])
        if kept and used + cost > budget_tokens:
            break  # always keep the newest turn, even when it alone exceeds the budget
        kept.append(turn)
        used += cost
    kept.reverse()
    # Some servers reject a conversation that opens with an assistant turn.
    while kept and kept[0]["role"] == "assistant" and len(kept) > 1:
        kept.pop(0)
    return system + kept


def sampling_params(thread: threads.Thread) -> dict[str, Any]:
    """The thread's sampling parameters the API accepts."""
    params: dict[str, Any] = {}
    temperature = thread.params.get("temperature")
    if isinstance(temperature, (int, float)) and 0 <= temperature <= 2:
        params["temperature"] = float(temperature)
    return params
