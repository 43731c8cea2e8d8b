"""The offline model (#10): the managed model server's start, wait, restart, stop, and the app on it.

Process management runs a stand-in (tests/local_model_standin.py) in place of llama.cpp, as real
subprocesses on real ports. The test of the real SmolLM2 model runs only where the `local` extra
is installed; by hand:

    python3 -m pip install -e '.[local]'
    python3 -m pytest tests/test_local_model.py -k real_local_model -v -s
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx2
import psutil
import pytest
from bs4 import BeautifulSoup

import services
from chatapp import config, create_app, local_model
from chatapp.local_model import LocalModelError, ManagedServer
from chatapp.views.settings import model_backend
from live import LiveServer, WebUser
from streamtools import wait_status

STANDIN = Path(__file__).parent / "local_model_standin.py"
ROOT = Path(__file__).resolve().parent.parent


def standin(*flags: str) -> list[str]:
    """The stand-in's command line, with the placeholders ManagedServer fills in."""
    return [sys.executable, str(STANDIN), "--host", "{host}", "--port", "{port}", *flags]


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once no live process has this pid (a zombie awaiting its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def pids_in_log(log: Path, what: str) -> list[int]:
    """Pids the stand-in reported in its log ("stand-in" or "grandchild")."""
    text = log.read_text() if log.exists() else ""
    return [int(pid) for pid in re.findall(rf"{what} pid (\d+)", text)]


async def chat(base_url: str, text: str) -> str:
    """One non-streaming chat completion against an OpenAI-style base URL."""
    async with httpx2.AsyncClient(timeout=5) as client:
        response = await client.post(f"{base_url}/chat/completions",
                                     json={"model": "any", "messages": [{"role": "user", "content": text}]})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


async def until(predicate, timeout: float = 10.0) -> None:
    """Wait for a condition without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# ---- the process manager on its own -----------------------------------------------------------

async def test_start_waits_until_the_server_answers(tmp_path):
    server = ManagedServer(standin("--startup-delay", "0.8"), log_path=tmp_path / "log")
    started = time.monotonic()
    try:
        url = await server.start()
        assert time.monotonic() - started >= 0.8  # it waited for the slow start
        async with httpx2.AsyncClient() as client:  # and it answers at once, no retry needed
            models = (await client.get(f"{url}/models")).json()
        assert [m["id"] for m in models["data"]] == ["standin-model"]
        assert url == f"http://127.0.0.1:{server.port}/v1" and server.state == "running"
    finally:
        await server.stop()


async def test_a_server_that_exits_fails_start_with_its_last_words(tmp_path):
    command = [sys.executable, "-c", "import sys; print('cannot open the model file'); sys.exit(4)"]
    server = ManagedServer(command, name="test server", log_path=tmp_path / "log")
    with pytest.raises(LocalModelError, match=r"exited with code 4 .*cannot open the model file"):
        await server.start()
    assert server.state == "failed"


async def test_a_server_that_never_answers_times_out_and_is_killed(tmp_path):
    server = ManagedServer(standin("--startup-delay", "30"), start_timeout=1.0, log_path=tmp_path / "log")
    with pytest.raises(LocalModelError, match="did not answer within 1 s"):
        await server.start()
    [pid] = pids_in_log(tmp_path / "log", "stand-in")
    assert gone(pid)


async def test_start_cancelled_by_shutdown_leaves_no_process(tmp_path):
    server = ManagedServer(standin("--startup-delay", "30"), log_path=tmp_path / "log")
    starting = asyncio.create_task(server.start())
    await until(lambda: pids_in_log(tmp_path / "log", "stand-in"))
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert gone(pids_in_log(tmp_path / "log", "stand-in")[0])


async def test_a_crashed_server_is_restarted_on_the_same_port(tmp_path):
    server = ManagedServer(standin("--crash-after", "1"), backoff=0.05, log_path=tmp_path / "log")
    try:
        url = await server.start()
        first = server.pid
        assert await chat(url, "one") == "You said: one"  # then the stand-in crashes (code 3)
        await until(lambda: server.restarts == 1)
        assert await server.wait_running(10)
        assert server.pid != first and gone(first) and server.base_url == url
        assert await chat(url, "two") == "You said: two"
    finally:
        await server.stop()
    assert "crashing after 1 answers" in (tmp_path / "log").read_text()


async def test_restarts_are_bounded_and_then_it_gives_up(tmp_path):
    server = ManagedServer(standin("--die-after", "0.2"), backoff=0.05, max_restarts=2, log_path=tmp_path / "log")
    await server.start()
    await until(lambda: server.state == "failed", timeout=20)
    assert server.restarts == 2 and "gave up after 2 restarts" in server.last_error
    assert not await server.wait_running(0.5)
    assert all(gone(pid) for pid in pids_in_log(tmp_path / "log", "stand-in"))
    assert len(pids_in_log(tmp_path / "log", "stand-in")) == 3  # the first run and two restarts
    await server.stop()


async def test_stop_terminates_the_whole_process_group(tmp_path):
    server = ManagedServer(standin("--grandchild"), log_path=tmp_path / "log")
    await server.start()
    pid, [grandchild] = server.pid, pids_in_log(tmp_path / "log", "grandchild")
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 2  # SIGTERM sufficed: no wait for the kill timeout
    assert gone(pid) and gone(grandchild) and server.pid is None


async def test_stop_kills_a_server_that_ignores_sigterm(tmp_path):
    server = ManagedServer(standin("--ignore-sigterm"), stop_timeout=0.5, log_path=tmp_path / "log")
    await server.start()
    pid = server.pid
    started = time.monotonic()
    await server.stop()
    assert 0.5 <= time.monotonic() - started < 5
    assert gone(pid, timeout=0)


OWNER = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from chatapp.local_model import ManagedServer

    async def main():
        server = ManagedServer({command!r}, die_with_parent={pdeathsig})
        await server.start()
        print(server.pid, flush=True)
        if {wait}:
            await asyncio.sleep(600)
        # else: return without server.stop(), as an app crashing out of its loop would

    asyncio.run(main())
""")


