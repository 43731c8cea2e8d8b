"""Observability: /metrics (Prometheus text format behind a bearer token), request ids, JSON logs."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import uuid

import pytest

from chatapp import logs, reaper
from live import WebUser
from model_server import Reply
from sse_client import connect_sse
from streamtools import wait_status

TOKEN = "scrape-me"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.e+]+|\+Inf|NaN)$')


@pytest.fixture(autouse=True)
def metrics_token(overrides):
    """Apps of this module serve /metrics."""
    overrides["CHATAPP_METRICS_TOKEN"] = TOKEN


def parse(text: str) -> dict[str, float]:
    """Samples by their full name with labels; checks every line against the text format."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not exposition format: {line!r}"
        base = re.sub(r"_(bucket|sum|count)$", "", match.group(1))
        assert match.group(1) in typed or base in typed, f"sample without # TYPE: {line}"
        samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return samples


async def _scrape(client) -> dict[str, float]:
    response = await client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await response.get_data(as_text=True))


async def test_metrics_need_the_token_and_answer_404_without_the_setting(app, client):
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "Bearer" in wrong.headers["WWW-Authenticate"]
    assert (await client.get("/metrics", headers=AUTH)).status_code == 200
    app.config["CHATAPP_METRICS_TOKEN"] = None
    assert (await client.get("/metrics", headers=AUTH)).status_code == 404


async def test_requests_answers_tokens_and_cache_are_counted(app, user, db, model_server):
    model_server.script(Reply.text("counted **words** here", prompt_tokens=7, completion_tokens=3, delay=0.01))
    thread_id = await user.new_thread()
    response = await user.post(f"/threads/{thread_id}/messages", {"content": "count this"})
    assert response.status_code == 303
    answer = await db.fetchval("SELECT id FROM messages WHERE role = 'assistant'")
    await wait_status(db, answer)
    for _ in range(2):  # the first view renders and stores the fragment, the second reads it
        assert (await user.client.get(f"/threads/{thread_id}")).status_code == 200
    await user.client.get("/threads/not-an-id")
    samples = await _scrape(user.client)
    assert samples['chatapp_http_requests_total{route="/threads/<thread_id>/messages",method="POST",status="303"}'] == 1
    assert samples['chatapp_http_requests_total{route="/threads/<thread_id>",method="GET",status="200"}'] == 2
    assert samples['chatapp_http_requests_total{route="/threads/<thread_id>",method="GET",status="404"}'] == 1
    assert samples['chatapp_generations_total{status="complete"}'] == 1
    assert samples["chatapp_time_to_first_token_seconds_count"] == 1
    assert samples['chatapp_time_to_first_token_seconds_bucket{le="+Inf"}'] == 1
    assert samples['chatapp_tokens_total{kind="prompt"}'] == 7
    assert samples['chatapp_tokens_total{kind="completion"}'] == 3
    assert samples["chatapp_fragment_cache_misses_total"] >= 1
    assert samples["chatapp_fragment_cache_hits_total"] >= 1
    assert samples["chatapp_redis_breaker_open"] == 0
    buckets = [v for k, v in samples.items() if k.startswith('chatapp_http_request_duration_seconds_bucket{route="/threads/<thread_id>"')]
    assert buckets == sorted(buckets) and buckets[-1] == 3  # cumulative, +Inf holds every request


async def test_reaper_actions_are_counted(app, user, db):
    thread_id = await user.new_thread()
    orphan = uuid.uuid4()
    await db.execute("INSERT INTO messages (id, thread_id, role, status, created_at) "
                     "VALUES ($1, $2, 'assistant', 'streaming', now() - interval '1 minute')", orphan, uuid.UUID(thread_id))
    assert await reaper.reap_once(app) == [orphan]
    samples = await _scrape(user.client)
    assert samples["chatapp_reaper_runs_total"] == 1
    assert samples["chatapp_reaper_interrupted_total"] == 1


async def test_active_streams_gauge_follows_open_streams(live_factory, model_server, db):
    server = live_factory(CHATAPP_METRICS_TOKEN=TOKEN)
    person = WebUser(server.url)
    await person.signup("gauge@example.com")
    model_server.script(Reply(chunks=["slow "] * 30, delay=0.05))
    thread_id = await person.new_thread()
    answer_id = await person.send(thread_id, "stream slowly")

    async def gauge() -> float:
        response = await person.client.get("/metrics", headers=AUTH)
        return parse(response.text)["chatapp_active_streams"]

    async with connect_sse(person.client, f"/messages/{answer_id}/stream") as stream:
        events = stream.__aiter__()  # held: a dropped iterator would close the connection at once
        await events.__anext__()
        assert await gauge() == 1
        running = parse((await person.client.get("/metrics", headers=AUTH)).text)
        assert running["chatapp_generations_running"] == 1
        await events.aclose()
    await wait_status(db, answer_id)
    for _ in range(50):  # the server notices the closed connection shortly after
        if await gauge() == 0:
            break
        await asyncio.sleep(0.05)
    assert await gauge() == 0
    await person.close()


@pytest.mark.parametrize(("sent", "kept"), [
    ("req-1234abcd", True), ("Root=1-67891233-abcdef012345678912345678", True),
    ("short", False), ("has spaces in it", False), ("x" * 200, False), ("<script>alert(1)</script>", False),
])
async def test_request_id_is_echoed_when_sane_and_generated_otherwise(app, client, sent, kept):
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    echoed = response.headers["X-Request-ID"]
    assert (echoed == sent) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", echoed)


async def test_error_pages_and_json_errors_show_the_request_id(app, user):
    page = await user.client.get("/threads/not-an-id", headers={"X-Request-ID": "trace-0001-error"})
    assert page.status_code == 404
    assert "request trace-0001-error" in await page.get_data(as_text=True)
    fragment = await user.client.get("/threads/not-an-id", headers={"HX-Request": "true", "X-Request-ID": "trace-0002-htmx"})
    assert "trace-0002-htmx" in await fragment.get_data(as_text=True)
    api = await user.client.get("/api/v1/threads", headers={"X-Request-ID": "trace-0003-api"})
    assert api.status_code == 401
    assert (await api.get_json())["error"]["request_id"] == "trace-0003-api"


async def test_json_log_lines_carry_the_request_fields(app, user):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    access = logging.getLogger("chatapp.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)  # pytest leaves the root logger at WARNING
    try:
        await user.client.get("/threads/not-an-id?q=secret", headers={"X-Request-ID": "trace-0004-logs"})
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    entry = next(e for e in entries if e.get("request_id") == "trace-0004-logs")
    assert entry["logger"] == "chatapp.access" and entry["level"] == "INFO"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/threads/not-an-id", 404)
    assert isinstance(entry["duration_ms"], float) and entry["time"].endswith("+00:00")
    assert "secret" not in stream.getvalue()  # query strings (search terms) stay out of logs


def test_text_format_names_the_request():
    record = logging.LogRecord("chatapp.test", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    assert logs.TextFormatter().format(record).endswith("INFO chatapp.test [-]: hello there")
