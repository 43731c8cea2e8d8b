"""Export (Markdown, JSON, everything streamed) and import (ours, ChatGPT's): all or nothing."""
from __future__ import annotations

import io
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

from bs4 import BeautifulSoup
from werkzeug.datastructures import FileStorage

from chatapp.ids import uuid7
from history_data import BRANCHED, make_thread, user_id

CHATGPT = Path(__file__).parent / "data" / "chatgpt_conversations.json"


async def _upload(user, content: bytes, filename: str = "export.json"):
    token = await user.csrf("/")
    return await user.client.post("/import", form={"csrf_token": token}, files={
        "file": FileStorage(io.BytesIO(content), filename=filename, content_type="application/json")})


async def _tree(db, thread_id) -> dict[str, dict]:
    """A thread's messages by content: role, parent's content, created_at."""
    rows = await db.fetch("""SELECT m.content, m.role, m.model, m.created_at, p.content AS parent
                             FROM messages m LEFT JOIN messages p ON p.id = m.parent_id
                             WHERE m.thread_id = $1""", thread_id)
    return {r["content"]: dict(r) for r in rows}


async def _visible(db, thread_id) -> list[str]:
    rows = await db.fetch("""WITH RECURSIVE b AS (
                                 SELECT m.id, m.parent_id, m.content, 0 AS d FROM threads t
                                 JOIN messages m ON m.id = t.current_leaf_id WHERE t.id = $1
                                 UNION ALL SELECT p.id, p.parent_id, p.content, b.d + 1 FROM messages p JOIN b ON p.id = b.parent_id)
                             SELECT content FROM b ORDER BY d DESC""", thread_id)
    return [r["content"] for r in rows]


