"""The JSON API (/api/v1): threads, messages, search; ownership, errors, limits; SSE over HTTP."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from apihelp import ApiClient, api_client, bearer, create_token
from chatapp import create_app
from actions import Actions
from model_server import Reply
from sse_client import connect_sse, read_events
from test_streaming import wait_status

MALFORMED = "not-a-uuid"


@pytest.fixture
async def api(app, user) -> ApiClient:
    """The signed-up user's API client (bearer token, no cookie)."""
    return await api_client(app, user)


async def _other_users_ids(app, api: ApiClient) -> dict[str, str]:
    """A thread and an answer of another user, made through the API."""
    other = Actions(app.test_client())
    await other.signup("mallory@example.com", "password123")
    other_api = await api_client(app, other, "mallory")
    thread = await (await other_api.post("/api/v1/threads", {"title": "Mallory's"})).get_json()
    sent = await (await other_api.post(f"/api/v1/threads/{thread['id']}/messages",
                                       {"content": "secret plan", "stream": False})).get_json()
    return {"thread": thread["id"], "message": sent["answer"]["id"]}


def _error_shape(body: dict, status: int) -> str:
    assert set(body) == {"error"} and {"status", "title", "message"} <= set(body["error"]), body
    assert body["error"]["status"] == status
    return body["error"]["message"]


# ---- threads ---------------------------------------------------------------------------------

async def test_thread_create_get_rename_delete(api, db):
    created = await api.post("/api/v1/threads", {"title": "  Trip   plans ", "system_prompt": "Be brief."})
    assert created.status_code == 201
    thread = await created.get_json()
    assert thread["title"] == "Trip plans" and thread["system_prompt"] == "Be brief."
    assert thread["model"] == "test-model" and thread["messages"] == []
    assert created.headers["Location"] == f"/api/v1/threads/{thread['id']}"
    assert "T" in thread["created_at"] and thread["created_at"].endswith("+00:00")  # ISO 8601, not an HTTP date

    renamed = await api.patch(f"/api/v1/threads/{thread['id']}", {"title": "Lisbon", "model": "test-model-2"})
    assert renamed.status_code == 200
    body = await renamed.get_json()
    assert body["title"] == "Lisbon" and body["model"] == "test-model-2" and body["system_prompt"] == "Be brief."
    row = await db.fetchrow("SELECT title, model FROM threads WHERE id = $1", uuid.UUID(thread["id"]))
    assert dict(row) == {"title": "Lisbon", "model": "test-model-2"}

    fetched = await (await api.get(f"/api/v1/threads/{thread['id']}")).get_json()
    assert fetched["title"] == "Lisbon"

    deleted = await api.delete(f"/api/v1/threads/{thread['id']}")
    assert deleted.status_code == 204
    assert (await api.get(f"/api/v1/threads/{thread['id']}")).status_code == 404
    assert await db.fetchval("SELECT count(*) FROM threads") == 0


