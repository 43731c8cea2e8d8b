"""Long threads open with their newest messages; older ones load on scroll or by a plain link."""
from __future__ import annotations

import re
import uuid

from bs4 import BeautifulSoup

from chatapp.ids import uuid7


async def _long_thread(db, thread_id: str, count: int) -> list[str]:
    """A chain of `count` finished messages (user/assistant alternating); their texts in order."""
    parent, texts = None, []
    for i in range(count):
        mid, role = uuid7(), ("user" if i % 2 == 0 else "assistant")
        text = f"message number {i}"
        await db.execute(
            "INSERT INTO messages (id, thread_id, parent_id, role, content, created_at) "
            "VALUES ($1, $2, $3, $4, $5, now() - make_interval(secs => $6))",
            mid, uuid.UUID(thread_id), parent, role, text, float(count - i))
        parent = mid
        texts.append(text)
    await db.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", uuid.UUID(thread_id), parent)
    return texts


def _shown(html: str) -> list[str]:
    soup = BeautifulSoup(html, "html.parser")
    return [" ".join(body.get_text(" ").split()) for body in soup.select(".msg .msg-body")]


async def test_thread_page_shows_newest_page_and_links_to_earlier(app, user, db):
    thread_id = await user.new_thread()
    texts = await _long_thread(db, thread_id, 120)
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    assert _shown(page) == texts[-50:]
    link = BeautifulSoup(page, "html.parser").select_one(".load-earlier a")
    assert "70 more" in link.get_text()
    assert link["hx-trigger"] == "intersect once, click"
    # With htmx: page after page until the beginning, nothing repeated or missing.
    collected = list(texts[-50:])
    url = link["hx-get"]
    while url:
        fragment = await (await user.client.get(url, headers={"HX-Request": "true"})).get_data(as_text=True)
        collected = _shown(fragment) + collected
        more = BeautifulSoup(fragment, "html.parser").select_one(".load-earlier a")
        url = more["hx-get"] if more else None
    assert collected == texts


async def test_without_js_the_link_shows_a_bigger_window(app, user, db):
    thread_id = await user.new_thread()
    texts = await _long_thread(db, thread_id, 120)
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    href = BeautifulSoup(page, "html.parser").select_one(".load-earlier a")["href"]
    assert re.search(r"[?&]n=100\b", href)
    bigger = await (await user.client.get(href.split("#")[0])).get_data(as_text=True)
    assert _shown(bigger) == texts[-100:]
    everything = await (await user.client.get(f"/threads/{thread_id}?n=500")).get_data(as_text=True)
    assert _shown(everything) == texts and "load-earlier" not in everything


async def test_short_threads_have_no_link_and_bad_input_is_refused(app, user, db):
    thread_id = await user.new_thread()
    await _long_thread(db, thread_id, 6)
    page = await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
    assert "load-earlier" not in page and len(_shown(page)) == 6
    assert (await user.client.get(f"/threads/{thread_id}?n=lots")).status_code == 400
    assert (await user.client.get(f"/threads/{thread_id}/earlier?before=nope")).status_code == 400
    assert (await user.client.get(f"/threads/{uuid7()}/earlier")).status_code == 404
