"""One row per route that takes an id: how to create the owner's object and which request to make.

Used by the ownership matrix (test_idor_matrix.py), the GET-is-safe test and the headers test.
A World holds three signed-up users over Quart's test client: the owner `a`, another user
`b` and an admin; each has a session (with its CSRF token) and an API token. Objects are
created through the app's own HTTP routes, the way a user would.
"""
from __future__ import annotations

import asyncio
import re
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import services
from chatapp import create_app
from actions import Actions

TOKEN_RE = re.compile(r"chatapp_[A-Za-z0-9_-]{20,}")
PASSWORD = "password123"
# Routes whose arguments are not object ids.
NOT_OBJECT_IDS = {"static": "a file path under static/, served to anyone"}


@dataclass
class Person:
    """One signed-up user: a cookie-keeping client, its CSRF token and an API token."""

    actions: Actions
    email: str
    id: uuid.UUID
    csrf: str
    api_token: str

    async def request(self, method: str, path: str, *, bearer: bool = False, form: dict | None = None,
                      json: Any = None, headers: dict | None = None):
        """A request as this user: API routes with the bearer token, others with session + CSRF."""
        headers = dict(headers or {})
        if bearer:
            headers["Authorization"] = f"Bearer {self.api_token}"
            client = self.actions.client.app.test_client()  # no cookies at all on API calls
        else:
            client = self.actions.client
            if method not in ("GET", "HEAD", "OPTIONS"):
                headers["X-CSRF-Token"] = self.csrf
        kwargs: dict[str, Any] = {"headers": headers}
        if json is not None:
            kwargs["json"] = json
        elif method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            kwargs["form"] = form or {}
        return await client.open(path, method=method, **kwargs)


@dataclass
class World:
    """The owner, another user and an admin of one app, plus a database pool."""

    app: Any
    a: Person
    b: Person
    admin: Person
    made: dict[str, Any] = field(default_factory=dict)  # what the creators made, for reuse

    async def fetchval(self, query: str, *args):
        """One value from the app's database."""
        async with self.app.db.acquire() as conn:
            return await conn.fetchval(query, *args)


def settings(test_services, model_server, instance_dir: str, **extra: Any) -> dict[str, Any]:
    """The test app's settings (as conftest's `overrides`), with limits high enough for many rows."""
    return {
        "DATABASE_URL": test_services.database_url, "REDIS_URL": test_services.redis_url,
        "CHATAPP_REDIS_PREFIX": test_services.redis_prefix, "OPENAI_BASE_URL": model_server.base_url,
        "OPENAI_API_KEY": "test-key", "CHATAPP_DEFAULT_MODEL": "test-model", "CHATAPP_MODELS": [],
        "SECRET_KEY": "test-secret", "CHATAPP_INSTANCE_DIR": instance_dir, "CHATAPP_MODEL_RETRIES": 0,
        "CHATAPP_REAPER_INTERVAL_SECONDS": 3600.0, "CHATAPP_RATE_LIMIT_PER_MINUTE": 10_000,
        "CHATAPP_MAX_CONCURRENT_GENERATIONS": 100, "CHATAPP_LOCAL_MODEL": "off", **extra,
    }


@asynccontextmanager
async def running_app(test_services, model_server, instance_dir: str, **extra: Any) -> AsyncIterator[Any]:
    """A started app on clean tables and keys, for a whole module (signing users up is slow)."""
    await services.reset_database(test_services.database_url)
    await services.flush_prefix(test_services.redis_url, test_services.redis_prefix)
    model_server.reset()
    app = create_app(settings(test_services, model_server, instance_dir, **extra))
    async with app.test_app():
        yield app


