"""Threads: the chat home, creating, opening, renaming and deleting conversations."""
from __future__ import annotations

import asyncio

from quart import Blueprint, abort, current_app, g, redirect, request, url_for

from .. import chat, generation, prompt, thread_tools, usersettings
from ..models import exchange, threads
from ..ids import parse_id
from ..ownership import own_thread
from ..sessions import login_required
from ..templating import is_htmx, page

bp = Blueprint("threads", __name__)


def _go(target: str):
    """Send the browser to a page: HX-Location for htmx, 303 otherwise."""
    if is_htmx():
        response = current_app.response_class("", status=200)
        response.headers["HX-Location"] = target
        return response
    return redirect(target, 303)


@bp.get("/")
@login_required
async def home():
    """The chat home: thread list and a composer that starts a new thread."""
    models = await chat.available_models()
    default_model, _ = await usersettings.new_thread_defaults(g.user)  # preselected in the composer
    return await page("home.html", threads=await chat.sidebar_threads(), thread=None, models=models,
                      default_model=default_model)


@bp.post("/threads")
@login_required
async def create():
    """Create a thread; with `content`, send it as the first message."""
    form = await request.form
    content = form.get("content", "")
    # The user's saved defaults (Settings) apply unless the composer picked a model.
    default_model, system_prompt = await usersettings.new_thread_defaults(g.user)
    model = await chat.choose_model(form.get("model")) if form.get("model") else default_model
    if content.strip():
        chat.check_content(content)
        await chat.check_rate_limits(g.user.id)
    stored = None
    async with current_app.db.acquire() as conn:
        async with conn.transaction():
            thread = await threads.insert_thread(conn, g.user.id, model=model, system_prompt=system_prompt)
            if content.strip():
                stored = await exchange.send(conn, thread.id, content, thread.model)
    if stored is not None:  # only after the commit: the message is stored before the model is called
        generation.spawn(current_app, stored.answer.id,
                         preloaded=(thread, [prompt.Turn(*t) for t in stored.turns]))
    return _go(url_for("threads.show", thread_id=thread.id))


@bp.get("/threads/<thread_id>")
@login_required
async def show(thread_id: str):
    """A thread page, or its conversation fragment for htmx."""
    thread = await own_thread(thread_id)
    if thread.archived_at is not None:  # messages are in cold storage: offer to restore them
        from .archive import archived_page

        return await archived_page(thread)
    # Without JavaScript, "Load earlier messages" asks for a bigger window with ?n=.
    last = _window_size(request.args.get("n"))
    # Independent reads on their own pool connections: the page waits for the slowest one
    # instead of the sum of ~8 round trips.
    window, sidebar, tools, models = await asyncio.gather(
        chat.load_branch(thread, last=last), chat.sidebar_threads(),
        thread_tools.load(g.user.id, thread), chat.available_models())
    return await page(
        "thread.html", block="main", threads=sidebar, thread=thread,
        branch=window.items, window=window, models=models, tools=tools,
        streaming=any(item.message.streaming for item in window.items),
    )


def _window_size(raw: str | None) -> int:
    """How many of the newest messages a thread page shows (?n=, bounded)."""
    try:
        return min(max(int(raw), 1), 10_000) if raw else chat.PAGE_MESSAGES
    except ValueError:
        abort(400, "n must be a number of messages.")


@bp.get("/threads/<thread_id>/earlier")
@login_required
async def earlier(thread_id: str):
    """The page of messages before `before` (htmx loads it when the reader scrolls up).

    Without `before`, the newest page.
    """
    thread = await own_thread(thread_id)
    raw = request.args.get("before")
    before = parse_id(raw) if raw else None
    if raw and before is None:
        abort(400, "before must be a message id.")
    window = await chat.load_branch(thread, last=chat.PAGE_MESSAGES, before=before)
    return await page("_earlier.html", thread=thread, branch=window.items, window=window)


@bp.post("/threads/<thread_id>/rename")
@login_required
async def rename(thread_id: str):
    """Rename a thread (field `title`)."""
    thread = await own_thread(thread_id)
    form = await request.form
    title = " ".join(form.get("title", "").split())
    if not title or len(title) > threads.MAX_TITLE_CHARS:
        message = "Give the thread a title." if not title else f"Keep titles under {threads.MAX_TITLE_CHARS} characters."
        abort(400, message)
    async with current_app.db.acquire() as conn:
        thread = await threads.update_title(conn, g.user.id, thread.id, title)
    if is_htmx():
        return await page("_thread_renamed.html", thread=thread)
    return redirect(url_for("threads.show", thread_id=thread.id), 303)


@bp.post("/threads/<thread_id>/delete")
@login_required
async def delete(thread_id: str):
    """Delete a thread and all of its messages."""
    thread = await own_thread(thread_id)
    async with current_app.db.acquire() as conn:
        await threads.delete_thread(conn, g.user.id, thread.id)
    return _go(url_for("threads.home"))


@bp.post("/threads/<thread_id>/settings")
@login_required
async def settings(thread_id: str):
    """Change the thread's model, system prompt and temperature."""
    thread = await own_thread(thread_id)
    form = await request.form
    model = await chat.choose_model(form.get("model") or None)
    system_prompt = form.get("system_prompt", "")
    if len(system_prompt) > 8000:
        abort(413, "Keep the system prompt under 8,000 characters.")
    params = dict(thread.params)
    raw = form.get("temperature", "").strip()
    if raw:
        try:
            temperature = float(raw)
        except ValueError:
            abort(400, "Temperature must be a number between 0 and 2.")
        if not 0 <= temperature <= 2:
            abort(400, "Temperature must be a number between 0 and 2.")
        params["temperature"] = temperature
    else:
        params.pop("temperature", None)
    async with current_app.db.acquire() as conn:
        await threads.update_settings(conn, g.user.id, thread.id, model=model,
                                      system_prompt=system_prompt, params=params)
    if is_htmx():
        return "", 204
    return redirect(url_for("threads.show", thread_id=thread.id), 303)
