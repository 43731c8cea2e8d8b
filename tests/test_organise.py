"""Organising threads: date groups, paging by cursor, pins, folders, and their ownership rules."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from bs4 import BeautifulSoup

from chatapp.ids import uuid7
from history_data import make_thread, user_id


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def _list_entries(soup: BeautifulSoup, selector: str = "#thread-list") -> list[str]:
    """Headings as '# Name' and thread titles, in page order."""
    entries = []
    for li in soup.select(f"{selector} > li"):
        if "thread-group" in li.get("class", []):
            entries.append("# " + li.get_text(strip=True))
        elif "thread-item" in li.get("class", []):
            entries.append(li.a.get_text(strip=True))
    return entries


async def test_sidebar_groups_threads_by_date_with_pinned_first(app, user, db):
    me = await user_id(db)
    now = datetime.now(timezone.utc)
    for title, age in [("fresh", timedelta(0)), ("day old", timedelta(days=1)), ("three days", timedelta(days=3)),
                       ("two weeks", timedelta(days=14)), ("ancient", timedelta(days=90)), ("pinned old", timedelta(days=40))]:
        await make_thread(db, me, [], title=title, updated_at=now - age)
    pinned = await db.fetchval("SELECT id FROM threads WHERE title = 'pinned old'")
    assert (await user.post(f"/threads/{pinned}/pin")).status_code == 303
    soup = _soup(await (await user.client.get("/")).get_data(as_text=True))
    assert _list_entries(soup) == [
        "# Pinned", "pinned old", "# Today", "fresh", "# Yesterday", "day old", "# Previous 7 days", "three days",
        "# Previous 30 days", "two weeks", "# Older", "ancient",
    ]
    assert soup.select_one("#thread-list .thread-more") is None  # everything fits on one page


async def test_thread_list_loads_more_pages_with_htmx_and_plain_links(app, user, db):
    me = await user_id(db)
    await db.execute(
        """INSERT INTO threads (id, user_id, title, updated_at)
           SELECT gen_random_uuid(), $1, 'T' || i, now() - i * interval '1 minute' FROM generate_series(1, 120) i""",
        me,
    )
    soup = _soup(await (await user.client.get("/")).get_data(as_text=True))
    first = _list_entries(soup)
    assert first[0] == "# Today" and len(first) == 51
    more = soup.select_one("#thread-list li.thread-more")
    assert more["hx-trigger"] == "intersect once" and more["hx-swap"] == "outerHTML"
    assert more.a["href"] == more["hx-get"] and "before=" in more["hx-get"]

    seen = first[1:]
    url = more["hx-get"]
    while url:
        fragment = await user.client.get(url, headers={"HX-Request": "true"})
        assert fragment.status_code == 200
        page = _soup(await fragment.get_data(as_text=True))
        assert page.find("html") is None
        # The group continues from the previous page: no second "Today" heading.
        assert not page.select("li.thread-group")
        seen += [li.a.get_text(strip=True) for li in page.select("li.thread-item")]
        nxt = page.select_one("li.thread-more")
        url = nxt["hx-get"] if nxt else None
    assert seen == [f"T{i}" for i in range(1, 121)]

    # Without JavaScript the same link is a whole page with the next threads.
    plain = await user.client.get(more.a["href"])
    plain_soup = _soup(await plain.get_data(as_text=True))
    assert plain_soup.find("html") is not None
    titles = [li.a.get_text(strip=True) for li in plain_soup.select("main .thread-list li.thread-item")]
    assert titles == [f"T{i}" for i in range(51, 101)]
    assert plain_soup.select_one("main li.thread-more a")["href"].startswith("/threads?before=")


async def test_broken_page_cursor_is_400(app, user):
    for bad in ("nonsense", "123_not-a-uuid", f"-5_{uuid7()}", f"{'9' * 30}_{uuid7()}"):
        response = await user.client.get(f"/threads?before={bad}")
        assert response.status_code == 400, bad
        assert "page link is broken" in await response.get_data(as_text=True)


async def test_pin_toggles_and_htmx_gets_the_new_list_and_button(app, user, db):
    thread_id = await user.new_thread()
    assert (await user.post(f"/threads/{thread_id}/pin")).status_code == 303
    assert await db.fetchval("SELECT pinned FROM threads WHERE id = $1", uuid.UUID(thread_id)) is True
    page = _soup(await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True))
    assert page.select_one(f"#pin-{thread_id} button").get_text(strip=True) == "Unpin"
    reply = await user.post(f"/threads/{thread_id}/pin", htmx=True)
    soup = _soup(await reply.get_data(as_text=True))
    assert soup.select_one("nav#thread-nav") is not None
    button = soup.select_one(f"form#pin-{thread_id}[hx-swap-oob] button")
    assert button.get_text(strip=True) == "Pin" and button["aria-pressed"] == "false"
    assert await db.fetchval("SELECT pinned FROM threads WHERE id = $1", uuid.UUID(thread_id)) is False


async def test_folders_create_rename_move_and_delete(app, user, db):
    thread_id = await user.new_thread()
    assert (await user.post("/folders", {"name": "  Work  "})).status_code == 303
    folder_id = await db.fetchval("SELECT id FROM folders WHERE name = 'Work'")
    duplicate = await user.post("/folders", {"name": "work"})
    assert duplicate.status_code == 400 and "already have a folder named" in await duplicate.get_data(as_text=True)
    blank = await user.post("/folders", {"name": "   "})
    assert blank.status_code == 400 and "Give the folder a name." in await blank.get_data(as_text=True)
    assert (await user.post("/folders", {"name": "x" * 101})).status_code == 400
    assert await db.fetchval("SELECT count(*) FROM folders") == 1

    assert (await user.post(f"/threads/{thread_id}/folder", {"folder_id": str(folder_id)})).status_code == 303
    assert await db.fetchval("SELECT folder_id FROM threads WHERE id = $1", uuid.UUID(thread_id)) == folder_id
    home = _soup(await (await user.client.get("/")).get_data(as_text=True))
    assert [a.get_text() for a in home.select(".folder-list a")] == ["Work"]
    assert home.select_one(".folder-list .count").get_text() == "1"
    assert _list_entries(home) == ["# Today", "New chat"]  # a folder does not hide its threads
    listing = _soup(await (await user.client.get(f"/folders/{folder_id}")).get_data(as_text=True))
    assert [li.a.get_text() for li in listing.select("main li.thread-item")] == ["New chat"]
    thread_page = _soup(await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True))
    assert thread_page.select_one("select[name=folder_id] option[selected]")["value"] == str(folder_id)

    assert (await user.post(f"/folders/{folder_id}/rename", {"name": "Projects"})).status_code == 303
    assert await db.fetchval("SELECT name FROM folders WHERE id = $1", folder_id) == "Projects"
    assert (await user.post(f"/threads/{thread_id}/folder", {"folder_id": ""})).status_code == 303
    assert await db.fetchval("SELECT folder_id FROM threads WHERE id = $1", uuid.UUID(thread_id)) is None
    await user.post(f"/threads/{thread_id}/folder", {"folder_id": str(folder_id)})
    assert (await user.post(f"/folders/{folder_id}/delete")).status_code == 303
    assert await db.fetchval("SELECT count(*) FROM folders") == 0
    row = await db.fetchrow("SELECT title, folder_id FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert row["title"] == "New chat" and row["folder_id"] is None  # the thread stays


async def test_other_users_threads_and_folders_are_404_and_unchanged(app, client, actions, db):
    await actions.signup("owner@example.com", "password123")
    thread_id = await actions.new_thread()
    await actions.post("/folders", {"name": "Private"})
    folder_id = await db.fetchval("SELECT id FROM folders")
    await actions.post("/logout")
    await actions.signup("intruder@example.com", "password123")
    own_thread = await actions.new_thread()
    attempts = [
        ("POST", f"/threads/{thread_id}/pin", {}),
        ("POST", f"/threads/{thread_id}/folder", {"folder_id": ""}),
        ("POST", f"/threads/{own_thread}/folder", {"folder_id": str(folder_id)}),  # someone else's folder
        ("POST", f"/folders/{folder_id}/rename", {"name": "Mine"}),
        ("POST", f"/folders/{folder_id}/delete", {}),
        ("GET", f"/folders/{folder_id}", None),
        ("GET", f"/threads?folder={folder_id}", None),
    ]
    for bad in ("not-a-uuid", "1", str(uuid7())):
        attempts += [("POST", f"/threads/{bad}/pin", {}), ("GET", f"/folders/{bad}", None),
                     ("POST", f"/folders/{bad}/rename", {"name": "x"}), ("POST", f"/folders/{bad}/delete", {})]
    for method, path, form in attempts:
        response = await (actions.post(path, form) if method == "POST" else client.get(path))
        assert response.status_code == 404, (method, path)
    owner = await db.fetchrow("SELECT pinned, folder_id FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert owner["pinned"] is False and owner["folder_id"] is None
    assert await db.fetchval("SELECT name FROM folders WHERE id = $1", folder_id) == "Private"
    assert await db.fetchval("SELECT folder_id FROM threads WHERE id = $1", uuid.UUID(own_thread)) is None