async def settle(app, timeout: float = 10.0) -> None:
    """Wait until no answer is being generated (an answer leaves the registry after its title is written)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while app.extensions.get("generations"):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"answers still running: {list(app.extensions['generations'])}")
        await asyncio.sleep(0.02)


async def new_person(app, email: str, admin: bool = False) -> Person:
    """Sign a user up through the forms, make an API token in Settings, optionally make them admin."""
    actions = Actions(app.test_client())
    response = await actions.signup(email, PASSWORD)
    assert response.status_code == 303, response.status_code
    async with app.db.acquire() as conn:
        user_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", email)
        if admin:
            await conn.execute("UPDATE users SET is_admin = true WHERE id = $1", user_id)
    csrf = await actions.csrf("/settings")
    made = await actions.client.post("/settings/tokens", form={"name": "matrix", "csrf_token": csrf})
    token = TOKEN_RE.search(await made.get_data(as_text=True))
    assert token, made.status_code
    return Person(actions, email, user_id, csrf, token.group(0))


async def new_world(app) -> World:
    """Three users of `app`: owner, other, admin."""
    tag = uuid.uuid4().hex[:6]
    a = await new_person(app, f"owner-{tag}@example.com")
    b = await new_person(app, f"other-{tag}@example.com")
    admin = await new_person(app, f"admin-{tag}@example.com", admin=True)
    return World(app, a, b, admin)


# ---- the owner's objects ---------------------------------------------------------------------

async def thread(w: World) -> dict[str, str]:
    """An empty thread of the owner."""
    response = await w.a.request("POST", "/threads")
    assert response.status_code == 303, response.status_code
    return {"thread_id": response.headers["Location"].rsplit("/", 1)[-1]}


async def exchange(w: World) -> dict[str, str]:
    """A thread with a finished question and answer: thread_id, question_id, message_id (the answer)."""
    if "exchange" in w.made:
        return w.made["exchange"]
    response = await w.a.request("POST", "/threads", form={"content": "hello there"})
    assert response.status_code == 303, response.status_code
    thread_id = uuid.UUID(response.headers["Location"].rsplit("/", 1)[-1])
    await settle(w.app)  # the answer and the thread's title are written
    status = await w.fetchval("SELECT status FROM messages WHERE thread_id = $1 AND role = 'assistant'", thread_id)
    assert status == "complete", status
    question = await w.fetchval("SELECT id FROM messages WHERE thread_id = $1 AND role = 'user'", thread_id)
    answer = await w.fetchval("SELECT id FROM messages WHERE thread_id = $1 AND role = 'assistant'", thread_id)
    w.made["exchange"] = {"thread_id": str(thread_id), "question_id": str(question), "message_id": str(answer)}
    return w.made["exchange"]


async def answer(w: World) -> dict[str, str]:
    """The owner's finished answer."""
    return {"message_id": (await exchange(w))["message_id"]}


async def question(w: World) -> dict[str, str]:
    """The owner's own message."""
    return {"message_id": (await exchange(w))["question_id"]}


async def answered_thread(w: World) -> dict[str, str]:
    """A thread with a finished exchange (shares and exports need content)."""
    return {"thread_id": (await exchange(w))["thread_id"]}


async def token(w: World) -> dict[str, str]:
    """A new API token of the owner (not the one the owner's API calls use)."""
    response = await w.a.request("POST", "/settings/tokens", form={"name": f"spare {uuid.uuid4().hex[:6]}"})
    assert response.status_code == 201, response.status_code
    return {"token_id": str(await w.fetchval(
        "SELECT id FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1", w.a.id))}


async def folder(w: World) -> dict[str, str]:
    """A folder of the owner."""
    response = await w.a.request("POST", "/folders", form={"name": f"Folder {uuid.uuid4().hex[:6]}"})
    assert response.status_code == 303, response.status_code
    return {"folder_id": str(await w.fetchval(
        "SELECT id FROM folders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1", w.a.id))}


async def share(w: World) -> dict[str, str]:
    """A share link of the owner's answered thread."""
    thread_id = (await exchange(w))["thread_id"]
    response = await w.a.request("POST", f"/threads/{thread_id}/share")
    assert response.status_code == 303, response.status_code
    return {"share_id": await w.fetchval("SELECT id FROM shares WHERE thread_id = $1", uuid.UUID(thread_id))}


