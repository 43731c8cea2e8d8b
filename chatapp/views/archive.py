"""Archived threads: the page that offers "Restore", the restore itself and its status.

Restoring runs as a background task. Its state lives in Redis (`restore:<thread>`, with a
TTL so a task lost with its instance does not block a retry) and the outcome in PostgreSQL
(archived_at cleared), so the status can be polled on any instance. With htmx the status is
one self-replacing fragment polling every second ("Hypermedia Systems", chapter 7); without
JavaScript the form posts, redirects back, and the page refreshes itself while restoring.
"""
from __future__ import annotations

import asyncio
import logging
import uuid

from quart import Blueprint, Quart, current_app, g, redirect, url_for
from redis.exceptions import RedisError

from .. import archive, assets, chat, cli_archive
from ..models import threads
from ..ownership import own_thread
from ..sessions import login_required
from ..storage import NotFound, StorageError, archive_store
from ..templating import is_htmx, page

bp = Blueprint("archive", __name__)
log = logging.getLogger(__name__)
STATE_TTL_SECONDS = 120  # a restore lost with its instance blocks a retry this long at most
DAMAGED = ("The archived copy of this conversation is damaged or missing, so nothing was restored. "
           "An administrator can bring it back from a backup.")
UNREACHABLE = "The archive storage could not be reached, so nothing was restored. Try again in a moment."


def _state_key(app: Quart, thread_id: uuid.UUID) -> str:
    return app.redis.key("restore", thread_id)


async def _state(thread_id: uuid.UUID) -> tuple[str | None, str | None]:
    """("running", None), ("error", message) or (None, None) when no restore is known."""
    try:
        value = await current_app.redis.fast.get(_state_key(current_app, thread_id))
    except (RedisError, OSError):
        return None, None
    if not value:
        return None, None
    text = value.decode()
    return ("error", text[6:]) if text.startswith("error:") else ("running", None)


async def _set_state(app: Quart, thread_id: uuid.UUID, value: str | None) -> None:
    """Record (or with None forget) a restore's state; without Redis the page just shows the button."""
    key = _state_key(app, thread_id)
    try:
        if value is None:
            await app.redis.fast.delete(key)
        else:
            await app.redis.fast.set(key, value.encode(), ex=STATE_TTL_SECONDS)
    except (RedisError, OSError) as exc:
        log.warning("restore state of thread %s not recorded: %s", thread_id, exc)


async def _restore_task(app: Quart, user_id: uuid.UUID, thread_id: uuid.UUID) -> None:
    """Rehydrate one thread; failures are recorded for the status fragment, never raised."""
    try:
        async with archive_store(app.config) as store:
            async with app.db.acquire() as conn:
                await archive.rehydrate(conn, store, user_id, thread_id)
    except archive.ArchiveError as exc:
        log.error("restoring thread %s failed: %s", thread_id, exc)
        await _set_state(app, thread_id, "error:" + DAMAGED)
    except StorageError as exc:
        log.error("restoring thread %s failed: %s", thread_id, exc)
        await _set_state(app, thread_id, "error:" + (DAMAGED if isinstance(exc, NotFound) else UNREACHABLE))
    except asyncio.CancelledError:  # the instance is shutting down: let the user simply retry
        await _set_state(app, thread_id, None)
        raise
    except Exception:
        log.exception("restoring thread %s failed", thread_id)
        await _set_state(app, thread_id, "error:The restore failed unexpectedly; nothing was changed. Try again.")
    else:
        await _set_state(app, thread_id, None)


async def archived_page(thread: threads.Thread):
    """The thread page of an archived thread: what happened, and the Restore button."""
    state, error = await _state(thread.id)
    return await page("thread_archived.html", block="main", threads=await chat.sidebar_threads(),
                      thread=thread, state=state, error=error)


def _back_to_thread(thread: threads.Thread):
    """Show the (restored) conversation: HX-Location for htmx, 303 otherwise."""
    target = url_for("threads.show", thread_id=thread.id)
    if is_htmx():
        response = current_app.response_class("", status=200)
        response.headers["HX-Location"] = target
        response.vary.add("HX-Request")
        return response
    return redirect(target, 303)


async def _status_fragment(thread: threads.Thread, state: str | None, error: str | None):
    return await page("_restore_status.html", thread=thread, state=state, error=error)


@bp.post("/threads/<thread_id>/restore")
@login_required
async def restore(thread_id: str):
    """Bring an archived thread back from cold storage (in the background)."""
    thread = await own_thread(thread_id)
    if thread.archived_at is None:
        return _back_to_thread(thread)
    state, _ = await _state(thread.id)
    if state != "running":  # a second click while it runs starts nothing (a duplicate would be harmless)
        await _set_state(current_app, thread.id, "running")
        current_app.add_background_task(_restore_task, current_app._get_current_object(), g.user.id, thread.id)
    if is_htmx():
        return await _status_fragment(thread, "running", None)
    return _back_to_thread(thread)


@bp.get("/threads/<thread_id>/restore-status")
@login_required
async def restore_status(thread_id: str):
    """The restore's progress fragment (polled by htmx); the conversation once it is back."""
    thread = await own_thread(thread_id)
    if thread.archived_at is None or not is_htmx():
        return _back_to_thread(thread)
    state, error = await _state(thread.id)
    return await _status_fragment(thread, state, error)


def init_app(app: Quart) -> None:
    """The CLI commands (backup, restore, archive, publish-static) and the static manifest."""
    cli_archive.init_app(app)
    assets.init_app(app)
