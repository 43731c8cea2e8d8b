"""The one-statement send: what it stores, what it hands the answer, and that an archived
thread takes nothing."""
from __future__ import annotations

import uuid

from chatapp import prompt
from chatapp.models import exchange, messages


async def test_send_stores_question_and_streaming_answer_on_the_branch(user, db):
    thread_id = uuid.UUID(await user.new_thread())
    first = await exchange.send(db, thread_id, "first question", "model-a")
    assert first is not None
    question, answer = first.question, first.answer
    assert (question.role, question.content, question.parent_id) == ("user", "first question", None)
    assert (answer.role, answer.status, answer.parent_id, answer.model) == ("assistant", "streaming", question.id, "model-a")
    second = await exchange.send(db, thread_id, "second", None)
    assert second.question.parent_id == answer.id  # appended to the current branch
    leaf = await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", thread_id)
    assert leaf == second.answer.id


async def test_send_hands_over_the_same_branch_the_answer_would_load(user, db):
    thread_id = uuid.UUID(await user.new_thread())
    first = await exchange.send(db, thread_id, "one", None)
    await db.execute("UPDATE messages SET content = 'reply one', status = 'complete' WHERE id = $1", first.answer.id)
    second = await exchange.send(db, thread_id, "two", None)
    assert second.turns == [("user", "one", "complete"), ("assistant", "reply one", "complete"),
                            ("user", "two", "complete")]
    _, loaded = await prompt.load_for_answer(db, second.answer.id)
    assert [(t.role, t.content, t.status) for t in loaded] == second.turns


async def test_send_to_an_archived_thread_stores_nothing(user, db):
    thread_id = uuid.UUID(await user.new_thread())
    await db.execute("UPDATE threads SET archived_at = now() WHERE id = $1", thread_id)
    assert await exchange.send(db, thread_id, "too late", None) is None
    assert await db.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", thread_id) == 0
    assert await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", thread_id) is None


async def test_send_returns_sibling_ids_like_a_fresh_read(user, db):
    thread_id = uuid.UUID(await user.new_thread())
    user_id = await db.fetchval("SELECT user_id FROM threads WHERE id = $1", thread_id)
    first = await exchange.send(db, thread_id, "first", None)
    # Back to the question: the next send hangs beside the first answer (two children of it).
    await db.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", thread_id, first.question.id)
    beside = await exchange.send(db, thread_id, "beside the answer", None)
    assert beside.question.sibling_ids == [first.answer.id, beside.question.id]  # snapshot's sibling plus itself
    for sent in (beside.question, beside.answer):
        assert sent.sibling_ids == (await messages.select_message(db, user_id, sent.id)).sibling_ids


async def test_a_send_prompts_the_model_with_system_prompt_and_branch(app, user, db, model_server):
    from model_server import Reply
    from streamtools import wait_status

    thread_id = uuid.UUID(await user.new_thread())
    await db.execute("UPDATE threads SET system_prompt = 'Answer in French.' WHERE id = $1", thread_id)
    model_server.script(Reply.text("Un."))
    response = await user.post(f"/threads/{thread_id}/messages", {"content": "one"}, htmx=True)
    assert response.status_code == 200
    first = await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", thread_id)
    await wait_status(db, str(first))
    model_server.script(Reply.text("Deux."))
    await user.post(f"/threads/{thread_id}/messages", {"content": "two"}, htmx=True)
    second = await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", thread_id)
    await wait_status(db, str(second))
    sent = [(m["role"], m["content"]) for m in model_server.last_request()["json"]["messages"]]
    assert sent == [("system", "Answer in French."), ("user", "one"), ("assistant", "Un."), ("user", "two")]