def _owner(tmp_path: Path, *, pdeathsig: bool, wait: bool) -> subprocess.Popen:
    script = tmp_path / "owner.py"
    script.write_text(OWNER.format(tests=str(Path(__file__).parent), command=standin(),
                                   pdeathsig=pdeathsig, wait=wait))
    return subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_atexit_stops_a_server_its_owner_forgot(tmp_path):
    owner = _owner(tmp_path, pdeathsig=False, wait=False)
    pid = int(owner.stdout.readline())
    assert owner.wait(30) == 0
    assert gone(pid, timeout=0)  # stopped before the owner exited, not some time later


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux only")
def test_server_dies_with_an_owner_killed_by_sigkill(tmp_path):
    owner = _owner(tmp_path, pdeathsig=True, wait=True)
    pid = int(owner.stdout.readline())
    assert not gone(pid, timeout=0)
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    assert gone(pid)


# ---- the app with the stand-in as its local model ---------------------------------------------

@pytest.fixture
def overrides(overrides):
    """No provider configured, the stand-in as the local model, the default model left as shipped."""
    return {**overrides, "OPENAI_BASE_URL": None, "OPENAI_API_KEY": None, "CHATAPP_LOCAL_MODEL": "auto",
            "LOCAL_MODEL_COMMAND": standin("--model-id", local_model.MODEL_ID),
            "CHATAPP_DEFAULT_MODEL": config.BY_NAME["CHATAPP_DEFAULT_MODEL"].default}


async def _answer(user, db, content: str) -> dict:
    """Start a thread with `content`; return the finished answer's row."""
    thread_id = await user.new_thread(content)
    answer = await db.fetchval("SELECT id FROM messages WHERE role = 'assistant' AND thread_id = $1",
                               uuid.UUID(thread_id))
    row = await wait_status(db, str(answer))
    model = await db.fetchval("SELECT model FROM threads WHERE id = $1", uuid.UUID(thread_id))
    return {**dict(row), "model": model}


async def test_chat_works_end_to_end_on_the_local_backend(app, user, db, model_server):
    row = await _answer(user, db, "hello offline")
    assert row["status"] == "complete" and row["content"] == "You said: hello offline"
    assert row["usage_estimated"]  # like llama.cpp, the stand-in sent no usage block
    assert row["model"] == local_model.MODEL_ID  # the OpenAI default model was replaced
    assert model_server.count(None) == 0  # nothing went to the configured test server
    page = await (await user.client.get("/settings")).get_data(as_text=True)
    line = BeautifulSoup(page, "html.parser").select_one("#model-backend").get_text()
    assert "local SmolLM2-135M-Instruct via llama.cpp (offline)" in line


