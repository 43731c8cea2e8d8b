"""Accounts: signup, login, logout, sessions and their cookies."""
from __future__ import annotations

import pytest

from chatapp.models import users


async def test_signup_logs_in_and_lands_home(app, actions):
    response = await actions.signup("Ada@Example.com", "correct horse battery")
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    home = await actions.client.get("/")
    assert home.status_code == 200
    assert "Ada@Example.com" in await home.get_data(as_text=True)
    async with app.db.acquire() as conn:
        stored = await users.select_user_by_email(conn, "ada@example.com")
    assert stored is not None and stored.password_hash.startswith("$argon2id$")


async def test_session_cookie_is_httponly_lax_and_opaque(app, actions):
    response = await actions.signup()
    cookie = response.headers.get("Set-Cookie")
    assert "chatapp_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    sid = cookie.split("chatapp_session=")[1].split(";")[0]
    assert len(sid) >= 32  # 256 bits of randomness, url-safe encoded


async def test_session_id_rotates_at_login(app, actions):
    await actions.signup("bob@example.com", "password123")
    await actions.post("/logout")
    token_page = await actions.client.get("/login")
    before = actions.client.cookie_jar
    anonymous = [c.value for c in before if "chatapp_session" in c.name]
    response = await actions.login("bob@example.com", "password123")
    assert response.status_code == 303
    after = [c.value for c in actions.client.cookie_jar if "chatapp_session" in c.name]
    assert anonymous and after and anonymous[0] != after[0]
    assert token_page.status_code == 200


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-email", "password123", "Enter a valid email address."),
        ("ok@example.com", "short", "Use at least 8 characters."),
        ("", "", "Enter a valid email address."),
    ],
)
async def test_signup_validates_input(app, actions, email, password, message):
    response = await actions.signup(email, password)
    assert response.status_code == 400
    assert message in await response.get_data(as_text=True)
    async with app.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_email_is_unique_case_insensitively(app, actions, client):
    await actions.signup("carol@example.com", "password123")
    await actions.post("/logout")
    response = await actions.signup("CAROL@example.com", "password456")
    assert response.status_code == 400
    assert "already exists" in await response.get_data(as_text=True)


async def test_wrong_credentials_get_one_generic_message(app, actions):
    await actions.signup("dan@example.com", "password123")
    await actions.post("/logout")
    wrong_password = await actions.login("dan@example.com", "wrong-password")
    unknown_email = await actions.login("nobody@example.com", "password123")
    assert wrong_password.status_code == unknown_email.status_code == 400
    assert "Wrong email or password." in await wrong_password.get_data(as_text=True)
    assert "Wrong email or password." in await unknown_email.get_data(as_text=True)


async def test_login_attempts_are_rate_limited_per_email(app, actions):
    app.config["CHATAPP_LOGIN_ATTEMPTS_PER_15_MIN"] = 3
    await actions.signup("eve@example.com", "password123")
    await actions.post("/logout")
    for _ in range(3):
        assert (await actions.login("eve@example.com", "nope-nope")).status_code == 400
    blocked = await actions.login("eve@example.com", "password123")
    assert blocked.status_code == 429
    assert "Too many failed attempts" in await blocked.get_data(as_text=True)


async def test_logout_ends_the_session(app, actions):
    await actions.signup()
    assert (await actions.client.get("/")).status_code == 200
    response = await actions.post("/logout")
    assert response.status_code == 303
    home = await actions.client.get("/")
    assert home.status_code == 303 and home.headers["Location"] == "/login"


async def test_anonymous_pages_redirect_to_login(app, client):
    for path in ("/", "/threads/00000000-0000-7000-8000-000000000000"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["Location"] == "/login"


async def test_closed_signup_refuses_new_accounts(app, actions):
    app.config["CHATAPP_SIGNUP"] = "closed"
    response = await actions.client.get("/signup")
    assert response.status_code == 403
    assert "Signup is closed" in await response.get_data(as_text=True)


async def test_disabled_user_loses_session_on_next_request(app, actions):
    await actions.signup("fay@example.com", "password123")
    async with app.db.acquire() as conn:
        user = await users.select_user_by_email(conn, "fay@example.com")
        await users.update_disabled(conn, user.id, True)
    response = await actions.client.get("/")
    assert response.status_code == 303


def test_create_user_command(clean_database, runner):
    result = runner.invoke(args=["create-user", "admin@example.com", "--admin", "--password", "password123"])
    assert result.exit_code == 0, result.output
    admin = clean_database.fetchrow("SELECT is_admin FROM users WHERE email = 'admin@example.com'")
    assert admin is not None and admin["is_admin"]
    again = runner.invoke(args=["create-user", "ADMIN@example.com", "--password", "password123"])
    assert again.exit_code == 1 and "already exists" in again.output


async def test_behind_trusted_https_proxy_cookie_is_secure_host_prefixed(live_factory):
    import httpx2

    server = live_factory(CHATAPP_TRUSTED_PROXIES=["127.0.0.1/32"])  # the proxy middleware is ASGI: real HTTP
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    async with httpx2.AsyncClient(base_url=server.url) as client:
        page = await client.get("/signup", headers=headers)
        assert page.headers["strict-transport-security"].startswith("max-age=")
        cookie = page.headers["set-cookie"]
        assert cookie.startswith("__Host-chatapp_session=") and "Secure" in cookie and "Path=/" in cookie
        plain = await client.get("/signup")  # same proxy, plain http: no HSTS, ordinary cookie
        assert "strict-transport-security" not in plain.headers


async def test_untrusted_forwarded_headers_are_ignored(app, client):
    page = await client.get("/signup", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in page.headers
    assert page.headers["Set-Cookie"].startswith("chatapp_session=")


async def _session_keys(app) -> list[bytes]:
    redis = app.redis.fast
    return [key async for key in redis.scan_iter(match=app.redis.key("sess", "*"))]


async def test_each_visit_pushes_a_logged_in_session_forward_but_not_an_anonymous_one(app, actions):
    redis = app.redis.fast
    await actions.client.get("/login")  # an anonymous session (for the form's CSRF token)
    (anonymous,) = await _session_keys(app)
    anonymous_ttl = await redis.ttl(anonymous)
    await redis.expire(anonymous, 100)
    await actions.client.get("/login")
    assert await redis.ttl(anonymous) <= 100 < anonymous_ttl  # not extended
    await actions.signup()
    await redis.delete(anonymous)
    (logged_in,) = await _session_keys(app)
    await redis.expire(logged_in, 100)
    assert (await actions.client.get("/")).status_code == 200
    days = app.config["CHATAPP_SESSION_DAYS"]
    assert await redis.ttl(logged_in) > days * 86400 - 60
