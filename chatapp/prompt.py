"""Builds the model prompt from a thread's branch within a token budget."""
from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from . import llm
from .models import messages, threads
from .models.messages import Message


async def load_for_answer(conn: asyncpg.Connection, answer_id: uuid.UUID) -> tuple[Message, threads.Thread, list[Message]]:
    """The answer, its thread and the branch before it (root first)."""
    row = await conn.fetchrow("SELECT thread_id, parent_id FROM messages WHERE id = $1", answer_id)
    if row is None:
        raise LookupError(f"message {answer_id} vanished")
    thread_row = await conn.fetchrow(f"SELECT {threads.COLUMNS} FROM threads WHERE id = $1", row["thread_id"])
    thread = threads.Thread(**thread_row)
    branch = await messages.select_branch(conn, thread.id, answer_id)
    return branch[-1], thread, branch[:-1]


def build(thread: threads.Thread, history: list[Message], budget_tokens: int) -> list[dict[str, Any]]:
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