async def account(w: World) -> dict[str, str]:
    """Another ordinary account (the object of admin actions)."""
    person = await new_person(w.app, f"target-{uuid.uuid4().hex[:6]}@example.com")
    return {"user_id": str(person.id)}


# ---- the rows --------------------------------------------------------------------------------

@dataclass
class Row:
    """How to reach one route with the owner's object."""

    make: Callable[[World], Awaitable[dict[str, str]]]
    form: dict[str, str] | None = None
    json: Any = None
    allowed: str = "owner"  # who may use it: "owner", or "admin" for the admin area
    other_status: int = 404  # what another ordinary user gets
    why: str = ""  # when other_status is not 404


ROWS: dict[str, Row] = {
    # threads and messages (browser)
    "threads.show": Row(thread),
    "threads.earlier": Row(thread),
    "threads.rename": Row(thread, form={"title": "Renamed"}),
    "threads.delete": Row(thread),
    "threads.settings": Row(thread, form={"model": "", "system_prompt": "Be brief.", "temperature": "0.5"}),
    "messages.send": Row(thread, form={"content": "hi"}),
    "messages.stream": Row(answer),
    "messages.stop": Row(answer),
    "messages.regenerate": Row(answer),
    "messages.edit": Row(question, form={"content": "edited"}),
    "messages.switch": Row(answer),
    # organising, sharing, export, archive
    "organise.pin": Row(thread, form={"pinned": "1"}),
    "organise.move": Row(thread, form={"folder_id": ""}),
    "organise.folder": Row(folder),
    "organise.rename": Row(folder, form={"name": "Renamed folder"}),
    "organise.delete": Row(folder),
    "share.create": Row(answered_thread),
    "share.revoke": Row(answered_thread),
    "share.public": Row(share, other_status=200, why="a share link is a public capability: whoever holds it may read"),
    "transfer.export_thread_json": Row(answered_thread),
    "transfer.export_thread_md": Row(answered_thread),
    "archive.restore": Row(thread),
    "archive.restore_status": Row(thread),
    # settings
    "tokens.revoke": Row(token),
    # admin area: another ordinary user is told it does not exist
    "admin.disable": Row(account, allowed="admin"),
    "admin.enable": Row(account, allowed="admin"),
    # JSON API (bearer tokens)
    "api.get_thread": Row(thread),
    "api.update_thread": Row(thread, json={"title": "Renamed"}),
    "api.delete_thread": Row(thread),
    "api.list_messages": Row(answered_thread),
    "api.send_message": Row(thread, json={"content": "hi", "stream": False}),
    "api.get_message": Row(answer),
    "api.stop_message": Row(answer),
    "api.stream_message": Row(answer),
}


def id_rules(app) -> list:
    """Every rule that takes an id (so needs a row), in a stable order."""
    return sorted((r for r in app.url_map.iter_rules() if r.arguments and r.endpoint not in NOT_OBJECT_IDS),
                  key=lambda r: (r.rule, r.endpoint))


def methods(rule) -> list[str]:
    """The methods a test should send to a rule (HEAD and OPTIONS are automatic)."""
    return sorted(rule.methods - {"HEAD", "OPTIONS"})


def is_api(app, endpoint: str) -> bool:
    """True for bearer-token API views."""
    return bool(getattr(app.view_functions[endpoint], "bearer_required", False))


def missing_row_message(rule) -> str:
    """The failure message for a route with an id and no row."""
    return (f"route {'/'.join(methods(rule))} {rule.rule} ({rule.endpoint}) takes an id but has no row in "
            f"tests/route_matrix.py ROWS: add Row(<creator of the owner's object>, form=/json=...) so the "
            f"ownership matrix can check that another user gets 404")
