"""The streaming core over real HTTP: send, SSE, resume, stop, statuses, regenerate, edit."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from bs4 import BeautifulSoup

from model_server import Reply
from sse_client import connect_sse, read_events
from streamtools import assemble, text_of, wait_status  # noqa: F401  (re-exported for other suites)


async def test_send_streams_answer_and_persists_it(live, web_user, db, model_server):
    model_server.script(Reply.text("Hello there, this is **bold** text.", delay=0.01))
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "Say hello")
    events, _ = await read_events(web_user.client, f"/messages/{answer_id}/stream",
                                  until=lambda e: e.event == "done")
    names = [e.event for e in events]
    assert names[0] == "reset" and names[-1] == "done"
    assert assemble(events) == "Hello there, this is bold text."
    assert 'hx-preserve' in events[-1].data  # the final fragment keeps the streamed body
    row = await wait_status(db, answer_id)
    assert row["status"] == "complete"
    assert row["content"] == "Hello there, this is **bold** text."
    assert row["completion_tokens"] > 0 and not row["usage_estimated"]


async def test_reply_contains_user_message_and_exact_placeholder(live, web_user, model_server):
    thread_id = await web_user.new_thread()
    response = await web_user.post(f"/threads/{thread_id}/messages", {"content": "<b>hi</b> & bye"})
    soup = BeautifulSoup(response.text, "html.parser")
    user_text = soup.select_one(".msg-user .msg-body").get_text()
    assert user_text == "<b>hi</b> & bye"  # shown as text, never as markup
    placeholder = soup.select_one("[sse-connect]")
    answer_id = soup.select(".msg-assistant")[0]["id"].removeprefix("msg-")
    assert placeholder["sse-connect"] == f"/messages/{answer_id}/stream"
    assert placeholder["hx-ext"] == "sse"


async def test_user_message_is_stored_before_the_model_is_called(live, web_user, db, model_server, test_services):
    import concurrent.futures

    import asyncpg

    seen = {}

    def check_then_reply(body):
        async def count():
            conn = await asyncpg.connect(test_services.database_url)
            try:
                return await conn.fetchval("SELECT count(*) FROM messages WHERE role = 'user' AND content = $1",
                                           "remember me")
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            seen["stored"] = pool.submit(asyncio.run, count()).result()
        return Reply.text("ok")

    model_server.script(check_then_reply)
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "remember me")
    await wait_status(db, answer_id)
    assert seen["stored"] == 1


async def test_finished_message_stream_is_one_done_event(live, web_user, db, model_server):
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "echo this")
    await wait_status(db, answer_id)
    events, _ = await read_events(web_user.client, f"/messages/{answer_id}/stream")
    assert [e.event for e in events] == ["done"]
    assert "You said: echo this" in text_of(events[0].data)
    await asyncio.sleep(0.2)
    streamed = [r for r in model_server.matching() if r["json"].get("stream")]
    assert len(streamed) == 1  # a GET never starts a generation (the title call is not streamed)


async def test_stream_headers(live, web_user, db):
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "headers please")
    async with connect_sse(web_user.client, f"/messages/{answer_id}/stream") as stream:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert "content-security-policy" in headers
    await wait_status(db, answer_id)


async def test_other_users_stream_and_controls_are_404(live, web_user, db):
    from live import WebUser

    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "private")
    await wait_status(db, answer_id)
    other = WebUser(live.url)
    try:
        await other.signup("other@example.com")
        assert (await other.client.get(f"/messages/{answer_id}/stream")).status_code == 404
        for action in ("stop", "regenerate", "edit", "switch"):
            response = await other.post(f"/messages/{answer_id}/{action}", {"content": "x"})
            assert response.status_code == 404, action
        assert (await other.post(f"/threads/{thread_id}/messages", {"content": "x"})).status_code == 404
        assert (await other.client.get("/messages/not-an-id/stream")).status_code == 404
    finally:
        await other.close()


@pytest.mark.parametrize(
    ("reply", "status", "kept_text", "error_words"),
    [
        (Reply.text("one two three four", fault="cut", fault_after=2), "interrupted", "one two", "model"),
        (Reply.text("one two three", fault="no_done"), "interrupted", "one two three", "early"),
        (Reply.text("one two three", fault="error_event", fault_after=1), "interrupted", "one", "error"),
        (Reply(fault="status", status=500), "error", "", "error (500)"),
        (Reply(fault="status", status=429), "error", "", "rate-limiting"),
    ],
    ids=["cut", "no-done", "error-event", "http-500", "http-429"],
)
async def test_model_faults_end_in_a_clear_status(live, web_user, db, model_server, reply, status, kept_text, error_words):
    model_server.script(reply)
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "fault please")
    row = await wait_status(db, answer_id)
    assert row["status"] == status
    assert row["content"] == kept_text
    assert error_words in row["error"]
    events, _ = await read_events(web_user.client, f"/messages/{answer_id}/stream")
    label = {"interrupted": "Interrupted", "error": "Error"}[status]
    assert label in text_of(events[-1].data) and "Regenerate" in events[-1].data


async def test_stalled_model_times_out_as_interrupted(live_factory, db, model_server):
    from live import WebUser

    server = live_factory(CHATAPP_MODEL_READ_TIMEOUT=0.5)
    person = WebUser(server.url)
    await person.signup("stall@example.com")
    model_server.script(Reply.text("first second third", fault="stall", fault_after=1))
    thread_id = await person.new_thread()
    answer_id = await person.send(thread_id, "stall")
    row = await wait_status(db, answer_id)
    await person.close()
    assert (row["status"], row["content"]) == ("interrupted", "first")
    assert "too long" in row["error"]


async def test_missing_usage_is_estimated(live, web_user, db, model_server):
    model_server.script(Reply.text("a reply without any usage block at all", usage=False))
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "no usage")
    row = await wait_status(db, answer_id)
    assert row["status"] == "complete" and row["usage_estimated"]
    assert row["completion_tokens"] == (len("a reply without any usage block at all") + 3) // 4


async def test_no_provider_explains_configuration_without_model_call(live_factory, db, model_server):
    from live import WebUser

    server = live_factory(OPENAI_API_KEY=None, OPENAI_BASE_URL=None, CHATAPP_MODELS=["gpt-4o-mini"])
    person = WebUser(server.url)
    await person.signup("nokey@example.com")
    thread_id = await person.new_thread()
    answer_id = await person.send(thread_id, "anyone there?")
    row = await wait_status(db, answer_id)
    await person.close()
    assert row["status"] == "error"
    assert "OPENAI_API_KEY" in row["error"] and "OPENAI_BASE_URL" in row["error"]
    assert model_server.count() == 0


async def test_heartbeats_flow_while_the_model_is_silent(live_factory, db, model_server):
    from live import WebUser

    server = live_factory(CHATAPP_STREAM_HEARTBEAT_SECONDS=0.2)
    person = WebUser(server.url)
    await person.signup("heartbeat@example.com")
    model_server.script(Reply(chunks=["hello", " again"], delay=1.2))
    thread_id = await person.new_thread()
    answer_id = await person.send(thread_id, "wait")
    async with connect_sse(person.client, f"/messages/{answer_id}/stream") as stream:
        async for event in stream:
            if event.event == "done":
                break
        assert len(stream.comments) >= 3  # heartbeat comments while nothing happened
    await person.close()


async def test_first_answer_announces_the_title_on_its_stream(live, web_user, db, model_server):
    model_server.script(Reply.text("Sure thing.", delay=0.05), Reply.text("Packing List Ideas"))
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "help me pack")
    events, _ = await read_events(web_user.client, f"/messages/{answer_id}/stream", until=lambda e: e.event == "done")
    titles = [e for e in events if e.event == "title"]
    assert len(titles) == 1
    soup = BeautifulSoup(titles[0].data, "html.parser")
    swaps = {el["hx-swap-oob"]: el.get_text() for el in soup.find_all(attrs={"hx-swap-oob": True})}
    assert swaps == {f"innerHTML:#thread-{thread_id} > a": "Packing List Ideas",
                     f"innerHTML:#thread-title-{thread_id}": "Packing List Ideas"}
    assert [e.event for e in events].index("title") < [e.event for e in events].index("done")


async def test_thread_page_uses_cached_fragments_and_survives_cache_loss(live, web_user, db, model_server):
    model_server.script(Reply.text("Cached **answer**."))
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "cache me")
    await wait_status(db, answer_id)
    first = await web_user.client.get(f"/threads/{thread_id}")
    assert "<strong>answer</strong>" in first.text
    redis = live.app.redis
    key = redis.key("frag", __import__("chatapp.render", fromlist=["x"]).RENDERER_VERSION, answer_id)
    cached = live.run(lambda: redis.fast.get(key))
    assert cached is not None and b"<strong>answer</strong>" in cached
    # A page served from the cache shows what the cache holds (proves the MGET path is used).
    live.run(lambda: redis.fast.set(key, cached.replace(b"Cached", b"FromCache")))
    assert "FromCache" in (await web_user.client.get(f"/threads/{thread_id}")).text
    # With the fragment gone, the page renders from PostgreSQL again.
    live.run(lambda: redis.fast.delete(key))
    assert "Cached" in (await web_user.client.get(f"/threads/{thread_id}")).text


async def test_fragment_cache_fails_open_when_redis_is_unreachable(app, user, db):
    from chatapp import chat
    from chatapp.cache import RedisStore
    from chatapp.models import messages as messages_model

    thread_id = await user.new_thread()
    async with app.db.acquire() as conn:
        message = await messages_model.insert_message(conn, uuid.UUID(thread_id), None, "assistant", "*still here*")
    real = app.redis
    app.redis = RedisStore("redis://127.0.0.1:1/0", real.prefix)  # nothing listens on port 1
    try:
        async with app.app_context():
            items = await chat.render_messages([message])
        assert "<em>still here</em>" in str(items[0].html)
        assert app.redis.breaker.failures >= 1
    finally:
        await app.redis.close()
        app.redis = real


async def test_final_fragment_forms_carry_the_csrf_token(live, web_user, db, model_server):
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "token please")
    events, _ = await read_events(web_user.client, f"/messages/{answer_id}/stream", until=lambda e: e.event == "done")
    tokens = {i["value"] for i in BeautifulSoup(events[-1].data, "html.parser").select("input[name=csrf_token]")}
    assert tokens == {web_user.token}
