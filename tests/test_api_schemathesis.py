"""Property-based run of schemathesis over /openapi.json against a live server: never a 5xx.

Every operation gets generated valid input (with random ids, and with ids of real resources so
validation and the handlers behind it run) and generated invalid input. Each answer must not
be a server error and must match the document: documented status, content type and schema.
"""
from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

from apihelp import bearer, token_in

EXAMPLES = 6  # per operation and mode: the whole run stays well under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(base_url: str, auth: dict[str, str], real_ids: dict[str, str]) -> list[str]:
    """Run every operation in every mode; return the failures (empty when all passed)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        variants = [(schemathesis.GenerationMode.POSITIVE, None), (schemathesis.GenerationMode.NEGATIVE, None)]
        params = {name: real_ids[name] for name in real_ids if "{" + name + "}" in operation.path}
        if params and operation.method.upper() != "DELETE":  # keep the real thread for the others
            variants.append((schemathesis.GenerationMode.POSITIVE, params))
        for mode, path_parameters in variants:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def run(case) -> None:
                response = case.call(base_url=base_url, headers=auth, timeout=15)
                checks = CHECKS + ([negative_data_rejection] if mode is schemathesis.GenerationMode.NEGATIVE else [])
                try:
                    case.validate_response(response, checks=checks, headers=auth)
                except Exception as exc:  # schemathesis raises one failure or a group of them
                    failures.append(f"{operation.label} [{mode.value}] {response.status_code}: {exc}"[:2000])

            run()
    return failures


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(live, web_user, model_server):
    response = await web_user.client.post("/settings/tokens", data={"name": "fuzz"},
                                          headers={"X-CSRF-Token": web_user.token})
    auth = bearer(token_in(response.text))
    client = web_user.client
    thread = (await client.post("/api/v1/threads", json={"title": "fuzzed"}, headers=auth)).json()
    sent = (await client.post(f"/api/v1/threads/{thread['id']}/messages",
                              json={"content": "hello", "stream": False}, headers=auth)).json()
    real_ids = {"thread_id": thread["id"], "message_id": sent["answer"]["id"]}
    failures = await asyncio.to_thread(_fuzz, live.url, auth, real_ids)
    assert not failures, "\n\n".join(failures[:5])
