"""The current user's objects by id: anything else (another user's, unknown, malformed) is 404.

One place for the rule, so every view answers an id it must not reveal the same way.
"""
from __future__ import annotations

from quart import abort, current_app, g

from .models import messages, threads


async def own_thread(thread_id: object, not_found: str | None = None) -> threads.Thread:
    """The user's thread, or abort 404."""
    async with current_app.db.acquire() as conn:
        thread = await threads.select_thread(conn, g.user.id, thread_id)
    if thread is None:
        abort(404, not_found) if not_found else abort(404)
    return thread


async def own_message(message_id: object, not_found: str | None = None) -> messages.Message:
    """The user's message (with its siblings), or abort 404."""
    async with current_app.db.acquire() as conn:
        message = await messages.select_message(conn, g.user.id, message_id)
    if message is None:
        abort(404, not_found) if not_found else abort(404)
    return message
