"""Export: whole message trees as JSON (importable again) or Markdown, one thread or all of them."""
from __future__ import annotations

import json
import re
import unicodedata
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from quart import Quart

from .models import transfer
from .models.messages import Message
from .models.threads import Thread

FORMAT = "chatapp-export"
VERSION = 1
BATCH = 100  # threads per query while streaming "export everything"
ROLE_NAMES = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_NAMES = {"stopped": "Stopped", "interrupted": "Interrupted", "error": "Error", "streaming": "Still streaming"}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value else None


def message_document(m: Message) -> dict[str, Any]:
    """One message as exported: ids, tree link, text, outcome, usage, times."""
    return {
        "id": str(m.id), "parent_id": str(m.parent_id) if m.parent_id else None, "role": m.role,
        "content": m.content, "status": m.status, "model": m.model,
        "usage": {"prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
                  "estimated": m.usage_estimated},
        "finish_reason": m.finish_reason, "duration_ms": m.duration_ms, "error": m.error,
        "created_at": _iso(m.created_at), "finished_at": _iso(m.finished_at),
    }


def thread_document(thread: Thread, messages: list[Message], folder: str | None) -> dict[str, Any]:
    """One thread with every message of its tree (not only the visible branch)."""
    return {
        "id": str(thread.id), "title": thread.title, "model": thread.model, "archived": thread.archived_at is not None,
        "system_prompt": thread.system_prompt, "params": thread.params, "pinned": thread.pinned,
        "folder": folder, "created_at": _iso(thread.created_at), "updated_at": _iso(thread.updated_at),
        "current_leaf_id": str(thread.current_leaf_id) if thread.current_leaf_id else None,
        "messages": [message_document(m) for m in messages],
    }


def _head() -> str:
    exported_at = datetime.now(timezone.utc).isoformat()
    return f'{{"format": "{FORMAT}", "version": {VERSION}, "exported_at": "{exported_at}", "threads": ['


def thread_json(thread: Thread, messages: list[Message], folder: str | None) -> str:
    """A complete export file holding one thread (the same format as "export everything")."""
    return _head() + json.dumps(thread_document(thread, messages, folder), ensure_ascii=False) + "]}\n"


def _archived_message(row: dict[str, Any]) -> Message:
    """A message from an archive line (PostgreSQL's row_to_json of a messages row)."""
    data = {name: row.get(name) for name in Message.__dataclass_fields__ if name != "sibling_ids"}
    for name in ("id", "thread_id", "parent_id"):
        data[name] = uuid.UUID(data[name]) if data[name] else None
    for name in ("created_at", "finished_at"):
        data[name] = datetime.fromisoformat(data[name]) if data[name] else None
    data["usage_estimated"] = bool(data["usage_estimated"])
    return Message(**data)


async def archived_tree(app: Quart, thread: Thread) -> tuple[list[Message], uuid.UUID | None]:
    """An archived thread's messages and leaf, read from cold storage without restoring it.

    Raises ArchiveError or StorageError when the copy cannot be read or verified.
    """
    from .archive import verified_payload
    from .storage import archive_store

    async with archive_store(app.config) as store:
        payload = verified_payload(await store.get(thread.archive_key), thread.archive_key)
    header, *lines = payload.decode().splitlines()
    leaf = json.loads(header).get("current_leaf_id")
    messages = sorted((_archived_message(json.loads(line)) for line in lines), key=lambda m: (m.created_at, m.id))
    return messages, uuid.UUID(leaf) if leaf else None


async def load_tree(app: Quart, thread: Thread) -> tuple[Thread, list[Message]]:
    """A thread's whole tree: from PostgreSQL, or for an archived thread from its archived copy
    (the thread returned then carries the archived leaf)."""
    if thread.archived_at is not None and thread.archive_key:
        messages, leaf = await archived_tree(app, thread)
        return replace(thread, current_leaf_id=leaf), messages
    async with app.db.acquire() as conn:
        return thread, await transfer.select_tree(conn, thread.id)


