"""Security headers on every response: pages, fragments, SSE, JSON, static files, redirects and errors.

A walk over app.url_map requests every route with every method (as a logged-in user, with
the CSRF token, with valid and unknown ids) and checks each answer; then each kind of error
(400 401 403 404 405 413 429 500) is provoked on purpose. HSTS appears only over https (a
trusted proxy's X-Forwarded-Proto), and STATIC_URL's origin joins the CSP when set.
"""
from __future__ import annotations

import uuid

import httpx2
import pytest
from quart import abort

from chatapp import create_app
from actions import Actions
from live import LiveServer
from route_matrix import ROWS, exchange, is_api, methods, new_person, new_world, running_app, settings

REFERRER_POLICIES = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}


def csp_directives(value: str) -> dict[str, list[str]]:
    """{directive: sources} of a Content-Security-Policy header."""
    parsed = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            parsed[words[0].lower()] = words[1:]
    return parsed


def header_problems(headers, https: bool = False, static_origin: str | None = None) -> list[str]:
    """What is missing or wrong in one response's security headers."""
    problems = []
    csp = headers.get("Content-Security-Policy")
    if not csp:
        return ["no Content-Security-Policy"]
    d = csp_directives(csp)
    script = d.get("script-src", d.get("default-src"))
    if script is None:
        problems.append("no script-src or default-src")
    elif {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"} & set(script):
        problems.append(f"script-src too open: {script}")
    expected = {"object-src": ["'none'"], "base-uri": ["'none'"], "frame-ancestors": ["'none'"],
                "form-action": ["'self'"]}
    for name, sources in expected.items():
        if d.get(name) != sources:
            problems.append(f"{name} is {d.get(name)}, expected {sources}")
    images = {"'self'", "data:"} | ({static_origin} if static_origin else set())
    if set(d.get("img-src", [])) != images:
        problems.append(f"img-src is {d.get('img-src')}, expected {sorted(images)}")
    if static_origin and static_origin not in d.get("script-src", []):
        problems.append(f"script-src lacks the static origin {static_origin}")
    if headers.get("X-Content-Type-Options") != "nosniff":
        problems.append(f"X-Content-Type-Options: {headers.get('X-Content-Type-Options')}")
    if headers.get("Referrer-Policy") not in REFERRER_POLICIES:
        problems.append(f"Referrer-Policy: {headers.get('Referrer-Policy')}")
    hsts = headers.get("Strict-Transport-Security")
    if https and not (hsts and hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 31536000):
        problems.append(f"over https without a year of HSTS: {hsts}")
    if not https and hsts:
        problems.append("HSTS over plain http")
    return problems


@pytest.fixture(scope="module")
async def world(test_services, model_server, tmp_path_factory):
    """One app and its users for the module."""
    async with running_app(test_services, model_server, str(tmp_path_factory.mktemp("headers"))) as app:
        w = await new_world(app)
        await exchange(w)
        yield w


def _rules():
    app = create_app({"SECRET_KEY": "x"})
    return sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint))


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: f"{r.endpoint} {r.rule}")
async def test_every_route_answers_with_the_security_headers(world, rule):
    row = ROWS.get(rule.endpoint)
    admin_only = rule.rule.startswith("/admin") or (row is not None and row.allowed == "admin")
    api = is_api(world.app, rule.endpoint)
    variants: list[dict[str, str]] = [{}]
    if rule.endpoint == "static":
        variants = [{"filename": "app.css"}, {"filename": "missing.css"}]
    elif rule.arguments:
        assert row is not None, f"{rule.rule} has no row in tests/route_matrix.py (see test_idor_matrix)"
        variants = [await row.make(world), {n: str(uuid.uuid4()) for n in rule.arguments},
                    {n: "not-an-id" for n in rule.arguments}]
    seen = []
    for values in variants:
        path = rule.build(values, append_unknown=False)[1]
        for method in [*methods(rule), "OPTIONS"]:
            # Account-changing routes without an id (logout, password, delete) get a fresh user each.
            if admin_only:
                who = world.admin
            elif method == "POST" and not rule.arguments and not api:
                who = await new_person(world.app, f"h-{uuid.uuid4().hex[:8]}@example.com")
            else:
                who = world.a
            form = row.form if row else {}
            response = await who.request(method, path, bearer=api, form=form, json=row.json if row else None)
            await response.get_data()
            seen.append(f"{method} {path} {response.status_code}")
            problems = header_problems(response.headers)
            assert not problems, f"{method} {path} answered {response.status_code}: {problems}"
    assert seen


