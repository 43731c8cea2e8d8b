"""The one-statement send: what it stores, and that an archived thread takes nothing."""
from __future__ import annotations

import uuid

from chatapp.models import exchange


async def test_send_stores_question_and_streaming_answer_on_the_branch(user, db):
    thread_id = uuid.UUID(await user.new_thread())
    first = await exchange.send(db, thread_id, "first question", "model-a")
    assert first is not None
    question, answer = first
    assert (question.role, question.content, question.parent_id) == ("user", "first question", None)
    assert (answer.role, answer.status, answer.parent_id, answer.model) == ("assistant", "streaming", question.id, "model-a")
    second_question, second_answer = await exchange.send(db, thread_id, "second", None)
    assert second_question.parent_id == answer.id  # appended to the current branch
    leaf = await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", thread_id)
    assert leaf == second_answer.id


async def test_send_to_an_archived_thread_stores_nothing(user, db):
    thread_id = uuid.UUID(await user.new_thread())
    await db.execute("UPDATE threads SET archived_at = now() WHERE id = $1", thread_id)
    assert await exchange.send(db, thread_id, "too late", None) is None
    assert await db.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", thread_id) == 0
    assert await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", thread_id) is None


async def test_send_returns_sibling_ids_like_a_fresh_read(user, db):
    from chatapp.models import messages

    thread_id = uuid.UUID(await user.new_thread())
    user_id = await db.fetchval("SELECT user_id FROM threads WHERE id = $1", thread_id)
    question, answer = await exchange.send(db, thread_id, "first", None)
    # Back to the question: the next send hangs beside the first answer (two children of it).
    await db.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", thread_id, question.id)
    beside, its_answer = await exchange.send(db, thread_id, "beside the answer", None)
    assert beside.sibling_ids == [answer.id, beside.id]  # the snapshot's sibling plus itself
    for sent in (beside, its_answer):
        assert sent.sibling_ids == (await messages.select_message(db, user_id, sent.id)).sibling_ids
