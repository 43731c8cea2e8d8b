"""Thread pages from cached articles: the windowed branch query, and a warm cache never shows a
stale message (regenerate, edit, stop) or another session's CSRF token; forms work without JS."""
from __future__ import annotations

import uuid

from bs4 import BeautifulSoup

from actions import CSRF_RE, Actions
from chatapp import articles, chains, chat
from chatapp.ids import uuid7
from chatapp.models import messages
from chatapp.render import render_markdown
from model_server import Reply
from streamtools import wait_status
from test_chat_actions import _finished_exchange

PASSWORD = "correct horse battery"  # the `user` fixture's


async def _page(user, thread_id: str) -> BeautifulSoup:
    response = await user.client.get(f"/threads/{thread_id}")
    assert response.status_code == 200
    return BeautifulSoup(await response.get_data(as_text=True), "html.parser")


async def _entry(app, message_id) -> articles.Cached | None:
    async with app.app_context():
        value = await app.redis.fast.get(chat.fragment_key(uuid.UUID(str(message_id))))
    return articles.parse(value) if value is not None else None


async def _submit(user, form, fields: dict | None = None):
    """Submit a form of the page as a browser without JavaScript does: its action, its inputs."""
    data = {i["name"]: i.get("value", "") for i in form.select("input[name]")}
    data.update({t["name"]: t.get_text() for t in form.select("textarea[name]")})
    data.update(fields or {})
    assert form["method"] == "post" and data.get("csrf_token")
    return await user.client.post(form["action"], form=data)


async def _insert(db, thread_id, parent, role, text, seconds):
    mid = uuid7()
    await db.execute("INSERT INTO messages (id, thread_id, parent_id, role, content, created_at) "
                     "VALUES ($1, $2, $3, $4, $5, now() - make_interval(secs => $6))",
                     mid, thread_id, parent, role, text, float(seconds))
    return mid


async def test_branch_window_is_the_tail_of_the_branch_with_its_siblings(app, user, db):
    thread_id = uuid.UUID(await user.new_thread())
    other_root = await _insert(db, thread_id, None, "user", "another first question", 100)
    parent, chain = None, []
    for i in range(12):
        parent = await _insert(db, thread_id, parent, "user" if i % 2 == 0 else "assistant", f"m{i}", 90 - i)
        chain.append(parent)
        if i in (3, 8):  # a regenerated answer / an edited question beside the branch
            await _insert(db, thread_id, chain[-2], "assistant" if i == 3 else "user", f"alt{i}", 50)
    await db.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", thread_id, parent)
    async with app.db.acquire() as conn:
        full = await messages.select_branch(conn, thread_id, parent)
        assert [m.id for m in full] == chain and other_root in full[0].sibling_ids
        for last in (None, 1, 5, 50):
            for before in (None, chain[7], chain[0]):
                part = await messages.select_branch_window(conn, thread_id, parent, last, before)
                upto = full[:chain.index(before)] if before else full
                expected = upto[-last:] if last else upto
                assert [(m.id, m.content, m.sibling_ids) for m in part.messages] == \
                       [(m.id, m.content, m.sibling_ids) for m in expected]
                assert (part.total, part.upto) == (len(full), len(upto))
                # The same window from the remembered ids of the branch.
                ids, total, upto_count = chains.window(part.chain, last, before)
                assert ids == [m.id for m in expected] and (total, upto_count) == (part.total, part.upto)
                assert await messages.select_shown(conn, thread_id, ids) == expected
        unknown = await messages.select_branch_window(conn, thread_id, parent, 50, uuid7())
        assert chains.window(unknown.chain, 50, uuid7()) == ([], len(full), 0)
        assert unknown.messages == [] and unknown.upto == 0
        assert (await messages.select_branch_window(conn, thread_id, None, 50)).messages == []


