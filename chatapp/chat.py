"""The chat service used by the views: validation, limits, starting exchanges, loading branches."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
from markupsafe import Markup
from quart import abort, current_app
from werkzeug.exceptions import TooManyRequests

from . import articles, chains, llm, ratelimit, render
from .articles import BranchItem
from .models import app_settings, messages, threads
from .models.messages import Message

THREAD_LIST_LIMIT = 50


async def sidebar_threads() -> list[threads.Thread]:
    """The current user's sidebar: pinned threads, date groups, folders (a list of threads)."""
    from quart import g

    from . import thread_list

    async with current_app.db.acquire() as conn:
        return await thread_list.sidebar(conn, g.user.id)


def check_content(content: str) -> str:
    """Abort 400 for a blank message and 413 for one over the length limit."""
    if not content or not content.strip():
        abort(400, "Type a message first.")
    if "\x00" in content:  # PostgreSQL text cannot store NUL: refuse it instead of failing with 500
        abort(400, "Messages cannot contain NUL characters.")
    limit = current_app.config["CHATAPP_MAX_MESSAGE_CHARS"]
    if len(content) > limit:
        abort(413, f"Messages can be at most {limit:,} characters; this one has {len(content):,}.")
    return content


STREAMING_DOWN = ("Answers cannot be streamed right now because the cache server is unreachable. "
                  "Your message was not sent; try again in a moment.")


async def check_rate_limits(user_id: uuid.UUID) -> None:
    """Abort 503 without Redis, 429 when the user sends too fast or runs too many answers.

    Called by every route that starts an answer, before the message is stored or the model
    called. The per-minute count doubles as the check that Redis, which carries every answer,
    is reachable (one round trip for both).
    """
    runtime = await app_settings.effective(current_app)
    concurrent = int(runtime["CHATAPP_MAX_CONCURRENT_GENERATIONS"])
    async with current_app.db.acquire() as conn:
        running = await messages.count_streaming_for_user(conn, user_id)
    if running >= concurrent:
        _too_many(f"You already have {running} answers in progress. Wait for one to finish or stop it.", 5)
    per_minute = int(runtime["CHATAPP_RATE_LIMIT_PER_MINUTE"])
    counted = await ratelimit.count("send", str(user_id), per_minute, 60)
    if counted is None:
        abort(503, STREAMING_DOWN)
    allowed, retry_after = counted
    if not allowed:
        _too_many(f"You can send {per_minute} messages a minute. Try again in {retry_after} s.", retry_after)


def _too_many(message: str, retry_after: int) -> None:
    error = TooManyRequests(message)
    error.retry_after = retry_after
    raise error


async def available_models() -> list[str]:
    """Models users may pick: the configured list, else the provider's (cached)."""
    runtime = await app_settings.effective(current_app)
    configured = list(runtime["CHATAPP_MODELS"] or [])
    if configured:
        return configured
    listed = await llm.list_models(current_app)
    default = runtime["CHATAPP_DEFAULT_MODEL"]
    return listed or [default]


async def choose_model(requested: str | None) -> str:
    """The requested model when it is offered, else the default."""
    runtime = await app_settings.effective(current_app)
    if requested:
        if requested in await available_models():
            return requested
        abort(400, "That model is not available.")
    return runtime["CHATAPP_DEFAULT_MODEL"]


async def start_exchange(
    conn: asyncpg.Connection, thread: threads.Thread, content: str, *, parent_id: uuid.UUID | None
) -> tuple[Message, Message]:
    """Insert a user message and its streaming answer and make them the current branch.

    Call inside a transaction and start the generation only after it commits, so the
    acknowledged message is in PostgreSQL before the model is called.
    """
    user_message = await messages.insert_message(conn, thread.id, parent_id, "user", content)
    answer = await start_answer(conn, thread, user_message.id)
    return user_message, answer


async def start_answer(conn: asyncpg.Connection, thread: threads.Thread, parent_id: uuid.UUID) -> Message:
    """Insert a streaming assistant message under a user message and make it current."""
    answer = await messages.insert_message(
        conn, thread.id, parent_id, "assistant", "", status="streaming", model=thread.model
    )
    await threads.update_leaf(conn, thread.id, answer.id)
    return answer


def fragment_key(message_id: uuid.UUID) -> str:
    """Redis key of a message's cached HTML (its body and, once a page showed it, its article)."""
    return current_app.redis.key("frag", render.RENDERER_VERSION, message_id)


async def render_messages(items: list[Message]) -> list[BranchItem]:
    """Rendered bodies: cached HTML via one MGET, misses rendered and stored."""
    finished = [m for m in items if m.role == "assistant" and not m.streaming]
    cached = await current_app.redis.get_fragments([fragment_key(m.id) for m in finished])
    entries = {m.id: articles.parse(value) for m, value in zip(finished, cached) if value is not None}
    by_id = {mid: entry.body for mid, entry in entries.items() if entry is not None}
    misses: dict[str, str] = {}
    result = []
    for message in items:
        if message.role != "assistant":
            html = ""  # user text is shown escaped by the template
        elif message.streaming:
            html = ""  # the stream fills it in
        elif message.id in by_id:
            html = by_id[message.id]
        else:
            html = render.render_markdown(message.content)
            misses[fragment_key(message.id)] = articles.pack("", html)
        result.append(BranchItem(message, Markup(html)))
    await current_app.redis.set_fragments(misses)
    return result


PAGE_MESSAGES = 50  # a long thread opens with its newest messages; older ones load on scroll


@dataclass
class BranchWindow:
    """The newest part of a branch that a page shows, and what lies before it."""

    items: list[BranchItem]
    earlier: int  # messages of the branch before the first shown one
    first_id: uuid.UUID | None
    following: int  # messages of the branch after the last shown one (a page loaded by `before`)
    html: Markup = Markup("")  # the shown messages' articles, with this session's CSRF token

    def next_size(self) -> int:
        """The ?n= that shows one more page (the link that works without JavaScript)."""
        return len(self.items) + self.following + PAGE_MESSAGES


async def load_branch(thread: threads.Thread, last: int | None = None,
                      before: uuid.UUID | None = None) -> BranchWindow:
    """The visible branch, rendered: the `last` messages (all when None), ending before `before`."""
    part = await _branch_part(thread, last, before)
    shown = part.messages
    items, html = await articles.render_articles(shown, fragment_key)
    return BranchWindow(items, part.upto - len(shown), shown[0].id if shown else None,
                        part.total - part.upto, html)


async def _branch_part(thread: threads.Thread, last: int | None, before: uuid.UUID | None) -> messages.BranchSlice:
    """The shown messages: by id when this process knows the branch, else by walking it."""
    leaf = thread.current_leaf_id
    known = current_app.extensions.setdefault("branch_chains", chains.Chains())
    chain = known.get(leaf) if leaf is not None else None
    async with current_app.db.acquire() as conn:
        if chain is not None:
            ids, total, upto = chains.window(chain, last, before)
            shown = await messages.select_shown(conn, thread.id, ids)
            if len(shown) == len(ids):
                return messages.BranchSlice(shown, total, upto, chain)
            known.forget(leaf)  # a message is gone: walk the branch as it is now
        part = await messages.select_branch_window(conn, thread.id, leaf, last, before)
    if leaf is not None:
        known.put(leaf, part.chain)
    return part
