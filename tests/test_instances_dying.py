"""Instances dying: kill -9 mid-answer, and SIGTERM with many open streams.

The dying instance is a real Hypercorn process started from deploy/hypercorn.toml (see
tests/appprocess.py); the survivor is an in-process live server sharing PostgreSQL and Redis.
Bounds are measured and printed (run with -s); tests wait generously and assert behaviour.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from appprocess import AppProcess, hypercorn_settings
from chatapp import render
from live import WebUser
from model_server import Reply, last_user_message
from sse_client import connect_sse
from streamtools import assemble, page_text, text_of, wait_status

pytestmark = pytest.mark.slow

LEASE, REAPER_INTERVAL = 2, 1.0
QUART_BACKGROUND_GRACE = 5.0  # Quart's BACKGROUND_TASK_SHUTDOWN_TIMEOUT default


@pytest.fixture
def app_process(overrides, tmp_path):
    """Start app instances as processes (settings = the test's overrides + extras, as env vars)."""
    started: list[AppProcess] = []

    def start(**extra) -> AppProcess:
        process = AppProcess({**overrides, **extra}, tmp_path / f"app-{len(started)}.log")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


async def _follow(client, answer_id: str, last_event_id: str | None = None):
    """Read one answer's stream until it ends; (events, last id, ended at, got done)."""
    events = []
    async with connect_sse(client, f"/messages/{answer_id}/stream", last_event_id=last_event_id) as stream:
        try:
            async for event in stream:
                events.append(event)
                if event.event == "done":
                    break
        except Exception:  # the connection was cut (kill -9): what arrived still counts
            pass
        return events, stream.last_event_id, time.monotonic(), bool(events and events[-1].event == "done")


async def test_sigkilled_instance_answer_is_reaped_interrupted_with_partial_text(
        live_factory, app_process, db, model_server, record_property):
    survivor = live_factory(CHATAPP_LEASE_SECONDS=LEASE, CHATAPP_REAPER_INTERVAL_SECONDS=REAPER_INTERVAL)
    doomed = app_process(CHATAPP_LEASE_SECONDS=LEASE, CHATAPP_REAPER_INTERVAL_SECONDS=REAPER_INTERVAL)
    person = WebUser(doomed.url)
    await person.signup("doomed@example.com")
    reader = WebUser(survivor.url, cookies=person.client.cookies)
    words = [f"word{i} " for i in range(400)]
    model_server.script(Reply(chunks=words, delay=0.02))
    thread_id = await person.new_thread()
    answer_id = await person.send(thread_id, "a long answer please")
    following = asyncio.create_task(_follow(reader.client, answer_id))  # a reader on the survivor
    await model_server.wait_until_async(lambda: model_server.active_streams == 1)
    await asyncio.sleep(1.0)
    killed_at = time.monotonic()
    doomed.kill()
    row = await wait_status(db, answer_id, timeout=LEASE + REAPER_INTERVAL + 30)
    reaped_after = time.monotonic() - killed_at
    assert row["status"] == "interrupted"
    assert row["content"] and "".join(words).startswith(row["content"])
    assert "stopped before it finished" in row["error"]
    events, _, _, done = await asyncio.wait_for(following, 30)
    assert done and "Interrupted" in text_of(events[-1].data)
    # The reader on the other instance saw exactly the text that was kept.
    assert assemble(events) == text_of(render.render_markdown(row["content"]))
    await model_server.wait_until_async(lambda: model_server.active_streams == 0, timeout=10)
    record_property("sigkill_reaped_after_seconds", round(reaped_after, 2))
    print(f"\nSIGKILLed answer marked interrupted after {reaped_after:.2f} s "
          f"(lease {LEASE} s + reaper interval {REAPER_INTERVAL} s; {len(row['content'])} characters kept)")
    await person.close()
    await reader.close()


async def test_sigterm_with_open_streams_ends_them_promptly_and_finishes_every_answer(
        live_factory, app_process, db, model_server, record_property):
    streams = 20
    limits = {"CHATAPP_MAX_CONCURRENT_GENERATIONS": 100, "CHATAPP_RATE_LIMIT_PER_MINUTE": 1000}
    survivor = live_factory(**limits)
    stopping = app_process(CHATAPP_LOG_FORMAT="json", **limits)
    person = WebUser(stopping.url)
    await person.signup("sigterm@example.com")
    elsewhere = WebUser(survivor.url, cookies=person.client.cookies)
    # Even answers are long (cut by the shutdown), odd ones end within the shutdown grace.
    scripts = [Reply(chunks=[f"w{i}.{k} " for k in range(400 if i % 2 == 0 else 50)], delay=0.05)
               for i in range(streams)]
    by_question = {f"question {i}": reply for i, reply in enumerate(scripts)}
    # Keyed by question, not queued: automatic titles (not streamed) also ask the model server.
    model_server.script(*(lambda body: by_question.get(last_user_message(body), Reply.text("A Title"))
                          for _ in range(streams * 2)))
    answers = []
    for i in range(streams):
        thread_id = await person.new_thread()
        answers.append(await person.send(thread_id, f"question {i}"))
    async def browser(answer_id: str):
        """Follow on the stopping instance; when that stream ends, resume at once elsewhere."""
        events, last_id, ended, done = await _follow(person.client, answer_id)
        if not done:  # EventSource reconnects, through the load balancer, to a live instance
            more, _, _, done = await _follow(elsewhere.client, answer_id, last_event_id=last_id or None)
            events = events + more
        return events, done, ended

    readers = [asyncio.create_task(browser(a)) for a in answers]
    await model_server.wait_for_requests_async(streams, timeout=30)
    await asyncio.sleep(0.3)
    signalled_at = time.monotonic()
    stopping.terminate()
    results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    streams_ended_after = max(ended for _, _, ended in results) - signalled_at
    settings = hypercorn_settings()
    grace = settings["graceful_timeout"] + QUART_BACKGROUND_GRACE
    code = await asyncio.to_thread(stopping.wait, grace + 15)
    exited_after = time.monotonic() - signalled_at
    assert code == 0, stopping.output()[-3000:]

    statuses = {}
    for answer_id, script, (events, done, _) in zip(answers, scripts, results):
        row = await db.fetchrow("SELECT status, content, error FROM messages WHERE id = $1", uuid.UUID(answer_id))
        assert row["status"] in ("complete", "interrupted"), row["status"]
        if row["status"] == "complete":
            assert row["content"] == script.content
        else:
            assert script.content.startswith(row["content"]) and "restarted" in row["error"]
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        assert done
        assert page_text(events) == text_of(render.render_markdown(row["content"]))

    numbers = {"streams": streams, "streams_ended_after_s": round(streams_ended_after, 2),
               "process_exited_after_s": round(exited_after, 2), "grace_s": grace, "statuses": statuses}
    record_property("sigterm", numbers)
    print(f"\nSIGTERM with open streams: {numbers}")
    lines = [json.loads(line) for line in stopping.output().splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "chatapp.access"]
    assert access and all({"time", "level", "message", "request_id", "method", "path", "status", "duration_ms"}
                          <= set(entry) for entry in access)
    assert any("server shutting down" in entry["message"] for entry in lines)
    # Streams end when the shutdown starts, not when Hypercorn's graceful_timeout runs out.
    assert streams_ended_after < settings["graceful_timeout"]
    await person.close()
    await elsewhere.close()
