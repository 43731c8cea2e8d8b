"""Conversations written straight into PostgreSQL: chains of user/assistant messages with
realistic Markdown (headings, lists, code, tables), made fast with COPY.
"""
from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from chatapp.ids import uuid7

TOPICS = ["caching", "indexes", "streams", "retries", "migrations", "sessions", "queues", "backups"]


def question(i: int) -> str:
    """A user message."""
    topic = TOPICS[i % len(TOPICS)]
    return (f"Question {i}: how should I handle {topic} in a small web app? "
            f"We have about {i % 50 + 2} users and PostgreSQL.")


def answer(i: int) -> str:
    """An assistant message in Markdown (~900 characters) that varies with i."""
    topic = TOPICS[i % len(TOPICS)]
    return f"""## {topic.title()}, part {i}

Short answer: **keep it simple** and measure first. Use `{topic}_{i}` only where the profile
shows it matters; see [the docs](https://example.com/{topic}) for details.

- Start with the defaults and write down the numbers.
- Change *one* thing at a time (step {i % 7 + 1}).
- Keep a test that fails when {topic} breaks.

```python
def handle_{topic}(item: int) -> int:
    \"\"\"Example {i}.\"\"\"
    total = 0
    for n in range(item):
        total += n * {i % 9 + 1}
    return total
```

| option | cost | when |
|---|---|---|
| none | 0 | under {i % 100 + 10} requests/s |
| {topic} | low | most apps |

> Measure again after the change.
"""


def short_answer(i: int) -> str:
    """A shorter assistant message (~300 characters) for bulk data."""
    topic = TOPICS[i % len(TOPICS)]
    return (f"For {topic}, **start small**: use the defaults, measure, then change one thing.\n\n"
            f"- step {i % 7 + 1}: write the numbers down\n- keep a test for {topic}\n\n"
            f"```sql\nSELECT count(*) FROM {topic} WHERE id > {i};\n```\n")


async def user_id_for(conn: asyncpg.Connection, email: str) -> uuid.UUID:
    """The id of a signed-up user."""
    return await conn.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", email)


async def insert_thread(conn: asyncpg.Connection, user_id: uuid.UUID, messages: int, *,
                        title: str = "Benchmark thread", short: bool = False) -> uuid.UUID:
    """A thread with a chain of `messages` user/assistant messages; current_leaf_id at the end."""
    thread_id = uuid7()
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=messages)
    rows = []
    parent = None
    for i in range(messages):
        mid = uuid7()
        role = "user" if i % 2 == 0 else "assistant"
        content = question(i) if role == "user" else (short_answer(i) if short else answer(i))
        created = start + dt.timedelta(seconds=i)
        rows.append((mid, thread_id, parent, role, content, "complete",
                     None if role == "user" else "test-model", created,
                     None if role == "user" else created))
        parent = mid
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO threads (id, user_id, title, model) VALUES ($1, $2, $3, 'test-model')",
            thread_id, user_id, title)
        await conn.copy_records_to_table(
            "messages", records=rows,
            columns=["id", "thread_id", "parent_id", "role", "content", "status", "model", "created_at", "finished_at"])
        await conn.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", thread_id, parent)
    return thread_id


async def empty_threads(conn: asyncpg.Connection, email: str, count: int) -> list[str]:
    """`count` empty threads of a user (creating them over HTTP is not what is measured)."""
    user_id = await user_id_for(conn, email)
    ids = [uuid7() for _ in range(count)]
    await conn.executemany(
        "INSERT INTO threads (id, user_id, title, model) VALUES ($1, $2, 'Benchmark', 'test-model')",
        [(tid, user_id) for tid in ids])
    return [str(tid) for tid in ids]