async def test_each_kind_of_error_carries_the_headers(world):
    a, thread_id = world.a, (await exchange(world))["thread_id"]
    anonymous = world.app.test_client()
    cases = {
        400: await a.request("POST", f"/threads/{thread_id}/rename", form={"title": ""}),
        401: await anonymous.get("/api/v1/threads"),
        403: await a.actions.client.post("/threads", form={"csrf_token": "wrong"}),
        404: await a.request("GET", f"/threads/{uuid.uuid4()}"),
        405: await a.request("GET", f"/threads/{thread_id}/rename"),
        413: await a.request("POST", f"/threads/{thread_id}/messages",
                             form={"content": "x" * (world.app.config["CHATAPP_MAX_BODY_BYTES"] + 10)}),
    }
    saved = world.app.config["CHATAPP_LOGIN_ATTEMPTS_PER_15_MIN"]
    world.app.config["CHATAPP_LOGIN_ATTEMPTS_PER_15_MIN"] = 1
    try:
        guest = Actions(world.app.test_client())
        await guest.login(a.email, "not the password")  # the one failure allowed
        cases[429] = await guest.login(a.email, "not the password")
    finally:
        world.app.config["CHATAPP_LOGIN_ATTEMPTS_PER_15_MIN"] = saved
    for status, response in cases.items():
        assert response.status_code == status, (status, response.status_code)
        assert not header_problems(response.headers), (status, header_problems(response.headers))


async def test_a_crash_answers_500_with_the_headers(test_services, model_server, tmp_path):
    app = create_app(settings(test_services, model_server, str(tmp_path)))

    @app.get("/__crash")
    async def crash():
        raise RuntimeError("boom")

    @app.get("/__abort")
    async def aborts():
        abort(503, "Down for a moment.")

    async with app.test_app():
        client = app.test_client()
        for path, status in (("/__crash", 500), ("/__abort", 503)):
            for headers in ({}, {"HX-Request": "true"}, {"Accept": "application/json"}):
                response = await client.get(path, headers=headers)
                assert response.status_code == status
                assert not header_problems(response.headers), (path, headers, header_problems(response.headers))
                assert "boom" not in await response.get_data(as_text=True)


async def test_redirects_static_files_json_and_streams_carry_the_headers(world):
    anonymous = world.app.test_client()
    message_id = (await exchange(world))["message_id"]
    responses = {
        "redirect": await anonymous.get("/"),
        "static": await anonymous.get("/static/app.css"),
        "json": await anonymous.get("/healthz"),
        "api json": await world.a.request("GET", "/api/v1/threads", bearer=True),
        "sse": await world.a.request("GET", f"/messages/{message_id}/stream"),
        "fragment": await world.a.request("GET", "/settings", headers={"HX-Request": "true", "HX-Target": "tokens"}),
    }
    assert responses["redirect"].status_code == 303
    assert responses["sse"].headers["Content-Type"].startswith("text/event-stream")
    for kind, response in responses.items():
        assert not header_problems(response.headers), (kind, header_problems(response.headers))


async def test_static_url_origin_joins_the_csp(test_services, model_server, tmp_path):
    app = create_app(settings(test_services, model_server, str(tmp_path), STATIC_URL="https://cdn.example.net/assets/"))
    async with app.test_app():
        client = app.test_client()
        for path in ("/login", "/healthz", "/static/app.css", "/nowhere", "/"):
            response = await client.get(path)
            problems = header_problems(response.headers, static_origin="https://cdn.example.net")
            assert not problems, (path, response.status_code, problems)


async def test_hsts_on_every_kind_of_answer_over_https_behind_a_trusted_proxy(world, test_services, model_server,
                                                                             tmp_path):
    # A second instance on the same database and Redis, behind "the load balancer" at 127.0.0.1.
    server = LiveServer(settings(test_services, model_server, str(tmp_path),
                                 CHATAPP_TRUSTED_PROXIES=["127.0.0.1/32"])).start()
    message_id = (await exchange(world))["message_id"]
    sid = next(c.value for c in world.a.actions.client.cookie_jar if c.name == "chatapp_session")
    paths = ["/", "/login", "/static/app.css", "/healthz", f"/threads/{uuid.uuid4()}",
             f"/messages/{message_id}/stream", "/settings", "/threads/x/rename"]
    try:
        async with httpx2.AsyncClient(base_url=server.url, cookies={"chatapp_session": sid}) as client:
            for https in (True, False):
                forwarded = {"X-Forwarded-Proto": "https" if https else "http", "X-Forwarded-For": "203.0.113.9"}
                for path in paths:
                    response = await client.get(path, headers=forwarded)
                    problems = header_problems(response.headers, https=https)
                    assert not problems, (path, https, response.status_code, problems)
                post = await client.post("/threads", headers=forwarded)  # no CSRF token: 403
                assert post.status_code == 403 and not header_problems(post.headers, https=https)
    finally:
        server.stop()


def test_the_header_check_rejects_weak_headers():
    from chatapp.security import content_security_policy

    good = {"Content-Security-Policy": content_security_policy(None), "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin"}
    assert header_problems(good) == []
    weak_csp = good | {"Content-Security-Policy": good["Content-Security-Policy"].replace(
        "script-src 'self'", "script-src 'self' 'unsafe-inline'")}
    assert header_problems(weak_csp)
    assert header_problems(good, https=True)  # no HSTS over https
    assert header_problems(good | {"Strict-Transport-Security": "max-age=63072000"})  # HSTS over http
    assert header_problems({k: v for k, v in good.items() if k != "Referrer-Policy"})
    assert header_problems(good, static_origin="https://cdn.example.net")