async def test_regenerate_after_a_warm_cache_shows_both_versions(app, user, db, model_server):
    thread_id, first = await _finished_exchange(user, db)
    await _page(user, thread_id)
    await _page(user, thread_id)  # warm: the answer's article is cached without "< 1/2 >"
    cached = await _entry(app, first)
    assert cached is not None and cached.stamp and f'id="msg-{first}"' in cached.article
    assert "siblings" not in cached.article
    model_server.script(Reply.text("A second answer."))
    page = await _page(user, thread_id)
    regenerate = page.select_one(f"#msg-{first} form[action$='/regenerate']")
    assert (await _submit(user, regenerate)).status_code == 303  # the cached form works without JS
    second = await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", uuid.UUID(thread_id))
    await wait_status(db, str(second))
    page = await _page(user, thread_id)
    assert page.select_one(f"#msg-{second} .siblings span").get_text() == "2/2"
    previous = page.select_one(f"#msg-{second} .siblings form")
    assert (await _submit(user, previous)).status_code == 303
    page = await _page(user, thread_id)  # the first answer, cached before it had a sibling
    assert page.select_one(f"#msg-{first} .siblings span").get_text() == "1/2"
    assert "You said: question one" in page.select_one(f"#msg-{first} .msg-body").get_text()
    assert "siblings" in (await _entry(app, first)).article  # and the cache holds the new article


async def test_edit_after_a_warm_cache_shows_both_versions(app, user, db, model_server):
    thread_id, answer = await _finished_exchange(user, db, "original question")
    question = await db.fetchval("SELECT id FROM messages WHERE role = 'user'")
    await _page(user, thread_id)
    page = await _page(user, thread_id)
    edit = page.select_one(f"#msg-{question} details.edit form")
    assert edit.select_one("textarea").get_text() == "original question"  # filled in for no-JS edits
    assert (await _submit(user, edit, {"content": "edited question"})).status_code == 303
    new_answer = await db.fetchval("SELECT current_leaf_id FROM threads")
    await wait_status(db, str(new_answer))
    page = await _page(user, thread_id)
    assert page.select_one(".msg-user .user-text").get_text() == "edited question"
    assert page.select_one(".msg-user .siblings span").get_text() == "2/2"
    assert (await _submit(user, page.select_one(".msg-user .siblings form"))).status_code == 303
    page = await _page(user, thread_id)
    assert page.select_one(f"#msg-{question} .siblings span").get_text() == "1/2"
    assert page.select_one(f"#msg-{answer}") is not None


async def test_stop_after_a_warm_cache_shows_the_stopped_answer(app, user, db, model_server):
    thread_id, first = await _finished_exchange(user, db)
    await _page(user, thread_id)
    model_server.script(Reply(chunks=["slow "] * 200, delay=0.05))
    page = await _page(user, thread_id)
    assert (await _submit(user, page.select_one("form.composer"), {"content": "go on"})).status_code == 303
    answer = await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", uuid.UUID(thread_id))
    await wait_status(db, str(answer), statuses=("streaming",))
    page = await _page(user, thread_id)
    assert page.select_one(f"#msg-{answer} [sse-connect]") is not None
    assert await _entry(app, answer) is None  # a streaming answer is never cached
    assert (await _submit(user, page.select_one(f"#msg-{answer} form[action$='/stop']"))).status_code == 303
    assert (await wait_status(db, str(answer)))["status"] == "stopped"
    for _ in range(2):  # rendered, then from the cache
        page = await _page(user, thread_id)
        article = page.select_one(f"#msg-{answer}")
        assert "status-stopped" in article["class"] and article.select_one("[sse-connect]") is None
        assert article.select_one(".msg-status").get_text().startswith("Stopped")
        assert article.select_one("form[action$='/regenerate']") is not None
        assert page.select_one(f"#msg-{first} .msg-body").get_text().strip()
    assert (await _entry(app, answer)).stamp
    # Whatever changes a finished message in PostgreSQL, the cached article follows it.
    await db.execute("UPDATE messages SET status = 'error', error = 'boom' WHERE id = $1", answer)
    article = (await _page(user, thread_id)).select_one(f"#msg-{answer}")
    assert "status-error" in article["class"] and article.select_one(".msg-status").get_text() == "Error: boom"


