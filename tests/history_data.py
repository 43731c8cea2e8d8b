"""Build users' history straight in PostgreSQL, fast (no model calls), for history-feature tests."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from chatapp.ids import uuid7


async def user_id(db, email: str = "ada@example.com") -> uuid.UUID:
    """The id of a signed-up user."""
    return await db.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", email)


async def make_thread(db, owner: uuid.UUID, messages: list[tuple], *, title: str = "A chat",
                      leaf: str | None = None, updated_at: datetime | None = None) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """A thread with a message tree: messages are (key, parent key or None, role, content[, status]).

    The leaf (default: the last message) ends the visible branch. Messages are a second apart,
    in list order. Returns the thread id and the ids by key.
    """
    thread_id = uuid7()
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    ids = {m[0]: uuid7() for m in messages}
    async with db.transaction():
        await db.execute(
            "INSERT INTO threads (id, user_id, title, updated_at) VALUES ($1, $2, $3, $4)",
            thread_id, owner, title, updated_at or datetime.now(timezone.utc),
        )
        for i, (key, parent, role, content, *rest) in enumerate(messages):
            await db.execute(
                """INSERT INTO messages (id, thread_id, parent_id, role, content, status, model, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                ids[key], thread_id, ids[parent] if parent else None, role, content,
                rest[0] if rest else "complete", "test-model" if role == "assistant" else None,
                start + timedelta(seconds=i),
            )
        if messages:
            await db.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1",
                             thread_id, ids[leaf or messages[-1][0]])
    return thread_id, ids


BRANCHED = [
    ("q1", None, "user", "How do I boil an egg?"),
    ("a1", "q1", "assistant", "Put it in **boiling** water for 9 minutes."),
    ("a2", "q1", "assistant", "Simmer it for 7 minutes, then cool it in ice water."),
    ("q2", "a2", "user", "And a soft one?"),
    ("a3", "q2", "assistant", "Six minutes gives a jammy yolk."),
]
