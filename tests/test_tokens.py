"""API tokens: created in settings and shown once, stored hashed, listed, revoked, tied to the account."""
from __future__ import annotations

import hashlib
import uuid

from bs4 import BeautifulSoup

from apihelp import ApiClient, bearer, create_token, token_in
from actions import Actions


async def test_token_is_shown_once_and_only_its_digest_is_stored(app, user, db):
    response = await user.post("/settings/tokens", {"name": "  laptop   script "})
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    token = token_in(await response.get_data(as_text=True))
    assert token.startswith("chatapp_") and len(token) > 40
    row = await db.fetchrow("SELECT name, token_hash, hint, last_used_at FROM api_tokens")
    assert row["name"] == "laptop script" and row["last_used_at"] is None
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token.startswith(row["hint"]) and len(row["hint"]) < 16
    dump = " ".join(str(v) for r in await db.fetch("SELECT * FROM api_tokens") for v in r.values())
    assert token not in dump
    # The settings page lists it by name and hint, never the token itself.
    page = await (await user.client.get("/settings")).get_data(as_text=True)
    assert "laptop script" in page and row["hint"] in page and token not in page


async def test_htmx_creation_answers_the_tokens_section_only(app, user):
    token = await user.csrf("/settings")
    response = await user.client.post("/settings/tokens", form={"name": "ci", "csrf_token": token},
                                      headers={"HX-Request": "true", "HX-Target": "tokens"})
    assert response.status_code == 201
    body = await response.get_data(as_text=True)
    assert "<html" not in body and body.lstrip().startswith('<section id="tokens"')
    assert token_in(body)


async def test_blank_or_long_name_is_400_and_creates_nothing(app, user, db):
    for name in ("   ", "x" * 101):
        response = await user.post("/settings/tokens", {"name": name})
        assert response.status_code == 400
        soup = BeautifulSoup(await response.get_data(as_text=True), "html.parser")
        assert soup.select_one("#token_name-error") is not None
    assert await db.fetchval("SELECT count(*) FROM api_tokens") == 0


async def test_token_works_records_last_use_and_stops_after_revoke(app, user, db):
    token = await create_token(user)
    api = ApiClient(app.test_client(), token)
    assert (await api.get("/api/v1/threads")).status_code == 200
    assert await db.fetchval("SELECT last_used_at FROM api_tokens") is not None
    token_id = await db.fetchval("SELECT id FROM api_tokens")
    revoked = await user.post(f"/settings/tokens/{token_id}/revoke")
    assert revoked.status_code == 303
    response = await api.get("/api/v1/threads")
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    page = await (await user.client.get("/settings")).get_data(as_text=True)
    assert "No tokens yet." in page


async def test_revoke_with_htmx_answers_the_updated_section(app, user, db):
    await create_token(user, "one")
    await create_token(user, "two")
    token_id = await db.fetchval("SELECT id FROM api_tokens WHERE name = 'one'")
    csrf = await user.csrf("/settings")
    response = await user.client.post(f"/settings/tokens/{token_id}/revoke", form={"csrf_token": csrf},
                                      headers={"HX-Request": "true", "HX-Target": "tokens"})
    body = await response.get_data(as_text=True)
    assert response.status_code == 200 and "Token revoked." in body
    assert ">two<" in body and ">one<" not in body


async def test_revoking_another_users_or_a_malformed_token_id_is_404(app, user, db):
    other = Actions(app.test_client())
    await other.signup("other@example.com", "password123")
    theirs = await create_token(other)
    their_id = await db.fetchval("SELECT id FROM api_tokens")
    for token_id in (their_id, "malformed", uuid.uuid4()):
        response = await user.post(f"/settings/tokens/{token_id}/revoke")
        assert response.status_code == 404, token_id
    assert (await app.test_client().get("/api/v1/threads", headers=bearer(theirs))).status_code == 200


async def test_token_of_a_disabled_or_deleted_account_stops_on_the_next_request(app, user, db):
    token = await create_token(user)
    client = app.test_client()
    assert (await client.get("/api/v1/threads", headers=bearer(token))).status_code == 200
    await db.execute("UPDATE users SET disabled_at = now()")
    assert (await client.get("/api/v1/threads", headers=bearer(token))).status_code == 401
    await db.execute("UPDATE users SET disabled_at = NULL")
    assert (await client.get("/api/v1/threads", headers=bearer(token))).status_code == 200
    await db.execute("DELETE FROM users")
    assert (await client.get("/api/v1/threads", headers=bearer(token))).status_code == 401


async def test_each_user_sees_only_their_own_tokens(app, user, db):
    await create_token(user, "mine")
    other = Actions(app.test_client())
    await other.signup("other@example.com", "password123")
    await create_token(other, "theirs")
    page = await (await user.client.get("/settings")).get_data(as_text=True)
    assert "mine" in page and "theirs" not in page
