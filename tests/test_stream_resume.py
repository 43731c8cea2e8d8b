"""Stop, resume and multiple instances: nothing generated is ever lost."""
from __future__ import annotations

import asyncio
import uuid


from chatapp import render
from live import WebUser
from model_server import Reply
from sse_client import Event, connect_sse, parse_events, read_events
from streamtools import assemble, text_of, wait_status

LONG = [f"Word{i} " for i in range(60)]


async def test_stop_keeps_partial_text_and_closes_upstream(live, web_user, db, model_server):
    model_server.script(Reply(chunks=LONG, delay=0.05))
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "talk slowly")
    await model_server.wait_until_async(lambda: model_server.active_streams == 1)
    await asyncio.sleep(0.3)
    response = await web_user.post(f"/messages/{answer_id}/stop")
    assert response.status_code == 204
    row = await wait_status(db, answer_id)
    assert row["status"] == "stopped"
    assert 0 < len(row["content"]) < len("".join(LONG))
    assert "".join(LONG).startswith(row["content"])
    await model_server.wait_until_async(lambda: model_server.active_streams == 0, timeout=5)
    events, _ = await read_events(web_user.client, f"/messages/{answer_id}/stream")
    assert "Stopped" in text_of(events[-1].data)


async def test_stop_sent_to_another_instance(live_factory, db, model_server):
    a, b = live_factory(), live_factory()
    on_a = WebUser(a.url)
    await on_a.signup("multi@example.com")
    on_b = WebUser(b.url, cookies=on_a.client.cookies)  # the same session works on B
    await on_b.refresh_token("/")
    model_server.script(Reply(chunks=LONG, delay=0.05))
    thread_id = await on_a.new_thread()
    answer_id = await on_a.send(thread_id, "slow on A")
    await model_server.wait_until_async(lambda: model_server.active_streams == 1)
    assert (await on_b.post(f"/messages/{answer_id}/stop")).status_code == 204
    row = await wait_status(db, answer_id)
    assert row["status"] == "stopped"
    await model_server.wait_until_async(lambda: model_server.active_streams == 0, timeout=5)
    await on_a.close()
    await on_b.close()


async def test_generation_on_a_streams_to_reader_on_b_with_resume(live_factory, db, model_server):
    a, b = live_factory(), live_factory()
    on_a = WebUser(a.url)
    await on_a.signup("reader@example.com")
    on_b = WebUser(b.url, cookies=on_a.client.cookies)
    text = "".join(f"Paragraph {i} has some words in it.\n\n" for i in range(12))
    model_server.script(Reply.text(text, delay=0.02))
    thread_id = await on_a.new_thread()
    answer_id = await on_a.send(thread_id, "many paragraphs")
    # Read a few events from B, drop the connection, resume on B from the last id.
    first = []
    async with connect_sse(on_b.client, f"/messages/{answer_id}/stream") as stream:
        async for event in stream:
            first.append(event)
            if sum(e.event == "block" for e in first) >= 3:
                break
        last_id = stream.last_event_id
    rest, _ = await read_events(on_b.client, f"/messages/{answer_id}/stream", last_event_id=last_id)
    assert rest[-1].event == "done"
    assert "reset" not in [e.event for e in rest]
    shown = assemble(first + rest[:-1])
    assert shown == text_of(render.render_markdown(text))
    assert (await wait_status(db, answer_id))["content"] == text
    await on_a.close()
    await on_b.close()


async def test_resume_from_every_event_id_yields_exactly_the_missing_text(live, web_user, db, model_server):
    """Feed a stream by hand, then reconnect from each entry id: the page always ends right."""
    thread_id = await web_user.new_thread()
    thread = uuid.UUID(thread_id)
    answer_id = uuid.uuid4()
    await db.execute("INSERT INTO messages (id, thread_id, role, content, status) VALUES ($1, $2, 'assistant', '', 'streaming')",
                     answer_id, thread)
    await db.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", thread, answer_id)
    pieces = ["# Title\n", "\nFirst para", "graph goes on.\n\n", "- item one\n", "- item two\n\n",
              "```python\nprint(1)\n", "```\n\nLast words", " here."]
    redis = live.app.redis
    key = redis.key("gen", answer_id)
    ids = [live.run(lambda p=p: redis.fast.xadd(key, {b"t": p.encode()})) for p in pieces]
    full = "".join(pieces)
    expected = text_of(render.render_markdown(full))
    # The complete view a fresh reader gets:
    async with connect_sse(web_user.client, f"/messages/{answer_id}/stream") as stream:
        fresh = []
        async for event in stream:
            fresh.append(event)
            if event.event in ("tail", "block", "reset"):  # each carries the tail
                break
    assert fresh[0].event == "reset" and assemble(fresh) == expected
    for cut, entry_id in enumerate(ids):
        # What a reader had at `entry_id`, then what it gets after reconnecting from it.
        before_text = "".join(pieces[: cut + 1])
        renderer = render.IncrementalRenderer()
        had_blocks, _ = renderer.update(before_text)
        async with connect_sse(web_user.client, f"/messages/{answer_id}/stream",
                               last_event_id=entry_id.decode()) as stream:
            after = []
            async for event in stream:
                after.append(event)
                if event.event in ("tail", "block", "reset"):  # each carries the tail
                    break
        assert "reset" not in [e.event for e in after]
        prior = [Event("block", f'<div class="blk" hx-disable>{b}</div>', "") for b in had_blocks]
        assert assemble(prior + after) == expected, f"resume from entry {cut}"
    live.run(lambda: redis.fast.xadd(key, {b"done": b"complete"}))
    await db.execute("UPDATE messages SET status = 'complete', content = $2 WHERE id = $1", answer_id, full)


async def test_sse_bytes_stay_under_three_times_the_final_html(live, web_user, db, model_server):
    blocks = []
    for i in range(10):
        blocks += [f"## Section {i}\n\n", f"Some prose for section {i}, long enough to read like an answer "
                   "with several clauses and a [link](https://example.com).\n\n",
                   f"- point {i}.1\n- point {i}.2 with `code`\n\n",
                   f"```python\ndef f{i}(x):\n    return x * {i}\n```\n\n"]
    text = "".join(blocks)
    model_server.script(Reply.text(text, delay=0.004))
    thread_id = await web_user.new_thread()
    answer_id = await web_user.send(thread_id, "long answer")
    raw = []
    async with connect_sse(web_user.client, f"/messages/{answer_id}/stream") as stream:
        async for chunk in stream.response.aiter_bytes():
            raw.append(chunk)
    total = sum(len(chunk) for chunk in raw)
    events = parse_events(b"".join(raw))
    # Streamed in many steps (blocks, or edits of the open part), not in one event at the end.
    assert events[-1].event == "done" and sum(e.event in ("block", "delta") for e in events) >= 10
    assert assemble(events[:-1]) == text_of(render.render_markdown(text))
    final_html = render.render_markdown(text)
    row = await wait_status(db, answer_id)
    assert row["content"] == text
    assert total < 3 * len(final_html.encode()), (total, len(final_html))
