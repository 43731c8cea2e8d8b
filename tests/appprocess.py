"""The app as a real Hypercorn process (for kill -9 and SIGTERM), configured by environment only.

tests/live.py serves the app in a thread of the test process; a signal needs a process of its
own. This runs `python -m hypercorn --config deploy/hypercorn.toml 'chatapp:create_app()'`,
like production (one worker under a master), with every setting passed as an environment
variable, in its own session so the whole process tree can be killed at once.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from chatapp.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN_TOML = ROOT / "deploy" / "hypercorn.toml"


def hypercorn_settings() -> dict[str, Any]:
    """deploy/hypercorn.toml as a dict (the grace periods the tests hold the app to)."""
    return tomllib.loads(HYPERCORN_TOML.read_text())


def env_value(value: Any) -> str:
    """A setting's value as its environment variable spells it."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def settings_env(settings: dict[str, Any]) -> dict[str, str]:
    """The process environment for these settings (only declared settings: all must be env vars)."""
    known = {s.name for s in SETTINGS}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"not expressible as environment variables: {sorted(unknown)}")
    env = {k: v for k, v in os.environ.items() if k not in known}
    env.update({k: env_value(v) for k, v in settings.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class AppProcess:
    """One app instance in its own process tree (Hypercorn master + one worker)."""

    def __init__(self, settings: dict[str, Any], log_path: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = settings_env(settings)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 60.0) -> "AppProcess":
        """Start it; return once it accepts connections."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--config", str(HYPERCORN_TOML), "--bind", f"127.0.0.1:{self.port}",
             "chatapp:create_app()"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app process exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"app process did not start:\n{self.output()}")

    def output(self) -> str:
        """What the process wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM to the master, as systemd (KillMode=mixed) and `docker stop` do."""
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process tree: the machine is gone."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its return code."""
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Clean up whatever is left (after a test, pass or fail)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.terminate()
                self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc is not None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # any worker left behind
                except (ProcessLookupError, PermissionError):
                    pass
            if self._log is not None:
                self._log.close()
