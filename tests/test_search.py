"""Search: own messages only, safe highlighted snippets, as-you-type fragments, paging, hostile input."""
from __future__ import annotations

from bs4 import BeautifulSoup

from chatapp.models.search import START, STOP, highlight
from history_data import BRANCHED, make_thread, user_id


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


async def _search(user, q: str, **params) -> BeautifulSoup:
    response = await user.client.get("/search", query_string={"q": q, **params})
    assert response.status_code == 200
    return _soup(await response.get_data(as_text=True))


async def test_search_finds_own_messages_with_marked_snippets_and_links(app, user, db):
    me = await user_id(db)
    thread_id, ids = await make_thread(db, me, [
        ("q", None, "user", "Which harbour cities are worth a visit in Portugal?"),
        ("a", "q", "assistant", "Porto and Lisbon are both harbour cities with great food."),
    ], title="Portugal trip")
    await make_thread(db, me, [("x", None, "user", "Nothing relevant here")], title="Other")
    soup = await _search(user, "harbour")
    hits = soup.select("main li.search-hit")
    assert len(hits) == 2
    links = {hit.select_one("a.search-hit-link")["href"] for hit in hits}
    assert links == {f"/threads/{thread_id}#msg-{ids['q']}", f"/threads/{thread_id}#msg-{ids['a']}"}
    assert all(hit.select_one(".search-hit-title").get_text() == "Portugal trip" for hit in hits)
    assert [m.get_text() for m in soup.select("main .search-hit-snippet mark")] == ["harbour", "harbour"]
    assert soup.select_one("main input[name=q]")["value"] == "harbour"  # the plain form keeps the query


async def test_search_never_shows_other_users_messages(app, client, actions, db):
    await actions.signup("other@example.com", "password123")
    other = await user_id(db, "other@example.com")
    await make_thread(db, other, [("s", None, "user", "my secret zanzibar plan")], title="Secret")
    await actions.post("/logout")
    await actions.signup("me@example.com", "password123")
    me = await user_id(db, "me@example.com")
    await make_thread(db, me, [("m", None, "user", "zanzibar is an island")], title="Mine")
    soup = await _search(actions, "zanzibar")
    assert [h.select_one(".search-hit-title").get_text() for h in soup.select("main li.search-hit")] == ["Mine"]
    assert "secret" not in soup.get_text().lower()


async def test_hostile_queries_are_harmless_and_snippets_are_escaped(app, user, db):
    me = await user_id(db)
    await make_thread(db, me, [
        ("q", None, "user", f"<img src=x onerror=alert(1)> payload {START}open & <b>bold</b> {STOP}{STOP} payload"),
    ], title="<script>alert('title')</script>")
    for query in ['"unbalanced', "a & | ! :* ( )", "payload OR -payload", "<script>", "'; DROP TABLE messages; --",
                  "\\", "*:*", "or", "-"]:
        response = await user.client.get("/search", query_string={"q": query})
        assert response.status_code == 200, query
    soup = await _search(user, "payload")
    hit = soup.select_one("main li.search-hit")
    snippet = hit.select_one(".search-hit-snippet")
    assert snippet.find("img") is None and snippet.find("b") is None and not soup.select("main script")
    assert [m.get_text() for m in snippet.select("mark")] == ["payload", "payload"]
    assert "alert('title')" in hit.select_one(".search-hit-title").get_text()  # shown as text
    assert await db.fetchval("SELECT count(*) FROM messages") == 1


def test_highlight_escapes_and_balances_markers():
    assert highlight(f"a {START}<x>{STOP} b") == "a <mark>&lt;x&gt;</mark> b"
    assert highlight(f"{STOP}{START}{START}one{STOP}{STOP} {START}two") == "<mark>one</mark> <mark>two</mark>"


async def test_as_you_type_gets_a_fragment_and_empty_query_shows_nothing(app, user, db):
    me = await user_id(db)
    await make_thread(db, me, [("q", None, "user", f"kettle number {i}") for i in range(1)], title="Tea")
    headers = {"HX-Request": "true", "HX-Target": "search-results"}
    fragment = await user.client.get("/search?q=kettle", headers=headers)
    body = await fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in body and "kettle" in body
    assert "HX-Target" in fragment.headers["Vary"]
    empty = await user.client.get("/search?q=+++", headers=headers)
    assert (await empty.get_data(as_text=True)).strip() == ""
    page = await _search(user, "")
    assert page.select("li.search-hit") == [] and page.select_one(".search-empty") is None
    nothing = await _search(user, "teapot")
    assert "No messages match" in nothing.select_one(".search-empty").get_text()
    # The sidebar of every page carries the as-you-type box.
    box = _soup(await (await user.client.get("/")).get_data(as_text=True)).select_one("input#sidebar-q")
    assert box["hx-get"] == "/search" and box["hx-target"] == "#search-results"
    assert box["hx-trigger"] == "input changed delay:300ms, search" and box["name"] == "q"


async def test_older_versions_offer_to_switch_to_them(app, user, db):
    me = await user_id(db)
    thread_id, ids = await make_thread(db, me, BRANCHED, title="Eggs")
    soup = await _search(user, "minutes")
    by_link = {h.select_one("a.search-hit-link")["href"]: h for h in soup.select("main li.search-hit")}
    assert set(by_link) == {f"/threads/{thread_id}#msg-{ids['a2']}", f"/threads/{thread_id}#msg-{ids['a3']}",
                            f"/threads/{thread_id}"}  # a1 is an older version: no anchor on this branch
    old = by_link[f"/threads/{thread_id}"].select_one("form.search-hit-switch")
    assert old["action"] == f"/messages/{ids['a1']}/switch#msg-{ids['a1']}"
    switched = await user.client.post(old["action"].split("#")[0], form={
        "csrf_token": old.select_one("input[name=csrf_token]")["value"]})
    assert switched.status_code == 303
    assert await db.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", thread_id) == ids["a1"]


async def test_results_are_paged_and_bad_parameters_are_400(app, user, db):
    me = await user_id(db)
    await make_thread(db, me, [(f"m{i}", None if i == 0 else f"m{i - 1}", "user", f"walrus fact {i}") for i in range(55)])
    first = await _search(user, "walrus")
    assert len(first.select("main li.search-hit")) == 50
    more = first.select_one("main .search-more a")["href"]
    assert "page=2" in more
    second = _soup(await (await user.client.get(more)).get_data(as_text=True))
    assert len(second.select("main li.search-hit")) == 5 and second.select_one("main .search-more") is None
    sidebar = await user.client.get("/search?q=walrus", headers={"HX-Request": "true", "HX-Target": "search-results"})
    compact = _soup(await sidebar.get_data(as_text=True))
    assert len(compact.select("li.search-hit")) == 8
    assert compact.select_one(".search-more a")["href"] == "/search?q=walrus"
    for params in ({"q": "walrus", "page": "0"}, {"q": "walrus", "page": "x"}, {"q": "walrus", "page": "21"},
                   {"q": "w" * 501}):
        response = await user.client.get("/search", query_string=params)
        assert response.status_code == 400, params
