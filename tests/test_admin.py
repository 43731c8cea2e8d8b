"""Admin: only admins (404 for others), accounts with usage, disabling, signup and the model list."""
from __future__ import annotations

import uuid

import pytest
from bs4 import BeautifulSoup

from apihelp import bearer, create_token
from actions import Actions

ADMIN_POSTS = ["/admin/settings", "/admin/users/{id}/disable", "/admin/users/{id}/enable"]


@pytest.fixture
async def admin(app, user, db) -> Actions:
    """The signed-up user, made an admin (as `quart --app chatapp create-user --admin` would)."""
    await db.execute("UPDATE users SET is_admin = true WHERE email = 'ada@example.com'")
    return user


async def _member(app, email: str = "bob@example.com") -> tuple[Actions, str]:
    """Another (non-admin) account, logged in; returns it and its id."""
    member = Actions(app.test_client())
    await member.signup(email, "password123")
    async with app.db.acquire() as conn:
        user_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", email)
    return member, str(user_id)


async def test_non_admins_get_404_everywhere_and_anonymous_users_go_to_login(app, user, db):
    _, member_id = await _member(app)
    assert (await user.client.get("/admin")).status_code == 404
    for path in ADMIN_POSTS:
        response = await user.post(path.format(id=member_id), {"signup": "closed", "default_model": "x"})
        assert response.status_code == 404, path
    assert await db.fetchval("SELECT count(*) FROM app_settings") == 0
    assert await db.fetchval("SELECT count(*) FROM users WHERE disabled_at IS NOT NULL") == 0
    anonymous = await app.test_client().get("/admin")
    assert anonymous.status_code == 303 and anonymous.headers["Location"] == "/login"


async def test_admin_sees_accounts_with_their_usage(app, admin, db):
    from test_chat_actions import _finished_exchange

    member, _ = await _member(app)
    await _finished_exchange(member, db, "count these words please")
    page = await admin.client.get("/admin")
    assert page.status_code == 200
    soup = BeautifulSoup(await page.get_data(as_text=True), "html.parser")
    rows = {r.select("td")[0].get_text(" ", strip=True): [td.get_text(strip=True) for td in r.select("td")]
            for r in soup.select("tr.admin-user")}
    bob = rows["bob@example.com"]
    tokens = await db.fetchval("SELECT sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) FROM messages")
    assert bob[2:5] == ["1", "1", f"{tokens:,}"] and tokens > 0
    assert rows["ada@example.com admin"][2:5] == ["0", "0", "0"]
    # Admins find the page from the sidebar; members do not see the link.
    assert soup.select_one('a[href="/admin"]') is not None
    home = BeautifulSoup(await (await member.client.get("/")).get_data(as_text=True), "html.parser")
    assert home.select_one('a[href="/admin"]') is None


async def test_disabling_ends_sessions_and_tokens_and_enabling_lets_them_back(app, admin, db):
    member, member_id = await _member(app)
    token = await create_token(member)
    api = app.test_client()
    response = await admin.post(f"/admin/users/{member_id}/disable")
    assert response.status_code == 303
    assert (await member.client.get("/")).status_code == 303  # back to the login page
    assert (await api.get("/api/v1/threads", headers=bearer(token))).status_code == 401
    assert (await Actions(app.test_client()).login("bob@example.com", "password123")).status_code == 400
    csrf = await admin.csrf("/admin")
    enabled = await admin.client.post(f"/admin/users/{member_id}/enable", form={"csrf_token": csrf},
                                      headers={"HX-Request": "true"})
    row = await enabled.get_data(as_text=True)
    assert enabled.status_code == 200 and row.lstrip().startswith(f'<tr id="user-{member_id}"') and "Active" in row
    assert (await api.get("/api/v1/threads", headers=bearer(token))).status_code == 200
    assert (await Actions(app.test_client()).login("bob@example.com", "password123")).status_code == 303


async def test_disable_refuses_own_account_and_unknown_or_malformed_ids(app, admin, db):
    own = await db.fetchval("SELECT id FROM users WHERE email = 'ada@example.com'")
    assert (await admin.post(f"/admin/users/{own}/disable")).status_code == 400
    for user_id in ("malformed", uuid.uuid4()):
        for action in ("disable", "enable"):
            assert (await admin.post(f"/admin/users/{user_id}/{action}")).status_code == 404
    assert await db.fetchval("SELECT count(*) FROM users WHERE disabled_at IS NOT NULL") == 0


async def test_closing_signup_and_setting_models_win_over_the_environment(app, admin, db):
    response = await admin.post("/admin/settings", {"signup": "closed", "models": "test-model-2\ntest-model",
                                                    "default_model": "test-model-2", "rate_limit": "5",
                                                    "max_concurrent": "2"})
    assert response.status_code == 303
    saved = {r["key"]: r["value"] for r in await db.fetch("SELECT key, value FROM app_settings")}
    assert saved == {"CHATAPP_SIGNUP": "closed", "CHATAPP_MODELS": ["test-model-2", "test-model"],
                     "CHATAPP_DEFAULT_MODEL": "test-model-2", "CHATAPP_RATE_LIMIT_PER_MINUTE": 5,
                     "CHATAPP_MAX_CONCURRENT_GENERATIONS": 2}
    stranger = Actions(app.test_client())
    assert (await stranger.signup("new@example.com", "password123")).status_code == 403
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = 'new@example.com'") == 0
    # New threads get the admin's default model, and only listed models are offered.
    thread_id = await admin.new_thread()
    assert await db.fetchval("SELECT model FROM threads WHERE id = $1", uuid.UUID(thread_id)) == "test-model-2"
    home = BeautifulSoup(await (await admin.client.get("/")).get_data(as_text=True), "html.parser")
    assert [o["value"] for o in home.select("select[name=model] option")] == ["test-model-2", "test-model"]
    assert home.select_one("select[name=model] option[selected]")["value"] == "test-model-2"


async def test_bad_admin_settings_are_400_and_save_nothing(app, admin, db):
    good = {"signup": "open", "models": "a\nb", "default_model": "a", "rate_limit": "5", "max_concurrent": "2"}
    for change in ({"default_model": "c"}, {"signup": "maybe"}, {"rate_limit": "0"}, {"max_concurrent": "many"},
                   {"default_model": ""}, {"models": "x" * 201}):
        response = await admin.post("/admin/settings", {**good, **change})
        assert response.status_code == 400, change
        assert BeautifulSoup(await response.get_data(as_text=True), "html.parser").select_one(".field-error"), change
    assert await db.fetchval("SELECT count(*) FROM app_settings") == 0


async def test_admin_settings_with_htmx_answer_the_section(app, admin):
    csrf = await admin.csrf("/admin")
    response = await admin.client.post(
        "/admin/settings",
        form={"signup": "open", "models": "", "default_model": "test-model", "rate_limit": "20",
              "max_concurrent": "3", "csrf_token": csrf},
        headers={"HX-Request": "true", "HX-Target": "admin_settings"})
    body = await response.get_data(as_text=True)
    assert response.status_code == 200 and body.lstrip().startswith('<section id="admin_settings"')
    assert "Settings saved." in body
