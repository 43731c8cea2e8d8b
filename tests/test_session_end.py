"""Sessions end when they should, on the very next request, for every copy of the cookie.

Logout ends this session (a copied cookie is dead too); "log out everywhere" ends every
session; a password change ends every other session and every API token (the browser that
changed it goes on with a fresh session id); an admin disabling an account, or deleting it,
ends every session and every API token. Login never adopts a session id chosen by someone else.
"""
from __future__ import annotations

import hashlib
import hmac

from actions import Actions
from route_matrix import PASSWORD, new_person

NEW_PASSWORD = "a brand new passphrase"


def _cookie(actions: Actions) -> str:
    return next(c.value for c in actions.client.cookie_jar if c.name == "chatapp_session")


async def _with_cookie(app, value: str):
    """GET / with only this session cookie (what a thief holding a copy would do)."""
    client = app.test_client()
    return await client.get("/", headers={"Cookie": f"chatapp_session={value}"})


async def _logged_in(app, value: str) -> bool:
    response = await _with_cookie(app, value)
    assert response.status_code in (200, 303), response.status_code
    return response.status_code == 200


async def _api_works(app, token: str) -> bool:
    response = await app.test_client().get("/api/v1/threads", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 401), response.status_code
    return response.status_code == 200


async def _second_session(app, person) -> Actions:
    """The same account logged in from another browser."""
    other = Actions(app.test_client())
    assert (await other.login(person.email, PASSWORD)).status_code == 303
    return other


async def test_logout_ends_the_session_for_every_copy_of_the_cookie(app):
    person = await new_person(app, "leave@example.com")
    copied = _cookie(person.actions)
    assert await _logged_in(app, copied)
    response = await person.request("POST", "/logout")
    assert response.status_code == 303
    assert not await _logged_in(app, copied)
    # The old CSRF token went with the session.
    refused = await app.test_client().post("/threads", headers={"Cookie": f"chatapp_session={copied}",
                                                                "X-CSRF-Token": person.csrf})
    assert refused.status_code == 403


async def test_logout_everywhere_ends_every_session(app):
    person = await new_person(app, "everywhere@example.com")
    laptop = await _second_session(app, person)
    sessions = [_cookie(person.actions), _cookie(laptop)]
    assert all([await _logged_in(app, s) for s in sessions])
    response = await person.request("POST", "/settings/logout-everywhere")
    assert response.status_code == 303
    assert not any([await _logged_in(app, s) for s in sessions])
    # API tokens are not sessions: scripts keep working (revoke them in Settings).
    assert await _api_works(app, person.api_token)


async def test_password_change_ends_other_sessions_and_every_api_token(app):
    person = await new_person(app, "rotate@example.com")
    laptop = await _second_session(app, person)
    before, other = _cookie(person.actions), _cookie(laptop)
    response = await person.request("POST", "/settings/password",
                                    form={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert response.status_code == 303
    assert not await _logged_in(app, other)
    assert not await _api_works(app, person.api_token)
    # This browser stays in, under a new id; its old id is dead.
    after = _cookie(person.actions)
    assert after.split(".")[0] != before.split(".")[0]
    assert await _logged_in(app, after) and not await _logged_in(app, before)
    assert (await Actions(app.test_client()).login(person.email, PASSWORD)).status_code == 400
    assert (await Actions(app.test_client()).login(person.email, NEW_PASSWORD)).status_code == 303


async def test_a_wrong_current_password_changes_nothing(app):
    person = await new_person(app, "keep@example.com")
    response = await person.request("POST", "/settings/password",
                                    form={"current_password": "not it", "new_password": NEW_PASSWORD})
    assert response.status_code == 400
    assert await _logged_in(app, _cookie(person.actions)) and await _api_works(app, person.api_token)


async def test_admin_disable_ends_every_session_and_api_token(app):
    admin = await new_person(app, "boss@example.com", admin=True)
    person = await new_person(app, "gone@example.com")
    laptop = await _second_session(app, person)
    sessions = [_cookie(person.actions), _cookie(laptop)]
    response = await admin.request("POST", f"/admin/users/{person.id}/disable")
    assert response.status_code == 303
    assert not any([await _logged_in(app, s) for s in sessions])
    assert not await _api_works(app, person.api_token)
    assert (await Actions(app.test_client()).login(person.email, PASSWORD)).status_code == 400
    # Enabling again lets the person log in anew; the ended sessions stay ended.
    assert (await admin.request("POST", f"/admin/users/{person.id}/enable")).status_code == 303
    assert not any([await _logged_in(app, s) for s in sessions])
    assert (await Actions(app.test_client()).login(person.email, PASSWORD)).status_code == 303


async def test_deleting_the_account_ends_every_session_and_api_token(app):
    person = await new_person(app, "bye@example.com")
    laptop = await _second_session(app, person)
    sessions = [_cookie(person.actions), _cookie(laptop)]
    response = await person.request("POST", "/settings/delete-account", form={"password": PASSWORD})
    assert response.status_code == 303
    assert not any([await _logged_in(app, s) for s in sessions])
    assert not await _api_works(app, person.api_token)


async def test_login_never_adopts_a_session_id_chosen_by_someone_else(app, test_services):
    await new_person(app, "fixed@example.com")
    victim = Actions(app.test_client())
    planted = "attacker-chosen-session-id-0123456789abcdef"
    victim.client.set_cookie("localhost", "chatapp_session", planted)
    assert _cookie(victim) == planted
    await victim.client.get("/login")
    anonymous = _cookie(victim)  # the pre-login session (the planted id is unknown, so a new one)
    assert anonymous != planted
    assert (await victim.login("fixed@example.com", PASSWORD)).status_code == 303
    logged_in = _cookie(victim)
    assert logged_in.split(".")[0] not in (planted, anonymous)
    # The pre-login session is gone from Redis, not merely replaced in this browser.
    digest = hmac.new(app.config["SECRET_KEY"].encode(), anonymous.encode(), hashlib.sha256).hexdigest()
    assert not await app.redis.fast.exists(app.redis.key("sess", digest))
    assert not await _logged_in(app, planted) and not await _logged_in(app, anonymous)
