"""Messages: send, the answer's SSE stream, stop, regenerate, edit and branch switching."""
from __future__ import annotations

from quart import (Blueprint, abort, current_app, g, redirect, render_template, request, stream_with_context,
                   url_for)

from .. import chat, generation, prompt, relay, sse
from ..models import exchange, messages, threads
from ..ownership import own_message, own_thread
from ..sessions import login_required
from ..templating import is_htmx, page

bp = Blueprint("messages", __name__)


async def _exchange_reply(thread: threads.Thread, shown: list[messages.Message], reload: bool = True):
    """htmx: the new message fragments (the answer's placeholder opens the stream); else the page.

    `reload=False` when the messages already carry their sibling ids.
    """
    if not is_htmx():
        return redirect(url_for("threads.show", thread_id=thread.id), 303)
    if reload:
        async with current_app.db.acquire() as conn:  # reloaded for their siblings ("< 2/2 >")
            reloaded = [await messages.select_message(conn, g.user.id, m.id) for m in shown]
        for message, fresh in zip(shown, reloaded):
            # Only the siblings: a fast answer may already be final, yet the reply must still hold
            # its placeholder (the HTTP contract); its stream then sends the final fragment at once.
            message.sibling_ids = fresh.sibling_ids if fresh is not None else message.sibling_ids
    items = await chat.render_messages(shown)
    return await page("_exchange.html", items=items, thread=thread)  # with Vary: HX-Request


@bp.post("/threads/<thread_id>/messages")
@login_required
async def send(thread_id: str):
    """Send a message (field `content`) and start its answer."""
    thread = await own_thread(thread_id)
    archived = "This conversation is archived. Restore it from its page to continue it."
    if thread.archived_at is not None:
        abort(409, archived)
    form = await request.form
    content = chat.check_content(form.get("content", ""))
    await chat.check_rate_limits(g.user.id)
    async with current_app.db.acquire() as conn:
        # One statement: the thread is locked and checked again, the archiver may have run meanwhile.
        stored = await exchange.send(conn, thread.id, content, thread.model)
    if stored is None:
        abort(409, archived)
    # The thread and branch as stored: the answer starts without reading them again.
    generation.spawn(current_app, stored.answer.id, preloaded=(thread, [prompt.Turn(*t) for t in stored.turns]))
    return await _exchange_reply(thread, [stored.question, stored.answer], reload=False)


@bp.get("/messages/<message_id>/stream")
@login_required
async def stream(message_id: str):
    """Server-Sent Events of one answer; resumes after Last-Event-ID. Never starts work."""
    message = await own_message(message_id)
    last_event_id = relay.valid_entry_id(request.headers.get("Last-Event-ID"))
    # The streaming body runs after the request's `g` is gone: keep what templates need.
    user_id, session = g.user.id, g.session

    async def render_final(preserve_body: bool = False) -> str:
        g.session = session  # its forms (Regenerate) carry this session's CSRF token
        async with current_app.db.acquire() as conn:
            final = await messages.select_message(conn, user_id, message.id)
        items = await chat.render_messages([final])
        return await render_template("_message.html", item=items[0], preserve_body=preserve_body)

    async def render_title(thread_id: str, title: str) -> str:
        return await render_template("_thread_title_oob.html", thread_id=thread_id, title=title)

    @stream_with_context
    async def body():
        if not message.streaming:  # finished: answered from PostgreSQL at once
            yield sse.encode_event(await render_final(), event="done")
            return
        reader = relay.Relay(current_app, message.id, render_final, render_title)
        async for chunk in reader.events(last_event_id, current_app.config["CHATAPP_STREAM_HEARTBEAT_SECONDS"]):
            yield chunk

    return await sse.stream_response(body())


@bp.post("/messages/<message_id>/stop")
@login_required
async def stop(message_id: str):
    """Stop an answer (works from any instance); the partial text is kept as stopped."""
    message = await own_message(message_id)
    if message.role != "assistant":
        abort(400, "Only answers can be stopped.")
    if message.streaming:
        await generation.request_stop(current_app, message.id)
    if is_htmx():
        return "", 204
    return redirect(url_for("threads.show", thread_id=message.thread_id), 303)


@bp.post("/messages/<message_id>/regenerate")
@login_required
async def regenerate(message_id: str):
    """Answer the same question again as a new sibling branch."""
    message = await own_message(message_id)
    if message.role != "assistant" or message.streaming:
        abort(400, "Only a finished answer can be regenerated.")
    thread = await own_thread(message.thread_id)
    await chat.check_rate_limits(g.user.id)
    async with current_app.db.acquire() as conn:
        async with conn.transaction():
            answer = await chat.start_answer(conn, thread, message.parent_id)
    generation.spawn(current_app, answer.id)
    return await _exchange_reply(thread, [answer])


@bp.post("/messages/<message_id>/edit")
@login_required
async def edit(message_id: str):
    """Edit a user message: a new sibling with the new text, answered afresh."""
    message = await own_message(message_id)
    if message.role != "user":
        abort(400, "Only your own messages can be edited.")
    form = await request.form
    content = chat.check_content(form.get("content", ""))
    thread = await own_thread(message.thread_id)
    await chat.check_rate_limits(g.user.id)
    async with current_app.db.acquire() as conn:
        async with conn.transaction():
            user_message, answer = await chat.start_exchange(conn, thread, content, parent_id=message.parent_id)
    generation.spawn(current_app, answer.id)
    if not is_htmx():
        return redirect(url_for("threads.show", thread_id=thread.id), 303)
    thread.current_leaf_id = answer.id
    return await _conversation(thread)


@bp.post("/messages/<message_id>/switch")
@login_required
async def switch(message_id: str):
    """Show the branch through this message (sibling navigation "< 2/3 >")."""
    message = await own_message(message_id)
    thread = await own_thread(message.thread_id)
    async with current_app.db.acquire() as conn:
        leaf = await messages.select_newest_leaf(conn, message.id)
        await conn.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", thread.id, leaf)
    if not is_htmx():
        return redirect(url_for("threads.show", thread_id=thread.id), 303)
    thread.current_leaf_id = leaf
    return await _conversation(thread)


async def _conversation(thread: threads.Thread):
    """The whole message list fragment (after a branch change)."""
    window = await chat.load_branch(thread, last=chat.PAGE_MESSAGES)
    return await page("_conversation.html", thread=thread, branch=window.items,  # with Vary: HX-Request
                      window=window)
