"""Starts what the benchmarks need and measures processes.

PostgreSQL and Redis come from tests/services.py (TEST_DATABASE_URL / TEST_REDIS_URL, or
embedded), the model server is tests/bench/bench_model.py in its own process, and the app runs
as in production: `hypercorn --config deploy/hypercorn.toml 'chatapp:create_app()'` in a
subprocess, one worker, so the RSS and CPU of the serving process can be read from outside.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx2
import psutil
import redis.asyncio as aredis

BENCH = Path(__file__).resolve().parent
TESTS = BENCH.parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

import services  # noqa: E402

BIN = Path(sys.executable).parent
HYPERCORN_CONFIG = ROOT / "deploy" / "hypercorn.toml"


def free_port() -> int:
    """A currently free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until something accepts connections on the port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM (graceful, as systemd/docker stop do), then SIGKILL after the timeout."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def rss_mib(pid: int) -> float:
    """Resident set size of one process in MiB."""
    return psutil.Process(pid).memory_info().rss / 2**20


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants, in MiB."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


class CpuMeter:
    """CPU use of one process between start() and stop(), in percent of one core."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def start(self) -> "CpuMeter":
        times = self.proc.cpu_times()
        self.cpu0, self.wall0 = times.user + times.system, time.monotonic()
        return self

    def stop(self) -> float:
        times = self.proc.cpu_times()
        wall = time.monotonic() - self.wall0
        return 100.0 * (times.user + times.system - self.cpu0) / max(wall, 1e-9)

    def seconds(self) -> float:
        """CPU seconds (user + system) used since start()."""
        times = self.proc.cpu_times()
        return times.user + times.system - self.cpu0


class Bench:
    """The running pieces of one benchmark run and how to reach them."""

    def __init__(self, quick: bool, worker_class: str = "uvloop") -> None:
        self.quick = quick
        self.worker_class = worker_class
        self.tmp = Path(tempfile.mkdtemp(prefix="chatapp-bench-", dir="/tmp"))
        self.services: services.TestServices | None = None
        self.model_proc: subprocess.Popen | None = None
        self.model_url = ""
        self.app_proc: subprocess.Popen | None = None
        self.port = 0
        self.url = ""
        self.extra_env: dict[str, str] = {}
        self.secret = secrets.token_urlsafe(24)

    # ---- services ------------------------------------------------------------------------
    def start(self) -> "Bench":
        """PostgreSQL, Redis and the model server; then the app."""
        self.services = services.start()
        asyncio.run(self._migrate())
        port = free_port()
        self.model_proc = subprocess.Popen(
            [sys.executable, str(BENCH / "bench_model.py"), "--port", str(port)],
            stdout=open(self.tmp / "model.log", "wb"), stderr=subprocess.STDOUT,
        )
        wait_for_port(port, self.model_proc)
        self.model_url = f"http://127.0.0.1:{port}/v1"
        self.start_app()
        return self

    async def _migrate(self) -> None:
        from chatapp import db

        conn = await asyncpg.connect(self.services.database_url)
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    def describe_services(self) -> str:
        """Which PostgreSQL/Redis this run uses."""
        return self.services.description if self.services else ""

    def app_env(self, **extra: str) -> dict[str, str]:
        """The environment of the app (and of its CLI commands) for this run."""
        s = self.services
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": s.database_url,
            "REDIS_URL": s.redis_url,
            "CHATAPP_REDIS_PREFIX": s.redis_prefix,
            "OPENAI_BASE_URL": self.model_url,
            "OPENAI_API_KEY": "bench-key",
            "CHATAPP_DEFAULT_MODEL": "test-model",
            "CHATAPP_MODELS": "test-model",
            "SECRET_KEY": self.secret,
            "CHATAPP_INSTANCE_DIR": str(self.tmp / "instance"),
            "CHATAPP_MODEL_RETRIES": "0",
            # Benchmarks send far faster than a person; the limits are tested elsewhere.
            "CHATAPP_RATE_LIMIT_PER_MINUTE": "1000000",
            "CHATAPP_MAX_CONCURRENT_GENERATIONS": "100000",
            # Heartbeats every second show within a short hold that each stream is alive.
            "CHATAPP_STREAM_HEARTBEAT_SECONDS": "1",
            # Stalled answers keep streams open; they must not time out during the hold.
            "CHATAPP_MODEL_READ_TIMEOUT": "900",
        })
        env.update(self.extra_env)
        env.update(extra)
        return env

    # ---- the app -------------------------------------------------------------------------
    def start_app(self) -> None:
        """(Re)start the app under Hypercorn with the production config, on a fresh port."""
        self.stop_app()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [str(BIN / "hypercorn")]
        if HYPERCORN_CONFIG.exists():
            command += ["--config", str(HYPERCORN_CONFIG)]
        else:  # the deploy folder is not there: the same essentials as flags
            command += ["--workers", "1", "--graceful-timeout", "10"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--worker-class", self.worker_class,
                    "chatapp:create_app()"]
        log = open(self.tmp / f"app-{self.port}.log", "wb")
        self.app_proc = subprocess.Popen(command, cwd=ROOT, env=self.app_env(), stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.app_proc)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx2.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the app never became ready")

    @property
    def worker_pid(self) -> int:
        """The Hypercorn worker that serves requests (a spawned child of the master)."""
        master = psutil.Process(self.app_proc.pid)
        for child in master.children(recursive=True):
            cmdline = " ".join(child.cmdline())
            if "resource_tracker" not in cmdline:
                return child.pid
        return master.pid  # workers = 0: the master serves

    def app_rss_mib(self) -> float:
        """RSS of the serving worker."""
        return rss_mib(self.worker_pid)

    def stop_app(self) -> None:
        """Stop the app gracefully."""
        stop_process(self.app_proc)
        self.app_proc = None

    def stop(self) -> None:
        """Stop everything this run started and drop its database and keys."""
        self.stop_app()
        stop_process(self.model_proc, 10)
        if self.services is not None:
            services.stop(self.services)

    # ---- direct access -------------------------------------------------------------------
    async def connect_db(self) -> asyncpg.Connection:
        """A direct connection to this run's database (with the app's JSON codecs)."""
        from chatapp.db import _init_connection

        conn = await asyncpg.connect(self.services.database_url)
        await _init_connection(conn)
        return conn

    def redis_client(self) -> aredis.Redis:
        """A Redis client for this run's Redis."""
        return aredis.Redis.from_url(self.services.redis_url)

    async def delete_keys(self, pattern: str) -> int:
        """Delete this run's keys matching `<prefix><pattern>`; return how many."""
        client = self.redis_client()
        try:
            keys = [k async for k in client.scan_iter(match=self.services.redis_prefix + pattern, count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i:i + 1000])
            return len(keys)
        finally:
            await client.aclose()
