"""Meta-tests over app.url_map: every state-changing route checks CSRF; pages need a login."""
from __future__ import annotations

import uuid

import pytest

from chatapp import create_app

PUBLIC = {"health.healthz", "health.readyz", "auth.login", "auth.signup", "auth.logout", "static",
          "api_docs.openapi", "api_docs.docs"}  # the API's documentation holds no data
PUBLIC |= {"share.public"}  # share links are read without an account (the unguessable id is the key)
SAFE = {"GET", "HEAD", "OPTIONS"}


def _rules(app):
    return [r for r in app.url_map.iter_rules() if r.endpoint != "static"]


def _path(rule) -> str:
    values = {name: str(uuid.uuid4()) for name in rule.arguments}
    return rule.build(values, append_unknown=False)[1]


def _unsafe_routes():
    app = create_app({"SECRET_KEY": "x"})
    return [(rule.endpoint, method, _path(rule)) for rule in _rules(app)
            for method in sorted(rule.methods - SAFE)]


@pytest.mark.parametrize(("endpoint", "method", "path"), _unsafe_routes())
async def test_state_changing_route_rejects_missing_wrong_and_foreign_csrf(app, actions, endpoint, method, path):
    view = app.view_functions[endpoint]
    if getattr(view, "csrf_exempt", False):
        pytest.skip("bearer-token API route: no cookies, no CSRF")
    await actions.signup(f"{uuid.uuid4().hex[:8]}@example.com", "password123")
    own = await actions.csrf("/")
    missing = await actions.client.open(path, method=method, form={"content": "x", "title": "x"})
    wrong = await actions.client.open(path, method=method, form={"csrf_token": own[:-2] + "xx", "content": "x"})
    cross_site = await actions.client.open(path, method=method, form={"csrf_token": own, "content": "x"},
                                           headers={"Origin": "https://evil.example"})
    assert missing.status_code == 403, endpoint
    assert wrong.status_code == 403, endpoint
    assert cross_site.status_code == 403, endpoint
    # Another session's token is refused too.
    other = app.test_client()
    from actions import Actions

    other_actions = Actions(other)
    await other_actions.signup(f"{uuid.uuid4().hex[:8]}@example.com", "password123")
    foreign = await other_actions.csrf("/")
    stolen = await actions.client.open(path, method=method, form={"csrf_token": foreign, "content": "x"})
    assert stolen.status_code == 403, endpoint


def test_every_non_public_view_requires_login():
    app = create_app({"SECRET_KEY": "x"})
    unguarded = [
        rule.endpoint for rule in _rules(app)
        if rule.endpoint not in PUBLIC
        and not getattr(app.view_functions[rule.endpoint], "login_required", False)
        and not getattr(app.view_functions[rule.endpoint], "csrf_exempt", False)
    ]
    assert not unguarded, f"views without @login_required: {unguarded}"


def test_no_get_route_is_named_like_an_action():
    app = create_app({"SECRET_KEY": "x"})
    verbs = ("delete", "rename", "stop", "regenerate", "edit", "switch", "logout", "restore", "share")
    for rule in _rules(app):
        if "GET" in rule.methods:
            assert not any(rule.rule.rstrip("/").endswith("/" + v) for v in verbs), rule.rule


@pytest.mark.parametrize(("endpoint", "method", "path"), [
    (endpoint, method, path) for endpoint, method, path in _unsafe_routes()
    if getattr(create_app({"SECRET_KEY": "x"}).view_functions[endpoint], "csrf_exempt", False)])
async def test_csrf_exempt_routes_ignore_the_session_cookie(app, actions, endpoint, method, path):
    # Exempt from CSRF only because they read bearer tokens, never cookies: a cross-site page
    # can make the browser send cookies, so a cookie alone must get 401, not access.
    await actions.signup(f"{uuid.uuid4().hex[:8]}@example.com", "password123")
    response = await actions.client.open(path, method=method, json={"content": "x", "title": "x"},
                                         headers={"Origin": "https://evil.example"})
    assert response.status_code == 401, endpoint
