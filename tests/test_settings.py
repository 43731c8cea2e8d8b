"""Settings: defaults for new threads, theme, password change, logging out everywhere, deleting the account."""
from __future__ import annotations

import uuid

from bs4 import BeautifulSoup

from apihelp import bearer, create_token
from actions import Actions

PASSWORD = "correct horse battery"  # the `user` fixture's


async def _second_session(app) -> Actions:
    """The same account logged in from another browser."""
    other = Actions(app.test_client())
    response = await other.login("ada@example.com", PASSWORD)
    assert response.status_code == 303
    return other


async def _logged_in(actions: Actions) -> bool:
    return (await actions.client.get("/")).status_code == 200


async def test_settings_page_keeps_usage_and_backend_and_shows_every_section(app, user):
    soup = BeautifulSoup(await (await user.client.get("/settings")).get_data(as_text=True), "html.parser")
    assert "Model backend: OpenAI-compatible server" in soup.select_one("#model-backend").get_text()
    assert soup.select_one(".usage-table") is not None
    for section in ("defaults", "appearance", "tokens", "security", "delete-account"):
        assert soup.select_one(f"#{section}") is not None, section


async def test_saved_defaults_apply_to_new_threads(app, user, db):
    response = await user.post("/settings/defaults", {"default_model": "test-model-2", "system_prompt": "Be terse."})
    assert response.status_code == 303 and "done=defaults" in response.headers["Location"]
    thread_id = await user.new_thread()
    row = await db.fetchrow("SELECT model, system_prompt FROM threads WHERE id = $1", uuid.UUID(thread_id))
    assert dict(row) == {"model": "test-model-2", "system_prompt": "Be terse."}
    # The home composer preselects the saved model, so posting it keeps the default.
    soup = BeautifulSoup(await (await user.client.get("/")).get_data(as_text=True), "html.parser")
    assert soup.select_one("select[name=model] option[selected]")["value"] == "test-model-2"
    # A model picked in the composer still wins.
    response = await user.post("/threads", {"model": "test-model"})
    picked = response.headers["Location"].rsplit("/", 1)[-1]
    assert await db.fetchval("SELECT model FROM threads WHERE id = $1", uuid.UUID(picked)) == "test-model"


async def test_defaults_with_htmx_answer_the_section_and_bad_input_changes_nothing(app, user, db):
    csrf = await user.csrf("/settings")
    ok = await user.client.post("/settings/defaults", form={"default_model": "test-model", "system_prompt": "Hi",
                                                            "csrf_token": csrf},
                                headers={"HX-Request": "true", "HX-Target": "defaults"})
    body = await ok.get_data(as_text=True)
    assert ok.status_code == 200 and body.lstrip().startswith('<section id="defaults"') and "Saved." in body
    for form in ({"default_model": "no-such-model"}, {"system_prompt": "x" * 8001}):
        bad = await user.post("/settings/defaults", {"default_model": "test-model", **form})
        assert bad.status_code == 400
        assert BeautifulSoup(await bad.get_data(as_text=True), "html.parser").select_one(".field-error")
    settings = await db.fetchval("SELECT settings FROM users")
    assert settings["system_prompt"] == "Hi" and settings["default_model"] == "test-model"


async def test_theme_override_is_rendered_on_html(app, user):
    page = await (await user.client.get("/settings")).get_data(as_text=True)
    assert "<html lang=\"en\">" in page  # system: no override
    response = await user.post("/settings/theme", {"theme": "dark"})
    assert response.status_code == 303
    soup = BeautifulSoup(await (await user.client.get("/")).get_data(as_text=True), "html.parser")
    assert soup.html["data-theme"] == "dark"
    assert (await user.post("/settings/theme", {"theme": "neon"})).status_code == 400
    await user.post("/settings/theme", {"theme": "system"})
    soup = BeautifulSoup(await (await user.client.get("/")).get_data(as_text=True), "html.parser")
    assert not soup.html.has_attr("data-theme")


async def test_wrong_current_password_changes_nothing(app, user, db):
    before = await db.fetchval("SELECT password_hash FROM users")
    response = await user.post("/settings/password", {"current_password": "wrong password", "new_password": "n3w-password"})
    assert response.status_code == 400
    soup = BeautifulSoup(await response.get_data(as_text=True), "html.parser")
    assert soup.select_one("#current_password-error") is not None
    short = await user.post("/settings/password", {"current_password": PASSWORD, "new_password": "short"})
    assert short.status_code == 400
    assert await db.fetchval("SELECT password_hash FROM users") == before


async def test_password_change_ends_other_sessions_and_tokens_but_not_this_one(app, user, db):
    other = await _second_session(app)
    token = await create_token(user)
    response = await user.post("/settings/password", {"current_password": PASSWORD, "new_password": "brand new secret"})
    assert response.status_code == 303 and "done=password" in response.headers["Location"]
    assert "Set-Cookie" in response.headers  # a fresh session id for this browser
    assert await _logged_in(user)
    assert not await _logged_in(other)
    assert (await app.test_client().get("/api/v1/threads", headers=bearer(token))).status_code == 401
    fresh = Actions(app.test_client())
    assert (await fresh.login("ada@example.com", PASSWORD)).status_code == 400
    assert (await fresh.login("ada@example.com", "brand new secret")).status_code == 303


async def test_log_out_everywhere_ends_every_session(app, user):
    other = await _second_session(app)
    token = await create_token(user)
    response = await user.post("/settings/logout-everywhere")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert not await _logged_in(user) and not await _logged_in(other)
    # API tokens are separate credentials, managed in the tokens section.
    assert (await app.test_client().get("/api/v1/threads", headers=bearer(token))).status_code == 200


async def test_delete_account_needs_the_password(app, user, db):
    response = await user.post("/settings/delete-account", {"password": "not it"})
    assert response.status_code == 400
    assert "Nothing was deleted" in await response.get_data(as_text=True)
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_delete_account_removes_every_trace(app, user, db, model_server):
    from test_chat_actions import _finished_exchange

    other = await _second_session(app)
    token = await create_token(user)
    thread_id, answer = await _finished_exchange(user, db)
    await user.client.get(f"/threads/{thread_id}")  # renders the answer into the fragment cache
    from chatapp import chat

    async with app.app_context():
        fragment = chat.fragment_key(answer)
    assert await app.redis.fast.exists(fragment)
    bystander = Actions(app.test_client())
    await bystander.signup("bystander@example.com", "password123")
    response = await user.post("/settings/delete-account", {"password": PASSWORD})
    assert response.status_code == 303 and response.headers["Location"] == "/signup"
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = 'ada@example.com'") == 0
    for table in ("threads", "messages", "api_tokens"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert not await app.redis.fast.exists(fragment)
    assert not await _logged_in(user) and not await _logged_in(other)
    assert (await app.test_client().get("/api/v1/threads", headers=bearer(token))).status_code == 401
    assert await _logged_in(bystander)
    assert (await Actions(app.test_client()).login("ada@example.com", PASSWORD)).status_code == 400


async def test_password_checks_are_rate_limited(app, user, db):
    app.config["CHATAPP_LOGIN_ATTEMPTS_PER_15_MIN"] = 2
    for _ in range(2):
        await user.post("/settings/delete-account", {"password": "guess"})
    # Even the right password is refused once the limit is reached.
    response = await user.post("/settings/delete-account", {"password": PASSWORD})
    assert response.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM users") == 1
