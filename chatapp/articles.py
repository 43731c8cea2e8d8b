"""Whole message articles (`_message.html`) for thread pages, cached in Redis with the body.

One key per message (`chat.fragment_key`) holds `<stamp>\n<start>:<end>\n<html>`: the whole
article a page shows, in which `html[start:end]` is the Markdown body (what
`chat.render_messages` needs; the body is not stored twice). The stamp is a digest of
everything the article is rendered from (text, status, usage, error, the sibling ids behind
"< 2/3 >", the templates), so a regenerate or an edit elsewhere, a stop or an error changes
it and the article is rendered again: a stale entry is never shown. A body alone is stored
with an empty stamp. The CSRF token differs per session: cached articles carry a slot that
is filled per request, so one user's sessions share the cache and no token is stored;
PostgreSQL text cannot hold NUL, so no message text contains the slot.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from jinja2 import Environment
from markupsafe import Markup, escape
from quart import current_app

from . import csrf
from .render import RENDERER_VERSION, render_markdown
from .models.messages import Message

CSRF_SLOT = "\x00csrf\x00"  # never in stored text; replaced by the session's token per request
TEMPLATE = "_message.html"
_TEMPLATES = (TEMPLATE, "_switch.html", "_csrf.html")  # what one article is made of


@dataclass
class BranchItem:
    """A message of the visible branch with its rendered body."""

    message: Message
    html: Markup


@dataclass
class Cached:
    """One message's cache entry, parsed."""

    stamp: str
    body: str
    article: str


def pack(stamp: str, body: str, article: str = "") -> str:
    """The value stored for a message: its article holding its body, or the body alone."""
    if not article:
        return f"\n0:{len(body)}\n{body}"
    return f"{stamp}\n{_span(body, article) if body else '0:0'}\n{article}"


def _span(body: str, article: str) -> str:
    """Where the body sits in its article: right after the opening tag of `id="body-…"`."""
    start = article.index(">", article.index(' id="body-')) + 1
    if not article.startswith(body, start):
        raise ValueError("the article does not hold its body where expected")
    return f"{start}:{start + len(body)}"


def parse(value: bytes) -> Cached | None:
    """A stored value, split; None for one this version cannot read."""
    try:
        stamp, span, html = value.decode().split("\n", 2)
        start, end = (int(n) for n in span.split(":"))
    except ValueError:
        return None
    return Cached(stamp, html[start:end], html if stamp else "")


@lru_cache(maxsize=8)
def _templates_digest(env: Environment) -> str:
    """A digest of the article's template sources (a deploy that changes them re-renders)."""
    sources = (env.loader.get_source(env, name)[0] for name in _TEMPLATES)
    return hashlib.blake2b("\x00".join(sources).encode(), digest_size=8).hexdigest()


def stamp(message: Message, templates: str) -> str:
    """Digest of every input of a finished message's article."""
    m = message
    fields = (str(m.id), m.role, m.status, m.model or "", str(m.prompt_tokens), str(m.completion_tokens),
              str(m.usage_estimated), m.error or "", ",".join(map(str, m.sibling_ids)), templates,
              RENDERER_VERSION, m.content)
    return hashlib.blake2b("\x00".join(fields).encode(), digest_size=16).hexdigest()


async def render_articles(shown: list[Message], key_of: Callable) -> tuple[list[BranchItem], Markup]:
    """The shown messages' articles as one block of HTML: cached ones by one MGET, the rest rendered.

    Streaming answers are rendered every time (their stream fills them in) and never stored.
    """
    store = current_app.redis
    finished = [m for m in shown if not m.streaming]
    values = await store.get_fragments([key_of(m.id) for m in finished])
    cached = {m.id: entry for m, v in zip(finished, values) if v is not None and (entry := parse(v)) is not None}
    templates = _templates_digest(current_app.jinja_env)
    items, pieces, misses = [], [], {}
    template, context = None, None
    for message in shown:
        entry = cached.get(message.id)
        current = "" if message.streaming else stamp(message, templates)
        if entry is not None and entry.stamp == current and entry.article:
            items.append(BranchItem(message, Markup(entry.body)))
            pieces.append(entry.article)
            continue
        if entry is not None:
            body = entry.body  # a finished message's text never changes: only its article did
        elif message.role == "assistant" and not message.streaming:
            body = render_markdown(message.content)
        else:
            body = ""  # user text is escaped by the template; a stream fills its answer in
        item = BranchItem(message, Markup(body))
        if template is None:
            template = current_app.jinja_env.get_template(TEMPLATE)
            context = {"csrf_token": lambda: CSRF_SLOT}
            await current_app.update_template_context(context)
        article = await template.render_async({**context, "item": item})
        items.append(item)
        pieces.append(article)
        if not message.streaming:
            try:
                misses[key_of(message.id)] = pack(current, body, article)
            except ValueError:  # a template that moved the body: keep the body alone
                misses[key_of(message.id)] = pack("", body)
    await store.set_fragments(misses)
    html = "".join(pieces).replace(CSRF_SLOT, str(escape(csrf.token())))
    return items, Markup(html)