async def test_thread_list_pages_with_a_cursor_cover_every_thread_once(api, db):
    ids = [(await (await api.post("/api/v1/threads", {"title": f"t{i}"})).get_json())["id"] for i in range(5)]
    # Two threads share one timestamp: the (updated_at, id) cursor must still split them exactly.
    await db.execute("UPDATE threads SET updated_at = '2030-01-01T00:00:00Z' WHERE id = ANY($1::uuid[])",
                     [uuid.UUID(i) for i in ids[1:3]])
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await api.get("/api/v1/threads", query_string=query)).get_json()
        seen += [t["id"] for t in page["threads"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5 and pages == 3
    assert set(seen[:2]) == set(ids[1:3])  # the most recently active first


async def test_bad_cursor_is_400(api):
    for cursor in ["garbage", "bm90IGEgY3Vyc29y", "MjAzMC0wMS0wMXxub3QtYS11dWlk"]:
        response = await api.get("/api/v1/threads", query_string={"cursor": cursor})
        assert response.status_code == 400, cursor
        assert "cursor" in _error_shape(await response.get_json(), 400)


async def test_new_thread_takes_the_users_saved_defaults(app, user, api):
    await user.post("/settings/defaults", {"default_model": "test-model-2", "system_prompt": "Answer in French."})
    thread = await (await api.post("/api/v1/threads", {})).get_json()
    assert thread["model"] == "test-model-2" and thread["system_prompt"] == "Answer in French."


async def test_unknown_model_and_blank_title_are_400_and_change_nothing(api, db):
    thread = await (await api.post("/api/v1/threads", {"title": "Keep"})).get_json()
    for body in ({"model": "no-such-model"}, {"title": "   "}):
        response = await api.patch(f"/api/v1/threads/{thread['id']}", body)
        assert response.status_code == 400, body
        _error_shape(await response.get_json(), 400)
    row = await db.fetchrow("SELECT title, model FROM threads WHERE id = $1", uuid.UUID(thread["id"]))
    assert dict(row) == {"title": "Keep", "model": "test-model"}


MALFORMED_BODIES = [
    (b"{not json", "application/json", 400),
    (b'{"content": 5}', "application/json", 422),
    (b'{"content": "hi", "unknown": 1}', "application/json", 422),
    (b'{"stream": false}', "application/json", 422),
    (b'{"content": "a\\u0000b"}', "application/json", 422),
    (b'{"content": "\\ud800"}', "application/json", 422),
    (b'[1, 2]', "application/json", 422),
    (b"content=hi", "application/x-www-form-urlencoded", 422),
]


async def test_malformed_bodies_are_4xx_with_the_error_shape(api, db):
    thread = await (await api.post("/api/v1/threads", {})).get_json()
    for body, content_type, status in MALFORMED_BODIES:
        response = await api.call("POST", f"/api/v1/threads/{thread['id']}/messages", data=body,
                                   headers={"Content-Type": content_type})
        assert response.status_code == status, body
        _error_shape(await response.get_json(), status)
    assert await db.fetchval("SELECT count(*) FROM messages") == 0


# ---- ownership -------------------------------------------------------------------------------

ID_ROUTES = [
    ("GET", "/api/v1/threads/{thread}"), ("PATCH", "/api/v1/threads/{thread}"),
    ("DELETE", "/api/v1/threads/{thread}"), ("GET", "/api/v1/threads/{thread}/messages"),
    ("POST", "/api/v1/threads/{thread}/messages"), ("GET", "/api/v1/messages/{message}"),
    ("GET", "/api/v1/messages/{message}/stream"), ("POST", "/api/v1/messages/{message}/stop"),
]


async def test_other_users_and_malformed_ids_are_404(app, api, db):
    theirs = await _other_users_ids(app, api)
    for method, template in ID_ROUTES:
        body = {"content": "x"} if template.endswith("/messages") and method == "POST" else (
            {"title": "x"} if method == "PATCH" else None)
        for ids in (theirs, {"thread": MALFORMED, "message": MALFORMED},
                    {"thread": str(uuid.uuid4()), "message": str(uuid.uuid4())}):
            response = await api.call(method, template.format(**ids), body)
            assert response.status_code == 404, (method, template, ids)
            _error_shape(await response.get_json(), 404)
    # Nothing of the other user's changed.
    assert await db.fetchval("SELECT title FROM threads WHERE id = $1", uuid.UUID(theirs["thread"])) == "Mallory's"
    assert await db.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", uuid.UUID(theirs["thread"])) == 2
    assert await db.fetchval("SELECT status FROM messages WHERE id = $1", uuid.UUID(theirs["message"])) == "complete"


async def test_listing_and_search_never_show_another_users_rows(app, api):
    await _other_users_ids(app, api)
    assert (await (await api.get("/api/v1/threads")).get_json())["threads"] == []
    assert (await (await api.get("/api/v1/search", query_string={"q": "secret"})).get_json())["results"] == []


# ---- messages --------------------------------------------------------------------------------

async def test_send_and_wait_returns_the_finished_answer(api, db, model_server):
    model_server.script(Reply.text("Forty-two, **of course**."))
    thread = await (await api.post("/api/v1/threads", {})).get_json()
    response = await api.post(f"/api/v1/threads/{thread['id']}/messages",
                              {"content": "What is the answer?", "stream": False})
    assert response.status_code == 200
    body = await response.get_json()
    assert body["user_message"]["content"] == "What is the answer?" and body["user_message"]["role"] == "user"
    answer = body["answer"]
    assert answer["status"] == "complete" and answer["content"] == "Forty-two, **of course**."
    assert answer["parent_id"] == body["user_message"]["id"] and answer["completion_tokens"] > 0
    branch = await (await api.get(f"/api/v1/threads/{thread['id']}/messages")).get_json()
    assert [m["id"] for m in branch["messages"]] == [body["user_message"]["id"], answer["id"]]


async def test_send_that_waits_too_long_answers_202_and_finishes_later(app, user, db, model_server):
    app.config["CHATAPP_API_WAIT_SECONDS"] = 0.3
    api = await api_client(app, user)
    model_server.script(Reply.text("slow but sure", first_delay=1.0))
    thread = await (await api.post("/api/v1/threads", {})).get_json()
    response = await api.post(f"/api/v1/threads/{thread['id']}/messages", {"content": "hi", "stream": False})
    assert response.status_code == 202
    answer = (await response.get_json())["answer"]
    assert answer["status"] == "streaming" and response.headers["Location"] == f"/api/v1/messages/{answer['id']}"
    await wait_status(db, answer["id"])
    later = await (await api.get(f"/api/v1/messages/{answer['id']}")).get_json()
    assert later["status"] == "complete" and later["content"] == "slow but sure"


async def test_user_message_is_stored_before_the_model_is_called(api, db, model_server, test_services):
    import concurrent.futures

    import asyncpg

    seen = {}

    def check_then_reply(body):
        async def count():
            conn = await asyncpg.connect(test_services.database_url)
            try:
                return await conn.fetchval("SELECT count(*) FROM messages WHERE content = 'stored first'")
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            seen["stored"] = pool.submit(asyncio.run, count()).result()
        return Reply.text("ok")

    model_server.script(check_then_reply)
    thread = await (await api.post("/api/v1/threads", {})).get_json()
    response = await api.post(f"/api/v1/threads/{thread['id']}/messages", {"content": "stored first", "stream": False})
    assert response.status_code == 200 and seen["stored"] == 1


async def test_blank_and_too_long_messages_are_refused(app, api, db):
    thread = await (await api.post("/api/v1/threads", {})).get_json()
    blank = await api.post(f"/api/v1/threads/{thread['id']}/messages", {"content": "   "})
    assert blank.status_code == 400
    long = await api.post(f"/api/v1/threads/{thread['id']}/messages",
                          {"content": "x" * (app.config["CHATAPP_MAX_MESSAGE_CHARS"] + 1)})
    assert long.status_code == 413
    _error_shape(await long.get_json(), 413)
    assert await db.fetchval("SELECT count(*) FROM messages") == 0


async def test_rate_limit_answers_429_before_calling_the_model(app, api, db, model_server):
    app.config["CHATAPP_RATE_LIMIT_PER_MINUTE"] = 1
    app._runtime_settings = None  # the merged run-time settings are cached briefly
    thread = await (await api.post("/api/v1/threads", {})).get_json()
    first = await api.post(f"/api/v1/threads/{thread['id']}/messages", {"content": "one", "stream": False})
    assert first.status_code == 200
    calls = model_server.count()
    second = await api.post(f"/api/v1/threads/{thread['id']}/messages", {"content": "two"})
    assert second.status_code == 429 and int(second.headers["Retry-After"]) > 0
    _error_shape(await second.get_json(), 429)
    assert model_server.count() == calls
    assert await db.fetchval("SELECT count(*) FROM messages WHERE content = 'two'") == 0


async def test_stop_keeps_the_partial_answer(api, db, model_server):
    model_server.script(Reply.text("one two three four five six seven eight", delay=0.2))
    thread = await (await api.post("/api/v1/threads", {})).get_json()
    sent = await (await api.post(f"/api/v1/threads/{thread['id']}/messages", {"content": "count"})).get_json()
    answer_id = sent["answer"]["id"]
    await asyncio.sleep(0.5)
    stopped = await api.post(f"/api/v1/messages/{answer_id}/stop")
    assert stopped.status_code == 202
    row = await wait_status(db, answer_id)
    assert row["status"] == "stopped" and 0 < len(row["content"]) < len("one two three four five six seven eight")
    user_stop = await api.post(f"/api/v1/messages/{sent['user_message']['id']}/stop")
    assert user_stop.status_code == 400


async def test_send_to_an_archived_thread_answers_409_and_stores_nothing(api, db):
    import uuid

    thread = await (await api.post("/api/v1/threads", {"title": "Old"})).get_json()
    await db.execute("UPDATE threads SET archived_at = now() WHERE id = $1", uuid.UUID(thread["id"]))
    response = await api.post(f"/api/v1/threads/{thread['id']}/messages", {"content": "hello?", "stream": True})
    assert response.status_code == 409
    assert await db.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", uuid.UUID(thread["id"])) == 0


# ---- search ----------------------------------------------------------------------------------

async def test_search_finds_own_messages_and_hostile_queries_are_harmless(api, db):
    thread = await (await api.post("/api/v1/threads", {"title": "Fruit"})).get_json()
    await api.post(f"/api/v1/threads/{thread['id']}/messages", {"content": "I like the mango season", "stream": False})
    found = await (await api.get("/api/v1/search", query_string={"q": "mango"})).get_json()
    hits = [r for r in found["results"] if r["role"] == "user"]
    assert hits and hits[0]["thread_id"] == thread["id"] and hits[0]["thread_title"] == "Fruit"
    assert "[[mango]]" in hits[0]["snippet"]
    for hostile in ["'; DROP TABLE messages; --", '"unclosed', "a & | ! :* <->", "-", "or or", "\\"]:
        response = await api.get("/api/v1/search", query_string={"q": hostile})
        assert response.status_code == 200, hostile
    assert await db.fetchval("SELECT count(*) FROM messages") >= 2


async def test_search_needs_a_query(api):
    response = await api.get("/api/v1/search")
    assert response.status_code == 422
    _error_shape(await response.get_json(), 422)


# ---- authentication --------------------------------------------------------------------------

def _api_rules():
    app = create_app({"SECRET_KEY": "x"})
    return [(rule.rule, method) for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]


async def test_every_api_route_refuses_a_logged_in_cookie_without_a_token(app, user):
    for rule, method in _api_rules():
        path = rule.replace("<thread_id>", str(uuid.uuid4())).replace("<message_id>", str(uuid.uuid4()))
        # `user.client` carries a logged-in session cookie: the API must not care.
        response = await user.client.open(path, method=method, json={"content": "x"})
        assert response.status_code == 401, (method, rule)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        _error_shape(await response.get_json(), 401)
        assert "Set-Cookie" not in response.headers
        endpoint = next(r.endpoint for r in app.url_map.iter_rules() if r.rule == rule and method in r.methods)
        view = app.view_functions[endpoint]
        assert view.csrf_exempt and view.bearer_required, endpoint


async def test_wrong_or_unknown_credentials_are_401(client):
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer chatapp_unknown", "Token chatapp_x", "Bearer not-ours"]:
        response = await client.get("/api/v1/threads", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert "invalid" in response.headers["WWW-Authenticate"], header


async def test_bearer_request_needs_no_csrf_and_sets_no_cookie(app, user):
    token = await create_token(user)
    # With the browser's cookie *and* a token: the token decides, no CSRF needed, no cookie sent.
    response = await user.client.post("/api/v1/threads", json={"title": "From a script"}, headers=bearer(token))
    assert response.status_code == 201
    assert "Set-Cookie" not in response.headers


# ---- documentation ---------------------------------------------------------------------------

async def test_openapi_document_lists_the_api_only(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = await response.get_json()
    assert document["openapi"].startswith("3.1")
    paths = set(document["paths"])
    assert {"/api/v1/threads", "/api/v1/threads/{thread_id}", "/api/v1/threads/{thread_id}/messages",
            "/api/v1/messages/{message_id}/stream", "/api/v1/search"} <= paths
    assert all(p.startswith("/api/v1/") for p in paths)
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    send = document["paths"]["/api/v1/threads/{thread_id}/messages"]["post"]
    assert {"200", "201", "202", "401", "404", "422", "429"} <= {str(c) for c in send["responses"]}


async def test_docs_page_lists_operations_under_our_csp(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    assert "/api/v1/threads/{thread_id}/messages" in html and "PATCH" in html and "MessageOut" in html
    assert "cdn" not in html.lower()
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


# ---- streaming over real HTTP ----------------------------------------------------------------

async def _live_api(live, web_user) -> dict[str, str]:
    response = await web_user.client.post("/settings/tokens", data={"name": "live"},
                                          headers={"X-CSRF-Token": web_user.token})
    assert response.status_code == 201
    from apihelp import token_in

    return bearer(token_in(response.text))


async def test_streamed_send_delivers_deltas_then_the_finished_message(live, web_user, db, model_server):
    text = "Streaming works, one word at a time, to the very end."
    model_server.script(Reply.text(text, delay=0.02))
    auth = await _live_api(live, web_user)
    client = web_user.client
    thread = (await client.post("/api/v1/threads", json={}, headers=auth)).json()
    sent = await client.post(f"/api/v1/threads/{thread['id']}/messages", json={"content": "go"}, headers=auth)
    assert sent.status_code == 201
    stream_url = sent.json()["stream_url"]

    # Read a few deltas, drop the connection, resume with Last-Event-ID: nothing lost or repeated.
    first: list = []
    async with connect_sse(client, stream_url, headers=auth) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        async for event in stream:
            first.append(event)
            if len(first) == 3:
                break
        last_id = stream.last_event_id
    rest, _ = await read_events(client, stream_url, headers=auth, last_event_id=last_id,
                                until=lambda e: e.event == "done")
    events = first + rest
    deltas = [json.loads(e.data)["text"] for e in events if e.event == "delta"]
    assert "".join(deltas) == text
    done = json.loads(events[-1].data)
    assert events[-1].event == "done" and done["status"] == "complete" and done["content"] == text
    row = await wait_status(db, done["id"])
    assert row["content"] == text

    # A finished answer's stream is answered from PostgreSQL at once.
    again, _ = await read_events(client, stream_url, headers=auth)
    assert [e.event for e in again] == ["done"]
    # And the stream, like every API route, refuses the cookie alone.
    assert (await client.get(stream_url)).status_code == 401