async def test_cached_articles_carry_each_sessions_own_token(app, user, db, model_server):
    thread_id, answer = await _finished_exchange(user, db)
    await _page(user, thread_id)
    await _page(user, thread_id)
    other = Actions(app.test_client())
    assert (await other.login("ada@example.com", PASSWORD)).status_code == 303
    pages = {}
    for who in (user, other):
        html = await (await who.client.get(f"/threads/{thread_id}")).get_data(as_text=True)
        token = CSRF_RE.search(html).group(1)
        values = {i["value"] for i in BeautifulSoup(html, "html.parser").select("article input[name=csrf_token]")}
        assert values == {token} and "\x00" not in html
        pages[token] = html
    assert len(pages) == 2  # two sessions, two tokens, one cache
    cached = await _entry(app, answer)
    assert cached.article and not any(token in cached.article for token in pages)
    # The first session's form is refused in the other session; the other's own form works.
    mine, theirs = (BeautifulSoup(html, "html.parser").select_one(f"#msg-{answer} form[action$='/regenerate']")
                    for html in pages.values())
    model_server.script(Reply.text("Again."))
    assert (await _submit(other, mine)).status_code == 403
    assert (await _submit(other, theirs)).status_code == 303


async def test_rename_after_a_warm_cache_shows_the_new_title(app, user, db):
    thread_id, _ = await _finished_exchange(user, db)
    await _page(user, thread_id)
    page = await _page(user, thread_id)
    assert (await _submit(user, page.select_one("form[action$='/rename']"), {"title": "Lisbon"})).status_code == 303
    page = await _page(user, thread_id)
    assert page.select_one("h1.thread-title").get_text() == "Lisbon"


async def test_an_entry_holds_the_body_once_and_serves_the_stream_end(app, user, db):
    thread_id, answer = await _finished_exchange(user, db)
    await _page(user, thread_id)
    content = await db.fetchval("SELECT content FROM messages WHERE id = $1", answer)
    entry = await _entry(app, answer)
    assert entry.body == render_markdown(content) and entry.article.count(entry.body) == 1
    # The body is read back out of the article by the stream's final fragment.
    async with app.app_context():
        await app.redis.fast.set(chat.fragment_key(answer), articles.pack(
            entry.stamp, entry.body.replace("You said", "Cached"),
            entry.article.replace("You said", "Cached")).encode())
    stream = await (await user.client.get(f"/messages/{answer}/stream")).get_data(as_text=True)
    assert "event: done" in stream and "Cached: question one" in stream
    assert articles.parse(b"not an entry") is None


async def test_a_remembered_branch_that_no_longer_matches_is_walked_again(app, user, db):
    thread_id, answer = await _finished_exchange(user, db)
    await _page(user, thread_id)
    known = app.extensions["branch_chains"]
    real = known.get(answer)
    question = await db.fetchval("SELECT parent_id FROM messages WHERE id = $1", answer)
    assert real == question.bytes + answer.bytes
    known.put(answer, uuid7().bytes + answer.bytes)  # as if a message of the branch were gone
    page = await _page(user, thread_id)
    assert [a["id"] for a in page.select("article.msg")] == [f"msg-{question}", f"msg-{answer}"]
    assert known.get(answer) == real


def test_remembered_branches_stay_within_their_byte_budget():
    known = chains.Chains(max_bytes=64)
    leaves = [uuid7() for _ in range(3)]
    for leaf in leaves:
        known.put(leaf, leaf.bytes * 2)
    assert known.get(leaves[0]) is None and known.size == 64
    assert known.get(leaves[2]) == leaves[2].bytes * 2
    known.put(uuid7(), b"x" * 80)  # larger than the budget: not kept, nothing evicted for it
    assert known.size == 64 and known.get(leaves[1]) is not None
