"""The zero-configuration start: embedded PostgreSQL and Redis, started and stopped by the app."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from live import free_port

ROOT = Path(__file__).resolve().parent.parent


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SECRET_KEY"}}
    env["CHATAPP_LOCAL_MODEL"] = "off"
    env.update(extra)
    return env


def _daemons(instance: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(instance) in cmdline and ("postgres" in cmdline or "redis-server" in cmdline):
            found.append(proc)
    return found


def test_app_starts_embedded_services_and_stops_them(tmp_path_factory):
    instance = Path(tempfile.mkdtemp(prefix="ca-emb-", dir="/tmp"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "quart", "--app", "chatapp", "run", "--port", str(port)],
        cwd=ROOT, env=_clean_env(CHATAPP_INSTANCE_DIR=str(instance)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, proc.stdout.read().decode()[-2000:] if proc.poll() is not None else "no answer"
        assert '"postgres":"ok"' in body and '"redis":"ok"' in body
        assert (instance / "pgdata" / "PG_VERSION").exists() and (instance / "secret_key").exists()
        assert _daemons(instance), "embedded daemons should run while the app runs"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while _daemons(instance) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _daemons(instance), "embedded PostgreSQL/Redis were left running"


def test_embedded_failure_is_one_clear_line():
    long_dir = "/tmp/" + "x" * 100
    proc = subprocess.run(
        [sys.executable, "-m", "quart", "--app", "chatapp", "run", "--port", str(free_port())],
        cwd=ROOT, env=_clean_env(CHATAPP_INSTANCE_DIR=long_dir), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("chatapp:")]
    assert len(errors) == 1 and "CHATAPP_INSTANCE_DIR" in errors[0] and "DATABASE_URL" in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr
