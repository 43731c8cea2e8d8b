"""Share links: public read-only snapshots, noindex, refresh and revoke by the owner only."""
from __future__ import annotations

import secrets

from bs4 import BeautifulSoup

from chatapp.ids import uuid7
from history_data import BRANCHED, make_thread, user_id


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


async def _share_path(db, thread_id) -> str | None:
    share_id = await db.fetchval("SELECT id FROM shares WHERE thread_id = $1", thread_id)
    return f"/s/{share_id}" if share_id else None


async def test_owner_shares_and_anyone_reads_a_noindex_snapshot(app, user, db):
    me = await user_id(db)
    thread_id, _ = await make_thread(db, me, [
        ("q", None, "user", "<script>alert('x')</script> what is **bold**?"),
        ("a", "q", "assistant", "It looks like **this**. <img src=x onerror=alert(1)>"),
    ], title="Formatting <b>tips</b>")
    response = await user.post(f"/threads/{thread_id}/share")
    assert response.status_code == 303 and response.headers["Location"] == f"/threads/{thread_id}"
    path = await _share_path(db, thread_id)
    assert len(path.removeprefix("/s/")) >= 32  # secrets.token_urlsafe(24): 192 bits
    page = _soup(await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True))
    assert page.select_one(".share-box input.share-url")["value"] == f"http://localhost{path}"
    assert page.select_one(".share-box form[action$='/share/revoke']") is not None

    anonymous = app.test_client()
    shared = await anonymous.get(path)
    assert shared.status_code == 200
    assert shared.headers["X-Robots-Tag"] == "noindex, nofollow" and shared.headers["Cache-Control"] == "no-store"
    soup = _soup(await shared.get_data(as_text=True))
    assert soup.select_one('meta[name=robots]')["content"] == "noindex, nofollow"
    assert soup.select_one("h1").get_text() == "Formatting <b>tips</b>"
    assert soup.select_one(".msg-user .user-text").get_text().startswith("<script>")  # text, not markup
    answer = soup.select_one(".msg-assistant .md")
    assert answer.select_one("strong").get_text() == "this" and answer.find("img", onerror=True) is None
    assert not soup.select("main script") and not soup.select("form") and not soup.select("textarea")
    again = await anonymous.get(path)  # served from the Redis cache the second time, the same
    assert await again.get_data(as_text=True) == await shared.get_data(as_text=True)


async def test_snapshot_is_the_branch_at_share_time_and_refreshing_keeps_the_link(app, user, db):
    me = await user_id(db)
    thread_id, ids = await make_thread(db, me, BRANCHED, title="Eggs")
    await user.post(f"/threads/{thread_id}/share")
    path = await _share_path(db, thread_id)
    text = _soup(await (await user.client.get(path)).get_data(as_text=True)).get_text()
    assert "Simmer it for 7 minutes" in text and "Six minutes" in text and "boiling" not in text  # one branch
    await db.execute("UPDATE messages SET content = 'Changed later' WHERE id = $1", ids["a3"])
    assert "Changed later" not in await (await user.client.get(path)).get_data(as_text=True)
    refreshed = await user.post(f"/threads/{thread_id}/share", htmx=True)
    box = _soup(await refreshed.get_data(as_text=True))
    assert box.select_one(f"#share-box-{thread_id} input.share-url")["value"].endswith(path)
    assert await _share_path(db, thread_id) == path
    assert "Changed later" in await (await user.client.get(path)).get_data(as_text=True)


async def test_revoked_links_answer_404(app, user, db):
    thread_id, _ = await make_thread(db, await user_id(db), BRANCHED)
    await user.post(f"/threads/{thread_id}/share")
    path = await _share_path(db, thread_id)
    reply = await user.post(f"/threads/{thread_id}/share/revoke", htmx=True)
    assert "Create share link" in await reply.get_data(as_text=True)
    assert await db.fetchval("SELECT count(*) FROM shares") == 0
    assert (await app.test_client().get(path)).status_code == 404
    again = await user.post(f"/threads/{thread_id}/share")  # sharing again makes a new link
    assert again.status_code == 303 and await _share_path(db, thread_id) != path


async def test_nothing_to_share_or_an_answer_in_progress_is_400(app, user, db):
    empty = await user.new_thread()
    response = await user.post(f"/threads/{empty}/share")
    assert response.status_code == 400 and "nothing to share" in await response.get_data(as_text=True)
    thread_id, _ = await make_thread(db, await user_id(db), [
        ("q", None, "user", "hello"), ("a", "q", "assistant", "", "streaming")])
    response = await user.post(f"/threads/{thread_id}/share")
    assert response.status_code == 400 and "still being written" in await response.get_data(as_text=True)
    await db.execute("UPDATE messages SET status = 'complete' WHERE thread_id = $1", thread_id)
    await db.execute("UPDATE threads SET archived_at = now(), archive_key = 'k' WHERE id = $1", thread_id)
    response = await user.post(f"/threads/{thread_id}/share")
    assert response.status_code == 400 and "archived" in await response.get_data(as_text=True)
    assert await db.fetchval("SELECT count(*) FROM shares") == 0


async def test_other_users_cannot_share_or_revoke_and_bad_links_are_404(app, client, actions, db):
    await actions.signup("owner@example.com", "password123")
    thread_id, _ = await make_thread(db, await user_id(db, "owner@example.com"), BRANCHED)
    await actions.post(f"/threads/{thread_id}/share")
    path = await _share_path(db, thread_id)
    await actions.post("/logout")
    await actions.signup("intruder@example.com", "password123")
    for bad in (str(thread_id), "not-a-uuid", "1", str(uuid7())):
        for action in ("share", "share/revoke"):
            response = await actions.post(f"/threads/{bad}/{action}")
            assert response.status_code == 404, (bad, action)
    assert await _share_path(db, thread_id) == path  # still shared, same snapshot
    assert await db.fetchval("SELECT count(*) FROM shares") == 1
    for bad in ("x", "../threads", secrets.token_urlsafe(24), path.removeprefix("/s/")[:-1], "%27%20OR%201=1"):
        assert (await client.get(f"/s/{bad}")).status_code == 404, bad
    assert (await client.get(path)).status_code == 200