async def test_killed_local_server_is_restarted_and_the_next_answer_works(app, user, db):
    server, _ = app.extensions["local_model"]
    first = server.pid
    os.kill(first, signal.SIGKILL)
    await until(lambda: server.restarts == 1)
    assert await server.wait_running(10) and server.pid != first
    row = await _answer(user, db, "still there?")
    assert row["status"] == "complete" and row["content"] == "You said: still there?"


async def test_app_shutdown_stops_the_local_server(overrides, test_services):
    application = create_app({**overrides, "LOCAL_MODEL_COMMAND": standin("--grandchild")})
    async with application.test_app():
        server, _ = application.extensions["local_model"]
        pid = server.pid
        log = Path(overrides["CHATAPP_INSTANCE_DIR"]) / "local-model.log"
        grandchild = pids_in_log(log, "grandchild")[-1]
        assert not gone(pid, timeout=0) and not gone(grandchild, timeout=0)
    assert gone(pid, timeout=0) and gone(grandchild)


async def test_failed_start_leaves_the_app_running_without_a_model(overrides, test_services):
    failing = [sys.executable, "-c", "raise SystemExit('no model here')"]
    application = create_app({**overrides, "LOCAL_MODEL_COMMAND": failing})
    async with application.test_app():
        assert application.extensions["llm"] is None and not application.config["OPENAI_BASE_URL"]
        async with application.app_context():
            assert "not running" in model_backend()


@pytest.mark.parametrize(("extra", "backend"), [
    ({"CHATAPP_LOCAL_MODEL": "off"}, "none configured"),
    ({"OPENAI_API_KEY": "sk-test"}, "OpenAI API"),
], ids=["turned-off", "provider-configured"])
async def test_no_local_server_when_off_or_a_provider_is_set(overrides, test_services, extra, backend):
    application = create_app({**overrides, **extra})
    async with application.test_app():
        assert "local_model" not in application.extensions
        async with application.app_context():
            assert backend in model_backend()


def test_local_model_setting_accepts_auto_and_off_only():
    assert config.load({"CHATAPP_LOCAL_MODEL": "OFF"})["CHATAPP_LOCAL_MODEL"] == "off"
    assert config.load({})["CHATAPP_LOCAL_MODEL"] == "auto"
    with pytest.raises(SystemExit, match="CHATAPP_LOCAL_MODEL"):
        config.load({"CHATAPP_LOCAL_MODEL": "on please"})


def test_gguf_is_found_without_importing_its_package(tmp_path, monkeypatch):
    package = tmp_path / local_model.GGUF_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('importing would load llama_cpp')\n")
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert local_model.find_gguf() == package / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert local_model.GGUF_PACKAGE not in sys.modules


# ---- the real thing (by hand: see the module docstring) ---------------------------------------

@pytest.mark.skipif(bool(local_model.missing_modules()),
                    reason="needs the local extra: python3 -m pip install -e '.[local]'")
async def test_real_local_model_answers(overrides, test_services, db):
    await services.reset_database(test_services.database_url)
    await services.flush_prefix(test_services.redis_url, test_services.redis_prefix)
    real = {**overrides, "LOCAL_MODEL_COMMAND": None, "CHATAPP_LOCAL_MODEL_START_TIMEOUT": 120.0}
    server = await asyncio.to_thread(LiveServer(real).start, 180.0)  # binds once the model answers
    person = WebUser(server.url)
    try:
        await person.signup("real@example.com")
        started = time.monotonic()
        answer_id = await person.send(await person.new_thread(), "What is the capital of France? One sentence.")
        row = await wait_status(db, answer_id, timeout=120)
        print(f"\nreal SmolLM2 answered in {time.monotonic() - started:.1f} s: {row['content'][:200]!r}")
        assert row["status"] == "complete" and row["content"].strip(), row
        page = (await person.client.get("/settings")).text
        line = BeautifulSoup(page, "html.parser").select_one("#model-backend").get_text()
        assert "local SmolLM2-135M-Instruct via llama.cpp (offline)" in line
    finally:
        await person.close()
        await asyncio.to_thread(server.stop)