async def test_thread_export_json_has_the_whole_tree_and_a_safe_file_name(app, user, db):
    me = await user_id(db)
    thread_id, ids = await make_thread(db, me, BRANCHED, title='Ünïcode "eggs" / ../../etc\r\npasswd')
    response = await user.client.get(f"/threads/{thread_id}/export.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="chatapp-unicode-eggs-etc-passwd-') and disposition.endswith('.json"')
    document = json.loads(await response.get_data(as_text=True))
    assert (document["format"], document["version"]) == ("chatapp-export", 1)
    [thread] = document["threads"]
    assert thread["current_leaf_id"] == str(ids["a3"])
    by_id = {m["id"]: m for m in thread["messages"]}
    assert set(by_id) == {str(i) for i in ids.values()}  # every version, not only the branch
    a1 = by_id[str(ids["a1"])]
    assert a1["parent_id"] == str(ids["q1"]) and a1["role"] == "assistant" and a1["model"] == "test-model"
    assert set(a1) >= {"content", "status", "usage", "created_at"} and a1["usage"]["estimated"] is False


async def test_thread_export_markdown_shows_the_conversation_then_other_versions(app, user, db):
    me = await user_id(db)
    thread_id, _ = await make_thread(db, me, BRANCHED, title="Eggs")
    response = await user.client.get(f"/threads/{thread_id}/export.md")
    assert response.headers["Content-Type"] == "text/markdown; charset=utf-8"
    text = await response.get_data(as_text=True)
    conversation, others = text.split("## Other versions")
    assert conversation.startswith("# Eggs\n")
    for line in ("How do I boil an egg?", "Simmer it for 7 minutes", "And a soft one?", "Six minutes"):
        assert line in conversation
    assert "boiling" not in conversation and "Put it in **boiling** water" in others
    assert "version 1 of 2 · in reply to “How do I boil an egg?”" in others


async def test_export_then_import_makes_new_rows_owned_by_the_importer(app, client, actions, db):
    await actions.signup("first@example.com", "password123")
    source, ids = await make_thread(db, await user_id(db, "first@example.com"), BRANCHED, title="Eggs")
    await actions.post("/folders", {"name": "Kitchen"})
    folder = await db.fetchval("SELECT id FROM folders")
    await actions.post(f"/threads/{source}/folder", {"folder_id": str(folder)})
    exported = await (await client.get(f"/threads/{source}/export.json")).get_data()
    await actions.post("/logout")
    await actions.signup("second@example.com", "password123")
    second = await user_id(db, "second@example.com")
    response = await _upload(actions, exported)
    assert response.status_code == 303
    copy = uuid.UUID(response.headers["Location"].rsplit("/", 1)[-1])  # one thread: straight to it
    row = await db.fetchrow("SELECT t.user_id, t.title, f.user_id AS folder_owner, f.name FROM threads t "
                            "JOIN folders f ON f.id = t.folder_id WHERE t.id = $1", copy)
    assert (row["user_id"], row["title"], row["folder_owner"], row["name"]) == (second, "Eggs", second, "Kitchen")
    assert copy != source and not set(ids.values()) & {r["id"] for r in await db.fetch(
        "SELECT id FROM messages WHERE thread_id = $1", copy)}
    original, imported = await _tree(db, source), await _tree(db, copy)
    assert {k: (v["role"], v["parent"], v["created_at"]) for k, v in imported.items()} == \
           {k: (v["role"], v["parent"], v["created_at"]) for k, v in original.items()}
    assert await _visible(db, copy) == await _visible(db, source)
    assert (await client.get(f"/threads/{copy}")).status_code == 200


async def test_export_everything_streams_all_own_threads_in_batches(app, client, actions, db):
    await actions.signup("other@example.com", "password123")
    await make_thread(db, await user_id(db, "other@example.com"), [("s", None, "user", "not yours")], title="Foreign")
    await actions.post("/logout")
    await actions.signup("many@example.com", "password123")
    me = await user_id(db, "many@example.com")
    await db.execute("""INSERT INTO threads (id, user_id, title)
                        SELECT gen_random_uuid(), $1, 'T' || i FROM generate_series(1, 249) i""", me)
    await make_thread(db, me, BRANCHED, title="Eggs")
    chunks = []
    async with client.request("/export.json") as connection:
        await connection.send_complete()
        while (chunk := await connection.receive()) != b"":
            chunks.append(chunk)
    assert connection.status_code == 200
    assert connection.headers["Content-Disposition"].startswith('attachment; filename="chatapp-everything-')
    assert len(chunks) >= 4  # head, three batches of at most 100 threads, tail: never one big body
    document = json.loads(b"".join(chunks))
    titles = [t["title"] for t in document["threads"]]
    assert len(titles) == 250 and "Foreign" not in titles
    eggs = next(t for t in document["threads"] if t["title"] == "Eggs")
    assert len(eggs["messages"]) == len(BRANCHED)


async def test_chatgpt_import_keeps_branches_current_node_titles_and_times(app, user, db):
    response = await _upload(user, CHATGPT.read_bytes(), "conversations.json")
    assert response.status_code == 303 and response.headers["Location"] == "/import?imported=2&skipped=1"
    page = await (await user.client.get(response.headers["Location"])).get_data(as_text=True)
    assert "Imported 2 conversations; skipped 1 with no messages" in page
    me = await user_id(db)
    threads = {r["title"]: r for r in await db.fetch("SELECT id, user_id, title, created_at, updated_at, model FROM threads")}
    assert set(threads) == {"Lisbon weekend", "Python decorators"}
    lisbon = threads["Lisbon weekend"]
    assert lisbon["user_id"] == me and lisbon["model"] is None  # ChatGPT's models are not this server's
    assert lisbon["created_at"] == datetime.fromtimestamp(1714550000, timezone.utc)
    assert lisbon["updated_at"] == datetime.fromtimestamp(1714550900, timezone.utc)
    tree = await _tree(db, lisbon["id"])
    assert {k: (v["role"], v["parent"]) for k, v in tree.items()} == {
        "Plan a weekend in Lisbon for me.": ("user", None),  # the hidden system and context nodes are gone
        "Day 1: Alfama and the castle. Day 2: Belém.": ("assistant", "Plan a weekend in Lisbon for me."),
        "**Saturday**: Alfama and São Jorge castle.\n\n**Sunday**: Belém and its tower.":
            ("assistant", "Plan a weekend in Lisbon for me."),  # the regeneration is a sibling
        "Where should I eat in Belém?": ("user", "**Saturday**: Alfama and São Jorge castle.\n\n**Sunday**: Belém and its tower."),
        # The tool call and the browsing result are skipped; the answer hangs under the question.
        "Try the custard tarts at Pastéis de Belém, then a vegetarian lunch nearby.": ("assistant", "Where should I eat in Belém?"),
        "Plan a weekend in Porto instead.": ("user", None),  # the edit is a sibling of the first question
        "Porto: the Ribeira, Livraria Lello and a port cellar in Gaia.": ("assistant", "Plan a weekend in Porto instead."),
    }
    assert tree["Porto: the Ribeira, Livraria Lello and a port cellar in Gaia."]["model"] == "gpt-4o-mini"
    assert tree["Where should I eat in Belém?"]["created_at"] == datetime.fromtimestamp(1714550120, timezone.utc)
    assert await _visible(db, lisbon["id"]) == [
        "Plan a weekend in Lisbon for me.",
        "**Saturday**: Alfama and São Jorge castle.\n\n**Sunday**: Belém and its tower.",
        "Where should I eat in Belém?",
        "Try the custard tarts at Pastéis de Belém, then a vegetarian lunch nearby.",
    ]
    decorators = await _tree(db, threads["Python decorators"]["id"])
    first = "[image not imported]\nWhat does this decorator do?"
    assert decorators[first]["parent"] is None
    answer = decorators["It caches results: `functools.lru_cache` returns the stored value for repeated arguments."]
    assert answer["created_at"] == decorators[first]["created_at"]  # no time in the file: the one before it
    thread_page = await (await user.client.get(f"/threads/{lisbon['id']}")).get_data(as_text=True)
    assert "Pastéis de Belém" in thread_page and "2/2" in thread_page


def _chatgpt(edit) -> bytes:
    conversations = json.loads(CHATGPT.read_text())
    edit(conversations)
    return json.dumps(conversations).encode()


def _set(path: list, value):
    def edit(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


BAD_FILES = [
    (b"{not json", "not valid JSON (line 1, column 2"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b'{"hello": "world"}', "neither a chatapp export"),
    (b"[]", "holds no conversations"),
    (b"PK\x03\x04\x14\x00\x00\x00", "This is a zip file. ChatGPT's export is one: unzip it"),
    (b'{"format": "chatapp-export", "version": 7, "threads": []}', "newer chatapp (format version 7)"),
    (b'{"format": "chatapp-export", "version": 1, "threads": [{"title": "A", "messages": [{"id": "m1", '
     b'"parent_id": "m0", "role": "user", "content": "hi"}]}]}', "Conversation 1 (“A”), message m1: its parent m0"),
    (b'{"format": "chatapp-export", "version": 1, "threads": [{"title": "B", "messages": [{"id": "m1", '
     b'"parent_id": null, "role": "wizard", "content": "hi"}]}]}', "Conversation 1 (“B”), message m1: role must be"),
    # The first conversation is fine, the second is broken: nothing at all is imported.
    (_chatgpt(_set([1, "mapping", "p-3", "parent"], "gone-node")),
     "Conversation 2 (“Python decorators”), node p-3: its parent gone-node is not in the mapping"),
    (_chatgpt(_set([1, "mapping", "p-2", "message", "content", "parts"], "text")),
     "Conversation 2 (“Python decorators”), node p-2: the message content has no parts list"),
    (_chatgpt(_set([0, "current_node"], "nowhere")), "Conversation 1 (“Lisbon weekend”): current_node nowhere"),
    (_chatgpt(_set([1, "create_time"], "yesterday")), "Conversation 2 (“Python decorators”): create_time must be"),
    (_chatgpt(lambda d: d[1]["mapping"]["root-2"].update(parent="p-4")), "its parents form a loop"),
]


async def test_bad_files_import_nothing_and_say_what_is_wrong(app, user, db):
    for content, expected in BAD_FILES:  # one user for all cases: signing up is the slow part
        response = await _upload(user, content)
        assert response.status_code == 400, expected
        soup = BeautifulSoup(await response.get_data(as_text=True), "html.parser")
        assert expected in soup.select_one("#import-error").get_text(), expected
        assert await db.fetchval("SELECT count(*) FROM threads") == 0, expected
        assert await db.fetchval("SELECT count(*) FROM messages") == 0, expected


async def test_import_strips_what_postgresql_cannot_store(app, user, db):
    document = {"format": "chatapp-export", "version": 1, "threads": [{"title": "Odd\u0000 text", "messages": [
        {"id": "1", "parent_id": None, "role": "user", "content": "nul\u0000 and \ud800 lone surrogate"}],
        "params": {"temperature": 0.5, "evil": "\u0000"}}]}
    response = await _upload(user, json.dumps(document).encode())
    assert response.status_code == 303
    assert await db.fetchval("SELECT content FROM messages") == "nul and ? lone surrogate"
    assert await db.fetchval("SELECT params FROM threads") == {"temperature": 0.5}


async def test_import_has_its_own_size_limit_above_the_global_one(overrides, app, user, db):
    assert app.config["CHATAPP_MAX_BODY_BYTES"] == 1024 * 1024
    big = {"format": "chatapp-export", "version": 1, "threads": [
        {"title": f"T{i}", "messages": [{"id": "1", "parent_id": None, "role": "user", "content": "x" * 10_000}]}
        for i in range(150)]}
    content = json.dumps(big).encode()
    assert len(content) > 1024 * 1024  # more than any other route accepts
    response = await _upload(user, content)
    assert response.status_code == 303
    assert await db.fetchval("SELECT count(*) FROM threads") == 150
    too_much = await user.post("/threads", {"content": "x" * (1024 * 1024 + 10)})
    assert too_much.status_code == 413  # the global limit still holds everywhere else


async def _raw_upload(actions, chunks: list[bytes], content_length: bool):
    """POST /import as a browser streams it: multipart, chunk by chunk, with or without Content-Length."""
    token = await actions.csrf("/")
    boundary = "chunky"
    body = [(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.json"\r\n'
             "Content-Type: application/json\r\n\r\n").encode(), *chunks, f"\r\n--{boundary}--\r\n".encode()]
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-CSRF-Token": token}
    if content_length:
        headers["Content-Length"] = str(sum(len(c) for c in body))
    async with actions.client.request("/import", method="POST", headers=headers) as connection:
        for chunk in body:
            await connection.send(chunk)
        await connection.send_complete()
    return connection.status_code, connection.response_data.decode()


async def test_import_over_its_limit_is_413_with_or_without_content_length(overrides, test_services, model_server):
    from chatapp import create_app
    from actions import Actions

    application = create_app({**overrides, "CHATAPP_MAX_IMPORT_BYTES": 2048})
    async with application.test_app():
        actions = Actions(application.test_client())
        await actions.signup("limit@example.com", "password123")
        chunks = [b"["] + [b" " * 500] * 8 + [b"]"]
        for content_length in (True, False):  # without it, the total is counted as it arrives
            status, body = await _raw_upload(actions, chunks, content_length)
            assert status == 413, content_length
            assert "Import files can be at most 2 KiB." in body
        status, body = await _raw_upload(actions, [b"[" + b" " * 1500 + b"]"], True)
        assert status == 400 and "holds no conversations" in body  # under the limit: read and checked


async def test_other_users_and_malformed_ids_cannot_be_exported(app, client, actions, db):
    await actions.signup("owner@example.com", "password123")
    thread_id, _ = await make_thread(db, await user_id(db, "owner@example.com"), BRANCHED)
    await actions.post("/logout")
    await actions.signup("intruder@example.com", "password123")
    for bad in (str(thread_id), "not-a-uuid", "1", str(uuid7())):
        for kind in ("md", "json"):
            response = await client.get(f"/threads/{bad}/export.{kind}")
            assert response.status_code == 404, (bad, kind)
    everything = json.loads(await (await client.get("/export.json")).get_data())
    assert everything["threads"] == []


async def test_import_page_has_a_file_form_and_the_export_link(app, user):
    soup = BeautifulSoup(await (await user.client.get("/import")).get_data(as_text=True), "html.parser")
    form = soup.select_one("form.import-form")
    assert form["method"] == "post" and form["enctype"] == "multipart/form-data"
    assert form.select_one("input[type=file][name=file]") and form.select_one("input[name=csrf_token]")
    assert soup.select_one("main a[href='/export.json']") is not None
    assert soup.select_one(".sidebar-foot a[href='/import']") is not None
    missing = await user.post("/import", {})
    assert missing.status_code == 400 and "Choose a file to import." in await missing.get_data(as_text=True)


async def test_archived_threads_are_exported_from_cold_storage(app, user, db):
    from chatapp import archive
    from chatapp.storage import archive_store

    me = await user_id(db)
    thread_id, ids = await make_thread(db, me, BRANCHED, title="Eggs")
    async with archive_store(app.config) as store:
        async with app.db.acquire() as conn:
            key = await archive.archive_thread(conn, store, thread_id)
    assert key and await db.fetchval("SELECT count(*) FROM messages") == 0
    exported = json.loads(await (await user.client.get(f"/threads/{thread_id}/export.json")).get_data())
    [thread] = exported["threads"]
    assert thread["archived"] is True and thread["current_leaf_id"] == str(ids["a3"])
    assert {m["id"] for m in thread["messages"]} == {str(i) for i in ids.values()}
    markdown = await (await user.client.get(f"/threads/{thread_id}/export.md")).get_data(as_text=True)
    assert "Six minutes gives a jammy yolk." in markdown.split("## Other versions")[0]
    everything = json.loads(await (await user.client.get("/export.json")).get_data())
    assert len(everything["threads"][0]["messages"]) == len(BRANCHED)
    async with archive_store(app.config) as store:
        await store.delete(key)  # the archived copy is lost: the export says so, never an empty thread
    broken = await user.client.get(f"/threads/{thread_id}/export.json")
    assert broken.status_code == 503 and "archived copy cannot be read" in await broken.get_data(as_text=True)

