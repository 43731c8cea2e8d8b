"""Import: our own export files and ChatGPT's conversations.json, all or nothing.

A file is parsed and checked completely into plans (plain Python objects) before anything is
written; then every thread and message is inserted in one transaction with new ids, owned by
the importing user. Any problem answers 400 with what is wrong and where.
"""
from __future__ import annotations

import io
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

import asyncpg

from .exporter import FORMAT, VERSION
from .ids import uuid7
from .models import transfer
from .models.folders import MAX_NAME_CHARS
from .models.messages import FINAL_STATUSES
from .models.threads import MAX_TITLE_CHARS

ROLES = ("system", "user", "assistant")
IMPORTED_TITLE = "Imported chat"


class ImportProblem(ValueError):
    """A file that cannot be imported; the message says what is wrong, for the user."""


@dataclass
class PlannedMessage:
    """A message to insert; `key` and `parent_key` are the file's ids, replaced on insert."""

    key: str
    parent_key: str | None
    role: str
    content: str
    created_at: datetime
    status: str = "complete"
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_estimated: bool = False
    finish_reason: str | None = None
    duration_ms: int | None = None
    error: str | None = None
    finished_at: datetime | None = None


@dataclass
class PlannedThread:
    """A thread to insert, its messages ordered parents first."""

    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[PlannedMessage]
    current_key: str | None
    model: str | None = None
    system_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    pinned: bool = False
    folder: str | None = None


@dataclass
class ImportPlan:
    """Everything a file holds, checked; `skipped` counts conversations with nothing to import."""

    threads: list[PlannedThread]
    source: str
    skipped: int = 0


