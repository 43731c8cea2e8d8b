"""Threads: create, open, rename, delete; fragments for htmx; ownership."""
from __future__ import annotations

import uuid

from bs4 import BeautifulSoup

from chatapp.ids import uuid7


async def test_home_lists_threads_newest_first(app, user):
    first = await user.new_thread()
    second = await user.new_thread()
    await user.post(f"/threads/{first}/rename", {"title": "Older one"})
    await user.post(f"/threads/{second}/rename", {"title": "Newer one"})
    async with app.db.acquire() as conn:  # make the order unambiguous
        await conn.execute("UPDATE threads SET updated_at = now() - interval '1 hour' WHERE id = $1", uuid.UUID(first))
    soup = BeautifulSoup(await (await user.client.get("/")).get_data(as_text=True), "html.parser")
    titles = [a.get_text(strip=True) for a in soup.select("#thread-list a")]
    assert titles == ["Newer one", "Older one"]
    assert soup.select_one("textarea[name=content]") is not None


async def test_create_thread_lands_on_its_page(app, user):
    response = await user.post("/threads")
    assert response.status_code == 303
    page = await user.client.get(response.headers["Location"])
    assert page.status_code == 200
    assert "New chat" in await page.get_data(as_text=True)


async def test_create_thread_with_htmx_answers_hx_location(app, user):
    response = await user.post("/threads", htmx=True)
    assert response.status_code == 200
    assert response.headers["HX-Location"].startswith("/threads/")


async def test_thread_page_sends_vary_and_fragment_for_htmx(app, user):
    thread_id = await user.new_thread()
    full = await user.client.get(f"/threads/{thread_id}")
    assert "HX-Request" in full.headers["Vary"]
    assert "<html" in await full.get_data(as_text=True)
    fragment = await user.client.get(f"/threads/{thread_id}", headers={"HX-Request": "true", "HX-Target": "main"})
    body = await fragment.get_data(as_text=True)
    assert "<html" not in body and 'id="conversation"' in body
    assert "HX-Request" in fragment.headers["Vary"]


async def test_rename_with_and_without_htmx(app, user):
    thread_id = await user.new_thread()
    plain = await user.post(f"/threads/{thread_id}/rename", {"title": "  Trip   to Lisbon "})
    assert plain.status_code == 303
    async with app.db.acquire() as conn:
        assert await conn.fetchval("SELECT title FROM threads WHERE id = $1", uuid.UUID(thread_id)) == "Trip to Lisbon"
    fragment = await user.post(f"/threads/{thread_id}/rename", {"title": "Porto"}, htmx=True)
    body = await fragment.get_data(as_text=True)
    assert f'id="thread-{thread_id}"' in body and "Porto" in body and "<html" not in body


async def test_rename_rejects_blank_title(app, user):
    thread_id = await user.new_thread()
    response = await user.post(f"/threads/{thread_id}/rename", {"title": "   "})
    assert response.status_code == 400
    assert "Give the thread a title." in await response.get_data(as_text=True)


async def test_delete_removes_thread_and_messages(app, user, model_server):
    thread_id = await user.new_thread("hello there")
    response = await user.post(f"/threads/{thread_id}/delete")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    async with app.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM threads") == 0
        assert await conn.fetchval("SELECT count(*) FROM messages") == 0
    assert (await user.client.get(f"/threads/{thread_id}")).status_code == 404


async def test_other_users_thread_is_404(app, client, actions):
    await actions.signup("owner@example.com", "password123")
    thread_id = await actions.new_thread()
    await actions.post("/logout")
    await actions.signup("intruder@example.com", "password123")
    assert (await client.get(f"/threads/{thread_id}")).status_code == 404
    for path in ("rename", "delete", "settings"):
        response = await actions.post(f"/threads/{thread_id}/{path}", {"title": "mine now"})
        assert response.status_code == 404, path
    async with app.db.acquire() as conn:
        assert await conn.fetchval("SELECT title FROM threads WHERE id = $1", uuid.UUID(thread_id)) == "New chat"


async def test_malformed_and_unknown_ids_are_404(app, user):
    for bad in ("not-a-uuid", "1", "%27%20OR%201=1", str(uuid7())):
        response = await user.client.get(f"/threads/{bad}")
        assert response.status_code == 404, bad
        assert "Not found" in await response.get_data(as_text=True)


async def test_thread_settings_are_saved(app, user, model_server):
    thread_id = await user.new_thread()
    response = await user.post(f"/threads/{thread_id}/settings",
                               {"model": "test-model-2", "system_prompt": "Be brief.", "temperature": "0.3"})
    assert response.status_code == 303
    async with app.db.acquire() as conn:
        row = await conn.fetchrow("SELECT model, system_prompt, params FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert (row["model"], row["system_prompt"], row["params"]) == ("test-model-2", "Be brief.", {"temperature": 0.3})
    bad = await user.post(f"/threads/{thread_id}/settings", {"temperature": "7"})
    assert bad.status_code == 400
