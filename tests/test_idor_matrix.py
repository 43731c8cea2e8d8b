"""Ownership over app.url_map: every route that takes an id answers another user 404 and changes nothing.

One row per route in tests/route_matrix.py says how to create the owner's object and which
request to make. A route with an id and no row fails here, naming the route, so new routes
cannot skip the check. Malformed ids answer 404, never 500.
"""
from __future__ import annotations

import uuid

import pytest

from chatapp import create_app
from route_matrix import (ROWS, folder, id_rules, is_api, methods, missing_row_message, new_world, running_app,
                          settle)
from statecheck import StateCheck

RULES = id_rules(create_app({"SECRET_KEY": "x"}))
MALFORMED = [
    "not-an-id", "1", "0", "-1", "00000000-0000-0000-0000-000000000000", str(uuid.uuid4()),
    "01890a5d-ac96-774b-bcce-b302099a8057x", "' OR '1'='1", "1;DROP TABLE users", "%00", "a%00b", "%2e%2e",
    "x" * 500, "\uff11\uff12\uff13", "null", "undefined", "%7B%7D", "%E2%80%AE", "chatapp_not_a_token",
]


def _ids(rule) -> str:
    return f"{rule.endpoint} {rule.rule}"


@pytest.fixture(scope="module")
async def world(test_services, model_server, tmp_path_factory):
    """One app and its three users for the module (signing up hashes passwords: slow)."""
    async with running_app(test_services, model_server, str(tmp_path_factory.mktemp("idor"))) as app:
        yield await new_world(app)


@pytest.fixture
async def state(test_services, world):
    """Snapshots of this run's database and Redis keys, taken once background work settled."""
    check = StateCheck(test_services.database_url, test_services.redis_url, test_services.redis_prefix)
    original = check.snapshot

    async def settled_snapshot():
        await settle(world.app)
        return await original()

    check.snapshot = settled_snapshot
    return check


def _path(rule, values: dict[str, str]) -> str:
    return rule.build(values, append_unknown=False)[1]


async def _call(world, who, rule, row, values: dict[str, str], method: str):
    api = is_api(world.app, rule.endpoint)
    return await who.request(method, _path(rule, values), bearer=api, form=row.form, json=row.json)


def test_no_row_is_left_for_a_route_that_no_longer_exists():
    endpoints = {rule.endpoint for rule in RULES}
    assert not set(ROWS) - endpoints, f"rows for routes that are gone: {sorted(set(ROWS) - endpoints)}"


@pytest.mark.parametrize("rule", RULES, ids=_ids)
async def test_another_users_id_answers_404_and_changes_nothing(world, rule, state):
    row = ROWS.get(rule.endpoint)
    if row is None:
        pytest.fail(missing_row_message(rule))
    values = await row.make(world)
    for method in methods(rule):
        before = await state.snapshot()
        response = await _call(world, world.b, rule, row, values, method)
        assert response.status_code == row.other_status, (
            f"{method} {rule.rule} as another user: {response.status_code} (expected {row.other_status}"
            f"{'; ' + row.why if row.why else ''})")
        if row.other_status == 404:
            assert StateCheck.diff(before, await state.snapshot()) == [], f"{method} {rule.rule} changed state"
        # The row is right: the party allowed to use the route gets through with the same values.
        allowed = world.admin if row.allowed == "admin" else world.a
        own = await _call(world, allowed, rule, row, values, method)
        assert own.status_code not in (401, 403, 404) and own.status_code < 500, (
            f"{method} {rule.rule} as its {row.allowed}: {own.status_code}; fix the row in tests/route_matrix.py")


@pytest.mark.parametrize("rule", RULES, ids=_ids)
async def test_malformed_ids_answer_404_never_500(world, rule):
    row = ROWS.get(rule.endpoint)
    if row is None:
        pytest.fail(missing_row_message(rule))
    allowed = world.admin if row.allowed == "admin" else world.a
    wrong = []
    for value in MALFORMED:
        values = {name: value for name in rule.arguments}
        for method in methods(rule):
            response = await _call(world, allowed, rule, row, values, method)
            if response.status_code != 404:
                wrong.append(f"{method} {value[:40]!r}: {response.status_code}")
    assert not wrong, f"{rule.rule}: {wrong}"


async def test_admin_area_is_404_for_ordinary_users(world):
    for rule in world.app.url_map.iter_rules():
        if rule.rule.startswith("/admin"):
            for method in methods(rule):
                path = _path(rule, {name: str(world.a.id) for name in rule.arguments})
                response = await world.b.request(method, path, form={})
                assert response.status_code == 404, f"{method} {rule.rule}: {response.status_code}"


async def test_moving_a_thread_into_another_users_folder_is_404(world, state):
    # Ids in form fields are checked like ids in paths.
    theirs = (await folder(world))["folder_id"]  # made by the owner, `a`
    response = await world.b.request("POST", "/threads")
    mine = response.headers["Location"].rsplit("/", 1)[-1]
    before = await state.snapshot()
    response = await world.b.request("POST", f"/threads/{mine}/folder", form={"folder_id": theirs})
    assert response.status_code == 404
    assert StateCheck.diff(before, await state.snapshot()) == []