async def stream_everything(app: Quart, user_id: uuid.UUID) -> AsyncIterator[bytes]:
    """Every thread of a user as one JSON document, produced batch by batch.

    A pool connection is held only for each batch's two queries, never for the whole download,
    and at most one batch is in memory. Threads created during the download may be missed.
    """
    yield _head().encode()
    after, first = None, True
    while True:
        async with app.db.acquire() as conn:
            batch = await transfer.select_thread_batch(conn, user_id, after, BATCH)
            trees = await transfer.select_trees(conn, [t.id for t, _ in batch]) if batch else {}
        if not batch:
            break
        parts = []
        for thread, folder in batch:
            messages = trees[thread.id]
            if thread.archived_at is not None:
                # Read from cold storage. If that fails the download breaks off (the browser shows
                # it as failed) rather than end as a valid file that silently lacks this thread.
                thread, messages = await load_tree(app, thread)
            parts.append(("" if first else ",\n") + json.dumps(
                thread_document(thread, messages, folder), ensure_ascii=False))
            first = False
        yield "".join(parts).encode()
        after = batch[-1][0].id
        if len(batch) < BATCH:
            break
    yield b"]}\n"


def _stamp(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _quote(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def branch_of(messages: list[Message], leaf_id: uuid.UUID | None) -> list[uuid.UUID]:
    """Ids of the visible branch, root first: the path from the leaf up to the root."""
    by_id = {m.id: m for m in messages}
    path: list[uuid.UUID] = []
    current = by_id.get(leaf_id) if leaf_id else None
    while current is not None and len(path) <= len(messages):  # the bound guards against cycles
        path.append(current.id)
        current = by_id.get(current.parent_id) if current.parent_id else None
    return path[::-1]


def to_markdown(thread: Thread, messages: list[Message], branch_ids: list[uuid.UUID]) -> str:
    """The conversation as Markdown: the visible branch first, then every other version."""
    by_id = {m.id: m for m in messages}
    children: dict[uuid.UUID | None, list[Message]] = {}
    for m in messages:  # already oldest first
        children.setdefault(m.parent_id, []).append(m)
    on_branch = set(branch_ids)

    def heading(m: Message, reply_note: bool) -> str:
        parts = [ROLE_NAMES.get(m.role, m.role)]
        if m.role == "assistant" and m.model:
            parts.append(m.model)
        siblings = children.get(m.parent_id, [])
        if len(siblings) > 1:
            parts.append(f"version {siblings.index(m) + 1} of {len(siblings)}")
        if reply_note and m.parent_id in by_id:
            parts.append(f"in reply to “{_quote(by_id[m.parent_id].content)}”")
        parts.append(_stamp(m.created_at))
        return "### " + " · ".join(parts)

    def block(m: Message, reply_note: bool) -> list[str]:
        lines = [heading(m, reply_note), "", m.content.rstrip() or "*(empty)*", ""]
        if m.status in STATUS_NAMES:
            lines += [f"*{STATUS_NAMES[m.status]}{': ' + m.error if m.error else ''}*", ""]
        return lines

    out = [f"# {thread.title}", "",
           f"Exported from chatapp on {_stamp(datetime.now(timezone.utc))}. "
           f"{len(messages)} message{'s' if len(messages) != 1 else ''}, {len(on_branch)} in the conversation below.", ""]
    if thread.system_prompt:
        out += ["System prompt:", "", *(f"> {line}" for line in thread.system_prompt.splitlines()), ""]
    out += ["## Conversation", ""]
    for mid in branch_ids:
        out += block(by_id[mid], reply_note=False)
    others = [m for m in messages if m.id not in on_branch]
    if others:
        out += ["## Other versions", "", "Edited questions and regenerated answers that are not in the conversation above.", ""]
        previous: uuid.UUID | None = None
        roots = [m for m in others if m.parent_id is None or m.parent_id in on_branch]
        stack = list(reversed(roots))
        while stack:  # depth first, so each version is followed by its own replies
            m = stack.pop()
            out += block(m, reply_note=m.parent_id != previous)
            previous = m.id
            stack.extend(reversed([c for c in children.get(m.id, []) if c.id not in on_branch]))
    return "\n".join(out).rstrip() + "\n"


def download_name(title: str, extension: str) -> str:
    """A safe ASCII file name from a title: letters, digits and dashes only."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60].strip("-") or "chat"
    return f"chatapp-{slug}-{datetime.now(timezone.utc):%Y%m%d}.{extension}"


def attachment(filename: str) -> str:
    """The Content-Disposition of a download (the name is already safe ASCII)."""
    return f'attachment; filename="{filename}"'
