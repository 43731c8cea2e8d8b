"""Full-text search over one user's messages (PostgreSQL tsvector, GIN index)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from markupsafe import Markup, escape

# ts_headline wraps matches in these private-use characters; the snippet is escaped as plain
# text and only then are they turned into <mark> tags, so message text can never inject markup.
START, STOP = "\ue000", "\ue001"
HEADLINE_OPTIONS = (
    f"StartSel=\"{START}\", StopSel=\"{STOP}\", MaxWords=28, MinWords=12, ShortWord=2, "
    "MaxFragments=2, FragmentDelimiter=\" … \""
)


@dataclass
class Hit:
    """One matching message."""

    message_id: uuid.UUID
    thread_id: uuid.UUID
    thread_title: str
    role: str
    created_at: datetime
    snippet: str  # plain text with START/STOP around matches
    on_branch: bool = True

    @property
    def snippet_html(self) -> Markup:
        """The snippet escaped, with its matches in <mark>."""
        return highlight(self.snippet)


def highlight(snippet: str) -> Markup:
    """Escape a ts_headline snippet and turn its markers into balanced <mark> tags."""
    out: list[str] = []
    open_ = False
    for part in _split_markers(snippet):
        if part == START:
            if not open_:
                out.append("<mark>")
                open_ = True
        elif part == STOP:
            if open_:
                out.append("</mark>")
                open_ = False
        else:
            out.append(str(escape(part)))
    if open_:
        out.append("</mark>")
    return Markup("".join(out))


def with_markers(snippet: str, start: str, stop: str) -> str:
    """The snippet as plain text, its matches between `start` and `stop` (the JSON API's form)."""
    return snippet.replace(START, start).replace(STOP, stop)


def _split_markers(text: str) -> list[str]:
    parts, current = [], []
    for char in text:
        if char in (START, STOP):
            if current:
                parts.append("".join(current))
                current = []
            parts.append(char)
        else:
            current.append(char)
    if current:
        parts.append("".join(current))
    return parts


async def search_messages(
    conn: asyncpg.Connection, user_id: uuid.UUID, query: str, *, limit: int = 50, offset: int = 0,
    branches: bool = True,
) -> list[Hit]:
    """The user's messages matching a web-search style query, best first.

    With `branches=False` every hit keeps `on_branch=True` and no branch is walked (the API
    does not report versions).

    websearch_to_tsquery never fails on user input (quotes, OR, -word, stray symbols). The inner
    query ranks and limits; ts_headline runs only on the rows returned, on text stripped of our
    marker characters so that only its own markers become <mark>.
    """
    rows = await conn.fetch(
        """WITH q AS (SELECT websearch_to_tsquery('simple', $2) AS query),
           hits AS (
               SELECT m.id, m.thread_id, m.role, m.created_at, m.content, t.title,
                      ts_rank(m.search, q.query) AS rank
               FROM messages m JOIN threads t ON t.id = m.thread_id, q
               WHERE t.user_id = $1 AND m.search @@ q.query
               ORDER BY rank DESC, m.created_at DESC, m.id DESC
               LIMIT $3 OFFSET $4
           )
           SELECT h.id AS message_id, h.thread_id, h.title AS thread_title, h.role, h.created_at,
                  ts_headline('simple', translate(h.content, $6, ''), q.query, $5) AS snippet
           FROM hits h, q ORDER BY h.rank DESC, h.created_at DESC, h.id DESC""",
        user_id, query, limit, offset, HEADLINE_OPTIONS, START + STOP,
    )
    hits = [Hit(**row) for row in rows]
    if hits and branches:
        visible = await _on_current_branches(conn, user_id, hits)
        for hit in hits:
            hit.on_branch = hit.message_id in visible
    return hits


async def _on_current_branches(conn: asyncpg.Connection, user_id: uuid.UUID, hits: list[Hit]) -> set[uuid.UUID]:
    """Which of the hits are on their thread's visible branch (the others are older versions)."""
    rows = await conn.fetch(
        """WITH RECURSIVE branch AS (
               SELECT m.id, m.parent_id FROM threads t JOIN messages m ON m.id = t.current_leaf_id
               WHERE t.id = ANY($2::uuid[]) AND t.user_id = $1
               UNION ALL
               SELECT p.id, p.parent_id FROM messages p JOIN branch b ON p.id = b.parent_id
           )
           SELECT id FROM branch WHERE id = ANY($3::uuid[])""",
        user_id, list({h.thread_id for h in hits}), [h.message_id for h in hits],
    )
    return {row["id"] for row in rows}
