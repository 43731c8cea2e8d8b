"""Two instances sharing PostgreSQL and Redis behave as one service."""
from __future__ import annotations

import secrets
import threading

import asyncpg

from live import LiveServer, WebUser
from model_server import Reply
from services import _create_database, _drop_database, _with_database
from sse_client import read_events
from streamtools import assemble, wait_status


async def test_two_instances_starting_together_migrate_once(overrides, test_services):
    name = f"chatapp_pair_{secrets.token_hex(4)}"
    await _create_database(test_services.admin_database_url, name)
    url = _with_database(test_services.admin_database_url, name)
    servers = [LiveServer({**overrides, "DATABASE_URL": url}) for _ in range(2)]
    try:
        threads = [threading.Thread(target=s.start) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT version, count(*) AS n FROM schema_migrations GROUP BY version")
        finally:
            await conn.close()
        assert rows and all(r["n"] == 1 for r in rows)
        for server in servers:
            async with WebUser(server.url).client as client:
                assert (await client.get("/readyz")).status_code == 200
    finally:
        for server in servers:
            server.stop()
        await _drop_database(test_services.admin_database_url, name)


async def test_session_and_stream_move_between_instances(live_factory, db, model_server):
    a, b = live_factory(), live_factory()
    on_a = WebUser(a.url)
    await on_a.signup("roaming@example.com")
    on_b = WebUser(b.url, cookies=on_a.client.cookies)
    await on_b.refresh_token("/")  # the session made on A is valid on B
    assert on_b.token == on_a.token
    model_server.script(Reply.text("Streaming from A, read on B, every word.", delay=0.02))
    thread_id = await on_a.new_thread()
    answer_id = await on_a.send(thread_id, "cross over")
    events, _ = await read_events(on_b.client, f"/messages/{answer_id}/stream", until=lambda e: e.event == "done")
    assert assemble(events) == "Streaming from A, read on B, every word."
    assert (await wait_status(db, answer_id))["status"] == "complete"
    page_on_b = await on_b.client.get(f"/threads/{thread_id}")
    assert "every word." in page_on_b.text
    await on_a.close()
    await on_b.close()
