"""Share links: a read-only snapshot of a thread's visible branch at /s/<random id>, revocable."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup
from quart import Blueprint, abort, current_app, g, redirect, render_template, url_for

from .. import render
from ..models import messages, shares, threads
from ..ownership import own_thread
from ..sessions import login_required
from ..templating import is_htmx, page

bp = Blueprint("share", __name__)

STATUS_NAMES = {"stopped": "Stopped", "interrupted": "Interrupted", "error": "Error"}


@dataclass
class SharedMessage:
    """One message of a snapshot, its answer rendered as sanitised Markdown."""

    role: str
    content: str
    status: str
    model: str | None
    html: Markup

    @property
    def status_name(self) -> str | None:
        """The visible status of an answer that did not complete."""
        return STATUS_NAMES.get(self.status)


async def _box(thread: threads.Thread, share: shares.Share | None):
    """htmx: the thread page's share box; browsers go back to the thread."""
    if not is_htmx():
        return redirect(url_for("threads.show", thread_id=thread.id), 303)
    return await page("_share_box.html", thread=thread, share=share)  # with Vary: HX-Request


@bp.post("/threads/<thread_id>/share")
@login_required
async def create(thread_id: str):
    """Share the visible branch as it is now (again: refresh the snapshot, same link)."""
    thread = await own_thread(thread_id)
    if thread.archived_at is not None:
        abort(400, "This conversation is archived. Restore it from its page first, then share it.")
    async with current_app.db.acquire() as conn:
        branch = await messages.select_branch(conn, thread.id, thread.current_leaf_id)
        if not branch:
            abort(400, "There is nothing to share yet: send a message first.")
        if any(m.streaming for m in branch):
            abort(400, "An answer is still being written. Share once it is done.")
        snapshot = [
            {"role": m.role, "content": m.content, "status": m.status, "model": m.model,
             "created_at": m.created_at.isoformat()}
            for m in branch
        ]
        share = await shares.upsert_share(conn, g.user.id, thread.id, thread.title, snapshot)
    return await _box(thread, share)


@bp.post("/threads/<thread_id>/share/revoke")
@login_required
async def revoke(thread_id: str):
    """Stop sharing: the link answers 404 from now on."""
    thread = await own_thread(thread_id)
    async with current_app.db.acquire() as conn:
        await shares.delete_share(conn, g.user.id, thread.id)
    return await _box(thread, None)


async def _rendered(share: shares.Share) -> Markup:
    """The snapshot's messages as HTML, cached in Redis per snapshot (a popular link renders once)."""
    stamp = int(share.created_at.timestamp() * 1_000_000)
    key = current_app.redis.key("share", render.RENDERER_VERSION, share.id, stamp)
    cached = (await current_app.redis.get_fragments([key]))[0]
    if cached is not None:
        return Markup(cached.decode())
    items = [
        SharedMessage(m.get("role", ""), m.get("content", ""), m.get("status", "complete"), m.get("model"),
                      Markup(render.render_markdown(m.get("content", ""))) if m.get("role") == "assistant" else Markup(""))
        for m in share.messages
    ]
    html = await render_template("_shared_conversation.html", items=items)
    await current_app.redis.set_fragments({key: html})
    return Markup(html)


@bp.get("/s/<share_id>")
async def public(share_id: str):
    """A shared snapshot, readable without an account; never indexed by search engines."""
    async with current_app.db.acquire() as conn:
        share = await shares.select_share(conn, share_id)
    if share is None:
        abort(404)
    shared_on: datetime = share.created_at
    response = await page("share.html", share=share, shared_on=shared_on, conversation=await _rendered(share))
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    # Revoking must take effect at once: no browser or proxy may keep a copy.
    response.headers["Cache-Control"] = "no-store"
    return response
