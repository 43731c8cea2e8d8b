"""Archived threads in the browser: marked in the list, "Restore" with and without htmx, 409, 404."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from bs4 import BeautifulSoup

from chatapp import archive
from chatapp.storage import archive_store
from s3 import overrides, target  # noqa: F401  (fixtures: every test runs on a folder and on S3)
from test_streaming import wait_status

LOCAL = pytest.mark.parametrize("target", ["local"], indirect=True)  # what does not depend on the store


async def _archived_thread(app, user, db) -> tuple[str, list]:
    """A thread with a finished exchange, archived; its id and its messages as they were."""
    thread_id = await user.new_thread("Remember the blue door")
    answer = await db.fetchval("SELECT id FROM messages WHERE role = 'assistant' AND thread_id = $1",
                               uuid.UUID(thread_id))
    await wait_status(db, str(answer))
    for _ in range(100):  # the automatic title is written just after the answer
        if await db.fetchval("SELECT title FROM threads WHERE id = $1", uuid.UUID(thread_id)) != "New chat":
            break
        await asyncio.sleep(0.05)
    before = await db.fetch("SELECT * FROM messages WHERE thread_id = $1 ORDER BY id", uuid.UUID(thread_id))
    async with archive_store(app.config) as store:
        async with app.db.acquire() as conn:
            assert (await archive.archive_threads(conn, store, 0))["archived"] == 1
    return thread_id, before


async def _wait_restored(db, thread_id: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await db.fetchval("SELECT archived_at FROM threads WHERE id = $1", uuid.UUID(thread_id)) is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the thread was not restored")


def _soup(body: str) -> BeautifulSoup:
    return BeautifulSoup(body, "html.parser")


@LOCAL
async def test_archived_thread_is_marked_and_offers_restore_instead_of_a_composer(target, app, user, db):
    thread_id, _ = await _archived_thread(app, user, db)
    home = _soup(await (await user.client.get("/")).get_data(as_text=True))
    assert "(archived)" in home.select_one(f"#thread-{thread_id}").get_text()
    page = _soup(await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True))
    form = page.select_one("#restore-status form")
    assert form["action"] == f"/threads/{thread_id}/restore" and form["method"] == "post"
    assert form["hx-post"] == f"/threads/{thread_id}/restore" and form.select_one("[name=csrf_token]")
    assert "Restore" in form.get_text() and "Archived" in page.get_text()
    assert page.select_one("#conversation") is None and page.select_one("textarea[name=content]") is None


@LOCAL
async def test_sending_to_an_archived_thread_answers_409(target, app, user, db):
    thread_id, _ = await _archived_thread(app, user, db)
    for htmx in (False, True):
        response = await user.post(f"/threads/{thread_id}/messages", {"content": "hello?"}, htmx=htmx)
        assert response.status_code == 409
        assert "This conversation is archived. Restore it" in await response.get_data(as_text=True)
    assert await db.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", uuid.UUID(thread_id)) == 0


async def test_restore_without_javascript_redirects_back_and_shows_the_conversation(target, app, user, db):
    thread_id, before = await _archived_thread(app, user, db)
    leaf = await db.fetchval("SELECT archive_key FROM threads WHERE id = $1", uuid.UUID(thread_id))
    response = await user.post(f"/threads/{thread_id}/restore")
    assert response.status_code == 303 and response.headers["Location"] == f"/threads/{thread_id}"
    await _wait_restored(db, thread_id)
    page = _soup(await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True))
    assert "Remember the blue door" in page.select_one("#conversation").get_text()
    assert page.select_one("textarea[name=content]") is not None
    after = await db.fetch("SELECT * FROM messages WHERE thread_id = $1 ORDER BY id", uuid.UUID(thread_id))
    assert [dict(r) for r in after] == [dict(r) for r in before]  # every column, exactly
    row = await db.fetchrow("SELECT current_leaf_id, archive_key FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert row["current_leaf_id"] == before[-1]["id"] and row["archive_key"] is None
    assert leaf in target.keys("threads/")  # kept: backups made while archived still point at it
    reply = await user.post(f"/threads/{thread_id}/messages", {"content": "and now?"}, htmx=True)
    assert reply.status_code == 200


async def test_restore_with_htmx_polls_a_self_replacing_fragment_then_shows_the_page(target, app, user, db):
    thread_id, _ = await _archived_thread(app, user, db)
    started = await user.post(f"/threads/{thread_id}/restore", htmx=True)
    assert started.status_code == 200
    fragment = _soup(await started.get_data(as_text=True)).select_one("#restore-status")
    assert fragment["hx-get"] == f"/threads/{thread_id}/restore-status"
    assert fragment["hx-trigger"] == "load delay:1s" and fragment["hx-swap"] == "outerHTML"
    assert "Restoring" in fragment.get_text()
    for _ in range(200):
        status = await user.client.get(f"/threads/{thread_id}/restore-status", headers={"HX-Request": "true"})
        assert status.status_code == 200
        if "HX-Location" in status.headers:
            break
        assert _soup(await status.get_data(as_text=True)).select_one("#restore-status[hx-get]") is not None
        await asyncio.sleep(0.05)
    assert status.headers["HX-Location"] == f"/threads/{thread_id}"
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    assert "Remember the blue door" in page and "restore-status" not in page
    # Without htmx the status route just sends the browser to the thread.
    plain = await user.client.get(f"/threads/{thread_id}/restore-status")
    assert plain.status_code == 303 and plain.headers["Location"] == f"/threads/{thread_id}"


async def test_a_damaged_archive_is_refused_and_nothing_changes(target, app, user, db):
    thread_id, _ = await _archived_thread(app, user, db)
    key = await db.fetchval("SELECT archive_key FROM threads WHERE id = $1", uuid.UUID(thread_id))
    intact = target.read(key)
    target.write(key, intact[:-12])  # truncated
    await user.post(f"/threads/{thread_id}/restore", htmx=True)
    for _ in range(200):
        status = await user.client.get(f"/threads/{thread_id}/restore-status", headers={"HX-Request": "true"})
        body = _soup(await status.get_data(as_text=True))
        if body.select_one(".restore-error"):
            break
        await asyncio.sleep(0.05)
    assert "damaged or missing, so nothing was restored" in body.select_one(".restore-error").get_text()
    assert body.select_one("#restore-status form button").get_text() == "Restore"  # try again
    assert body.select_one("#restore-status")["class"] == ["restore-status"]  # no longer polling
    row = await db.fetchrow("SELECT archived_at, archive_key FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert row["archived_at"] is not None and row["archive_key"] == key
    assert await db.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", uuid.UUID(thread_id)) == 0
    # Once an administrator puts the object back, the same button works.
    target.write(key, intact)
    again = await user.post(f"/threads/{thread_id}/restore", htmx=True)
    assert "Restoring" in await again.get_data(as_text=True)
    await _wait_restored(db, thread_id)
    assert await db.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", uuid.UUID(thread_id)) == 2


@LOCAL
async def test_another_users_or_a_malformed_id_is_404(target, app, user, db):
    thread_id, _ = await _archived_thread(app, user, db)
    from actions import Actions

    stranger = Actions(app.test_client())
    await stranger.signup("mallory@example.com", "password123")
    for path in (thread_id, "not-a-uuid", str(uuid.uuid4())):
        assert (await stranger.client.get(f"/threads/{path}")).status_code == 404
        assert (await stranger.post(f"/threads/{path}/restore")).status_code == 404
        assert (await stranger.client.get(f"/threads/{path}/restore-status")).status_code == 404
    assert await db.fetchval("SELECT archived_at FROM threads WHERE id = $1", uuid.UUID(thread_id)) is not None
