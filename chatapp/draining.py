"""End open answer streams as soon as the server starts shutting down, not after its grace period.

At SIGTERM Hypercorn stops accepting, then waits `graceful_timeout` for open connections
before it runs the app's shutdown (where Quart sets `app.shutdown_event`). An SSE stream never
finishes by itself, so without help every open stream would hold the instance for the whole
grace period and then be cut. Hypercorn's master tells its worker to stop through a
multiprocessing Event; this watcher notices it and sets `app.shutdown_event` early. The stream
hub then ends every reader (the browser reconnects, through the load balancer, to an instance
that is not stopping, and resumes from Last-Event-ID), Hypercorn's wait ends at once, and the
generations still running get Quart's BACKGROUND_TASK_SHUTDOWN_TIMEOUT to finish before they
are recorded as `interrupted`.

The Event is found on the worker's Process object (`_kwargs["shutdown_event"]`, a private
attribute of multiprocessing, stable since Python 3.4). Where it is missing (Hypercorn with
`workers = 0`, `quart run`, tests serving in a thread) nothing changes: streams then end when
the server cancels them.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
from typing import Any

from quart import Quart

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1


def server_shutdown_event() -> Any | None:
    """The Event Hypercorn's master sets at SIGTERM when this process is its worker, else None."""
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None) or {}
    event = kwargs.get("shutdown_event") if isinstance(kwargs, dict) else None
    return event if callable(getattr(event, "is_set", None)) else None


async def watch(app: Quart) -> None:
    """Set app.shutdown_event as soon as the server begins to shut down (a background task)."""
    event = server_shutdown_event()
    if event is None:
        return
    while not app.shutdown_event.is_set():
        if event.is_set():
            log.info("server shutting down: ending open streams so browsers resume on another instance")
            app.shutdown_event.set()
            return
        try:
            await asyncio.wait_for(app.shutdown_event.wait(), POLL_SECONDS)
        except TimeoutError:
            pass


def init_app(app: Quart) -> None:
    """Start the watcher with the app."""

    @app.before_serving
    async def _start() -> None:
        app.add_background_task(watch, app)
