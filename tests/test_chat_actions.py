"""Send validation and limits, regenerate, edit, branches, titles, the reaper and shutdown."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from bs4 import BeautifulSoup

from chatapp import reaper
from model_server import Reply
from test_streaming import wait_status


async def send(user, thread_id: str, content: str, htmx: bool = True):
    return await user.post(f"/threads/{thread_id}/messages", {"content": content}, htmx=htmx)


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [("", 400, "Type a message first."), ("   \n\t ", 400, "Type a message first."),
     ("x" * 32001, 413, "at most 32,000 characters")],
    ids=["empty", "blank", "too-long"],
)
async def test_bad_messages_are_refused_without_model_call(app, user, model_server, content, status, message):
    thread_id = await user.new_thread()
    response = await send(user, thread_id, content)
    assert response.status_code == status
    assert message in await response.get_data(as_text=True)
    async with app.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages") == 0
    assert model_server.count() == 0


async def test_rate_limit_per_minute_answers_429_without_model_call(app, user, model_server):
    app.config["CHATAPP_RATE_LIMIT_PER_MINUTE"] = 2
    app._runtime_settings = None
    thread_id = await user.new_thread()
    for text in ("one", "two"):
        assert (await send(user, thread_id, text)).status_code == 200
        await model_server.wait_until_async(lambda: model_server.count() >= 1)
    calls = model_server.count()
    response = await send(user, thread_id, "three")
    assert response.status_code == 429
    assert "2 messages a minute" in await response.get_data(as_text=True)
    assert response.headers.get("Retry-After")
    await asyncio.sleep(0.2)
    async with app.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE content = 'three'") == 0
    answers = [r for r in model_server.matching() if r["json"].get("stream")]
    assert len(answers) == 2 and calls >= 1
    assert all(r["json"]["messages"][-1]["content"] != "three" for r in model_server.matching())


async def test_concurrent_generations_are_limited(app, user, model_server):
    app.config["CHATAPP_MAX_CONCURRENT_GENERATIONS"] = 1
    app._runtime_settings = None
    model_server.script(Reply(chunks=["slow "] * 50, delay=0.05))
    thread_id = await user.new_thread()
    assert (await send(user, thread_id, "first")).status_code == 200
    second = await send(user, thread_id, "second")
    assert second.status_code == 429
    assert "in progress" in await second.get_data(as_text=True)


async def test_new_thread_with_content_sends_first_message(app, user, model_server):
    response = await user.post("/threads", {"content": "hello from home"})
    assert response.status_code == 303
    thread_id = response.headers["Location"].rsplit("/", 1)[-1]
    async with app.db.acquire() as conn:
        rows = await conn.fetch("SELECT role, content, status FROM messages WHERE thread_id = $1 ORDER BY created_at",
                                uuid.UUID(thread_id))
    assert [(r["role"], r["content"]) for r in rows] == [("user", "hello from home"), ("assistant", "")]
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    assert 'sse-connect="/messages/' in page or "You said" in page


async def test_thread_page_refreshes_without_js_only_while_streaming(app, user, model_server, db):
    model_server.script(Reply(chunks=["a "] * 20, delay=0.05))
    thread_id = await user.new_thread("stream please")
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    assert '<noscript><meta http-equiv="refresh"' in page
    answer = await db.fetchval("SELECT id FROM messages WHERE role = 'assistant'")
    await wait_status(db, str(answer))
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    assert 'http-equiv="refresh"' not in page and "a a a" in page


async def _finished_exchange(user, db, text="question one"):
    """A thread with one finished exchange, its automatic title settled."""
    thread_id = await user.new_thread(text)
    answer = await db.fetchval("SELECT id FROM messages WHERE role = 'assistant' AND thread_id = $1", uuid.UUID(thread_id))
    await wait_status(db, str(answer))
    for _ in range(100):  # the title is set after the answer's final write
        if await db.fetchval("SELECT title FROM threads WHERE id = $1", uuid.UUID(thread_id)) != "New chat":
            break
        await asyncio.sleep(0.05)
    return thread_id, answer


async def test_regenerate_adds_a_sibling_and_makes_it_current(app, user, db, model_server):
    thread_id, first_answer = await _finished_exchange(user, db)
    model_server.script(Reply.text("A different answer."))
    response = await user.post(f"/messages/{first_answer}/regenerate", htmx=True)
    assert response.status_code == 200
    body = await response.get_data(as_text=True)
    assert "sse-connect" in body and "2/2" in body
    second = await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert second != first_answer
    parents = await db.fetch("SELECT DISTINCT parent_id FROM messages WHERE role = 'assistant'")
    assert len(parents) == 1  # both answers hang under the same question
    await wait_status(db, str(second))
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    assert "A different answer." in page and "You said: question one" not in page
    # Switch back to the first version.
    back = await user.post(f"/messages/{first_answer}/switch")
    assert back.status_code == 303
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    assert "You said: question one" in page and "1/2" in page


async def test_edit_creates_a_branch_and_keeps_the_old_one(app, user, db, model_server):
    thread_id, answer = await _finished_exchange(user, db, "original question")
    question = await db.fetchval("SELECT id FROM messages WHERE role = 'user'")
    response = await user.post(f"/messages/{question}/edit", {"content": "edited question"}, htmx=True)
    assert response.status_code == 200
    soup = BeautifulSoup(await response.get_data(as_text=True), "html.parser")
    assert soup.select_one("#conversation") is not None
    assert "edited question" in soup.get_text() and "original question" not in soup.select_one(".msg-user .msg-body").get_text()
    assert "2/2" in soup.get_text()
    assert await db.fetchval("SELECT count(*) FROM messages WHERE role = 'user'") == 2
    new_answer = await db.fetchval("SELECT current_leaf_id FROM threads")
    await wait_status(db, str(new_answer))
    prompt = model_server.last_request()["json"]["messages"]
    assert [m["content"] for m in prompt if m["role"] == "user"] == ["edited question"]


async def test_edit_and_regenerate_refuse_wrong_roles(app, user, db):
    thread_id, answer = await _finished_exchange(user, db)
    question = await db.fetchval("SELECT id FROM messages WHERE role = 'user'")
    assert (await user.post(f"/messages/{answer}/edit", {"content": "x"})).status_code == 400
    assert (await user.post(f"/messages/{question}/regenerate")).status_code == 400
    assert (await user.post(f"/messages/{question}/stop")).status_code == 400


async def test_prompt_has_system_prompt_and_history(app, user, db, model_server):
    thread_id, _ = await _finished_exchange(user, db, "first turn")
    await user.post(f"/threads/{thread_id}/settings", {"model": "test-model-2", "system_prompt": "Be terse.",
                                                        "temperature": "0.5"})
    await send(user, thread_id, "second turn")
    await model_server.wait_until_async(lambda: model_server.count() >= 3)  # answer, title, answer
    request = [r for r in model_server.matching() if r["json"].get("stream")][-1]["json"]
    assert request["model"] == "test-model-2" and request["temperature"] == 0.5
    assert request["stream_options"] == {"include_usage": True}
    assert [(m["role"], m["content"]) for m in request["messages"]] == [
        ("system", "Be terse."), ("user", "first turn"), ("assistant", "You said: first turn"), ("user", "second turn")]


async def test_first_answer_titles_the_thread(app, user, db, model_server):
    model_server.script(Reply.text("Hello!"), Reply.text("Greeting Exchange"))
    thread_id, _ = await _finished_exchange(user, db, "hi there")
    title = await db.fetchval("SELECT title FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert title == "Greeting Exchange"


async def test_title_falls_back_to_first_words(app, user, db, model_server):
    model_server.script(Reply.text("Hello!"), Reply(fault="status", status=500))
    thread_id, _ = await _finished_exchange(user, db, "plan a weekend trip to the mountains with friends please")
    title = await db.fetchval("SELECT title FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert title.startswith("plan a weekend trip to the mountains with")


async def test_reaper_marks_orphans_interrupted_with_streamed_text(app, user, db):
    thread_id = await user.new_thread()
    orphan = uuid.uuid4()
    await db.execute("INSERT INTO messages (id, thread_id, role, status, created_at) "
                     "VALUES ($1, $2, 'assistant', 'streaming', now() - interval '1 minute')", orphan, uuid.UUID(thread_id))
    key = app.redis.key("gen", orphan)
    await app.redis.fast.xadd(key, {b"t": b"partial "})
    await app.redis.fast.xadd(key, {b"t": b"answer"})
    alive = uuid.uuid4()  # an answer whose instance still holds its lease
    await db.execute("INSERT INTO messages (id, thread_id, role, status, created_at) "
                     "VALUES ($1, $2, 'assistant', 'streaming', now() - interval '1 minute')", alive, uuid.UUID(thread_id))
    await app.redis.fast.set(app.redis.key("lease", alive), b"1", ex=30)
    reaped = await reaper.reap_once(app)
    assert reaped == [orphan]
    row = await db.fetchrow("SELECT status, content FROM messages WHERE id = $1", orphan)
    assert (row["status"], row["content"]) == ("interrupted", "partial answer")
    assert await db.fetchval("SELECT status FROM messages WHERE id = $1", alive) == "streaming"
    entries = await app.redis.fast.xrange(key)
    assert entries[-1][1] == {b"done": b"interrupted"}


async def test_shutdown_marks_running_answers_interrupted(live_factory, db, model_server):
    from live import WebUser

    server = live_factory(BACKGROUND_TASK_SHUTDOWN_TIMEOUT=0.5)
    person = WebUser(server.url)
    await person.signup("sigterm@example.com")
    model_server.script(Reply(chunks=["kept "] * 3 + ["lost "] * 100, delay=0.1))
    thread_id = await person.new_thread()
    answer_id = await person.send(thread_id, "long")
    await model_server.wait_until_async(lambda: model_server.active_streams == 1)
    await asyncio.sleep(0.35)
    await person.close()
    await asyncio.to_thread(server.stop)
    row = await db.fetchrow("SELECT status, content, error FROM messages WHERE id = $1", uuid.UUID(answer_id))
    assert row["status"] == "interrupted"
    assert row["content"].startswith("kept kept kept")
    assert "restarted" in row["error"]


async def test_settings_page_shows_usage_totals_and_backend(app, user, db, model_server):
    model_server.script(Reply.text("four word answer here", prompt_tokens=11, completion_tokens=4))
    await _finished_exchange(user, db, "count me")
    page = await (await user.client.get("/settings")).get_data(as_text=True)
    soup = BeautifulSoup(page, "html.parser")
    cells = {th.get_text(strip=True): td.get_text(strip=True) for th, td in
             ((row.th, row.td) for row in soup.select(".usage-table tr"))}
    assert cells["Messages sent"] == "1" and cells["Answers received"] == "1"
    assert cells["Prompt tokens"] == "11" and cells["Answer tokens"] == "4"
    assert "OpenAI-compatible server at 127.0.0.1" in soup.select_one("#model-backend").get_text()
