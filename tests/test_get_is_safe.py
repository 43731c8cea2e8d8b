"""No GET changes state: every GET route, as a user with data, leaves every table and Redis key as it was.

What may change on a read by design is listed in tests/statecheck.py (caches, rate-limit
counters, session expiry, an API token's last use). Routes with ids are reached through
the rows of tests/route_matrix.py, with the owner's real object and with an unknown id.
"""
from __future__ import annotations

import uuid

import pytest

from chatapp import create_app
from route_matrix import ROWS, answer, exchange, folder, is_api, new_world, running_app, settle, share
from statecheck import StateCheck

# Query strings that make a GET do its real work (a search that searches).
QUERY = {"search.search": "?q=hello", "api.search": "?q=hello", "api.list_threads": "?limit=5"}
STATIC_FILE = "app.css"


def _get_rules():
    app = create_app({"SECRET_KEY": "x"})
    return sorted((r for r in app.url_map.iter_rules() if "GET" in r.methods), key=lambda r: r.rule)


RULES = _get_rules()


@pytest.fixture(scope="module")
async def world(test_services, model_server, tmp_path_factory):
    """A user with a bit of everything: a finished exchange, a folder, a share link, an API token."""
    async with running_app(test_services, model_server, str(tmp_path_factory.mktemp("gets"))) as app:
        w = await new_world(app)
        await exchange(w)
        await folder(w)
        await share(w)
        await settle(app)
        yield w


@pytest.fixture
async def state(test_services, world):
    """Snapshots once no answer is being written."""
    check = StateCheck(test_services.database_url, test_services.redis_url, test_services.redis_prefix)

    async def snapshot():
        await settle(world.app)
        return await StateCheck.snapshot(check)

    check.snapshot = snapshot
    return check


async def _paths(world, rule) -> list[str]:
    """The GET paths to try: with the owner's real object and with an unknown id (or as is)."""
    if rule.endpoint == "static":
        return [rule.build({"filename": STATIC_FILE}, append_unknown=False)[1]]
    if not rule.arguments:
        return [rule.rule + QUERY.get(rule.endpoint, "")]
    row = ROWS.get(rule.endpoint)
    assert row is not None, f"{rule.rule} ({rule.endpoint}) has no row in tests/route_matrix.py ROWS"
    values = await row.make(world)
    unknown = {name: str(uuid.uuid4()) for name in rule.arguments}
    return [rule.build(values, append_unknown=False)[1], rule.build(unknown, append_unknown=False)[1]]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.endpoint} {r.rule}")
async def test_get_changes_nothing(world, rule, state):
    paths = await _paths(world, rule)
    row = ROWS.get(rule.endpoint)
    admin_only = rule.rule.startswith("/admin") or (row is not None and row.allowed == "admin")
    who = world.admin if admin_only else world.a
    for path in paths:
        before = await state.snapshot()
        response = await who.request("GET", path, bearer=is_api(world.app, rule.endpoint))
        assert response.status_code < 500, f"GET {path}: {response.status_code}"
        await response.get_data()  # a streamed body runs to its end
        changes = StateCheck.diff(before, await state.snapshot())
        assert not changes, f"GET {path} ({response.status_code}) changed state: {changes}"


async def test_reading_a_finished_answers_stream_starts_no_model_call(world, model_server, state):
    # The stream endpoint of a finished answer is answered from PostgreSQL, never by the model.
    message_id = (await answer(world))["message_id"]
    calls = model_server.count()
    before = await state.snapshot()
    for path in (f"/messages/{message_id}/stream", f"/api/v1/messages/{message_id}/stream"):
        response = await world.a.request("GET", path, bearer=path.startswith("/api"))
        assert response.status_code == 200
        await response.get_data()
    assert model_server.count() == calls
    assert StateCheck.diff(before, await state.snapshot()) == []


async def test_the_snapshot_sees_a_change(world, state):
    # The check itself can fail: a rename through POST is a change it must report.
    thread_id = (await exchange(world))["thread_id"]
    before = await state.snapshot()
    response = await world.a.request("POST", f"/threads/{thread_id}/rename", form={"title": "Seen"})
    assert response.status_code == 303
    assert any("threads" in change for change in StateCheck.diff(before, await state.snapshot()))