def read_file(stream: IO[bytes]) -> ImportPlan:
    """Parse and check an uploaded file (blocking: run it in a worker thread)."""
    if stream.read(4) == b"PK\x03\x04":
        raise ImportProblem("This is a zip file. ChatGPT's export is one: unzip it and choose the "
                            "conversations.json inside.")
    stream.seek(0)
    try:
        document = json.load(io.TextIOWrapper(stream, encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise ImportProblem("The file is not UTF-8 text, so it is not a JSON export.") from None
    except json.JSONDecodeError as exc:
        raise ImportProblem(f"The file is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    except RecursionError:
        raise ImportProblem("The file nests too deeply to be an export.") from None
    if isinstance(document, dict) and document.get("format") == FORMAT:
        return ImportPlan(from_chatapp(document), "chatapp")
    if isinstance(document, list) or (isinstance(document, dict) and "mapping" in document):
        from .import_chatgpt import from_chatgpt

        threads, skipped = from_chatgpt(document if isinstance(document, list) else [document])
        return ImportPlan(threads, "ChatGPT", skipped)
    raise ImportProblem("This is neither a chatapp export (.json) nor ChatGPT's conversations.json.")


def clean_text(value: Any, where: str, name: str, *, optional: bool = False) -> str | None:
    """A string field made storable: PostgreSQL text holds no NUL and no lone surrogates."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ImportProblem(f"{where}: {name} must be text.")
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def clean_title(value: Any, fallback: str = IMPORTED_TITLE) -> str:
    """A thread title: one line, at most MAX_TITLE_CHARS, never blank."""
    text = " ".join(value.split()) if isinstance(value, str) else ""
    text = clean_text(text, "title", "title") or ""
    return (text[: MAX_TITLE_CHARS - 1] + "…" if len(text) > MAX_TITLE_CHARS else text) or fallback


def parse_time(value: Any, where: str, name: str) -> datetime | None:
    """An ISO 8601 timestamp (naive ones are taken as UTC), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ImportProblem(f"{where}: {name} must be an ISO 8601 timestamp.")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise ImportProblem(f"{where}: {name} “{value[:40]}” is not an ISO 8601 timestamp.") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def parse_epoch(value: Any, where: str, name: str) -> datetime | None:
    """Seconds since 1970 (ChatGPT's create_time), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ImportProblem(f"{where}: {name} must be a number of seconds since 1970.")
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ImportProblem(f"{where}: {name} {value} is not a plausible time.") from None


def tree_order(messages: list[PlannedMessage], where: str) -> list[PlannedMessage]:
    """Messages parents first (depth first, siblings in file order); refuses unknown parents and cycles."""
    by_key = {m.key: m for m in messages}
    children: dict[str | None, list[PlannedMessage]] = {}
    for m in messages:
        if m.parent_key is not None and m.parent_key not in by_key:
            raise ImportProblem(f"{where}, message {m.key}: its parent {m.parent_key} is not in the file.")
        children.setdefault(m.parent_key, []).append(m)
    ordered: list[PlannedMessage] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        m = stack.pop()
        ordered.append(m)
        stack.extend(reversed(children.get(m.key, [])))
    if len(ordered) != len(messages):
        seen = {m.key for m in ordered}
        stray = next(m for m in messages if m.key not in seen)
        raise ImportProblem(f"{where}, message {stray.key}: its parents form a loop.")
    return ordered


def from_chatapp(document: dict[str, Any]) -> list[PlannedThread]:
    """Plans from our own export format (one thread or everything)."""
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ImportProblem("The export has no valid format version.")
    if version > VERSION:
        raise ImportProblem(f"This export was made by a newer chatapp (format version {version}); update this server first.")
    threads = document.get("threads")
    if not isinstance(threads, list):
        raise ImportProblem('The export has no "threads" list.')
    if not threads:
        raise ImportProblem("The export holds no conversations.")
    return [_chatapp_thread(raw, n) for n, raw in enumerate(threads, 1)]


def _int(value: Any, where: str, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ImportProblem(f"{where}: {name} must be a whole number.")
    return value


def _chatapp_message(raw: Any, thread_where: str, index: int, fallback_time: datetime) -> PlannedMessage:
    if not isinstance(raw, dict):
        raise ImportProblem(f"{thread_where}, message {index} is not an object.")
    key = raw.get("id")
    if not isinstance(key, str) or not key:
        raise ImportProblem(f"{thread_where}, message {index} has no id.")
    where = f"{thread_where}, message {key}"
    parent = raw.get("parent_id")
    if parent is not None and not isinstance(parent, str):
        raise ImportProblem(f"{where}: parent_id must be an id or null.")
    role = raw.get("role")
    if role not in ROLES:
        raise ImportProblem(f"{where}: role must be one of {', '.join(ROLES)}.")
    status = raw.get("status", "complete")
    if status == "streaming":  # nothing will ever finish it here
        status = "interrupted"
    if status not in FINAL_STATUSES:
        raise ImportProblem(f"{where}: status must be one of {', '.join(FINAL_STATUSES)}.")
    usage = raw.get("usage") or {}
    if not isinstance(usage, dict):
        raise ImportProblem(f"{where}: usage must be an object.")
    return PlannedMessage(
        key=key, parent_key=parent, role=role, content=clean_text(raw.get("content", ""), where, "content"),
        created_at=parse_time(raw.get("created_at"), where, "created_at") or fallback_time, status=status,
        model=clean_text(raw.get("model"), where, "model", optional=True),
        prompt_tokens=_int(usage.get("prompt_tokens"), where, "prompt_tokens"),
        completion_tokens=_int(usage.get("completion_tokens"), where, "completion_tokens"),
        usage_estimated=bool(usage.get("estimated", False)),
        finish_reason=clean_text(raw.get("finish_reason"), where, "finish_reason", optional=True),
        duration_ms=_int(raw.get("duration_ms"), where, "duration_ms"),
        error=clean_text(raw.get("error"), where, "error", optional=True),
        finished_at=parse_time(raw.get("finished_at"), where, "finished_at"),
    )


def _known_params(params: dict[str, Any]) -> dict[str, Any]:
    """Only the sampling parameters threads use (arbitrary JSON could hold what jsonb refuses)."""
    temperature = params.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and 0 <= temperature <= 2:
        return {"temperature": float(temperature)}
    return {}


def _chatapp_thread(raw: Any, n: int) -> PlannedThread:
    if not isinstance(raw, dict):
        raise ImportProblem(f"Conversation {n} is not an object.")
    title = clean_title(raw.get("title"))
    where = f"Conversation {n} (“{title}”)"
    created = parse_time(raw.get("created_at"), where, "created_at") or datetime.now(timezone.utc)
    listed = raw.get("messages", [])
    if not isinstance(listed, list):
        raise ImportProblem(f"{where}: messages must be a list.")
    messages = [_chatapp_message(m, where, i, created) for i, m in enumerate(listed, 1)]
    keys = [m.key for m in messages]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise ImportProblem(f"{where}: message id {duplicate} appears twice.")
    current = raw.get("current_leaf_id")
    if current is not None and current not in set(keys):
        raise ImportProblem(f"{where}: current_leaf_id {current} is not one of its messages.")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise ImportProblem(f"{where}: params must be an object.")
    folder = raw.get("folder")
    folder = clean_text(" ".join(folder.split())[:MAX_NAME_CHARS], where, "folder") if isinstance(folder, str) else None
    return PlannedThread(
        title=title, created_at=created,
        updated_at=parse_time(raw.get("updated_at"), where, "updated_at") or created,
        messages=tree_order(messages, where), current_key=current,
        model=clean_text(raw.get("model"), where, "model", optional=True),
        system_prompt=clean_text(raw.get("system_prompt") or "", where, "system_prompt"),
        params=_known_params(params), pinned=raw.get("pinned") is True, folder=folder or None,
    )


async def store(conn: asyncpg.Connection, user_id: uuid.UUID, plan: ImportPlan) -> list[uuid.UUID]:
    """Insert every planned thread in one transaction, with new ids; return the new thread ids."""
    async with conn.transaction():
        folders = sorted({t.folder for t in plan.threads if t.folder})
        folder_ids = await transfer.folder_ids_by_name(conn, user_id, folders)
        thread_rows, message_rows, thread_ids = [], [], []
        for planned in plan.threads:
            thread_id = uuid7()
            thread_ids.append(thread_id)
            new_ids = {m.key: uuid7() for m in planned.messages}
            thread_rows.append((
                thread_id, user_id, planned.title, planned.model, planned.system_prompt, planned.params,
                new_ids.get(planned.current_key) if planned.current_key else None, planned.pinned,
                folder_ids.get(planned.folder) if planned.folder else None, planned.created_at, planned.updated_at,
            ))
            for m in planned.messages:
                message_rows.append((
                    new_ids[m.key], thread_id, new_ids[m.parent_key] if m.parent_key else None, m.role,
                    m.content, m.status, m.model, m.prompt_tokens, m.completion_tokens, m.usage_estimated,
                    m.finish_reason, m.duration_ms, m.error, m.created_at, m.finished_at,
                ))
        await transfer.insert_threads(conn, thread_rows)
        await transfer.insert_messages(conn, message_rows)
    return thread_ids
