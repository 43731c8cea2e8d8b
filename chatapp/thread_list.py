"""The thread list as people read it: Pinned, then date groups, paged by an opaque cursor.

Groups use the server's time zone (a user's own zone is not known without JavaScript).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import asyncpg

from .ids import parse_id
from .models import folders as folders_model
from .models import thread_list
from .models.threads import Thread

PAGE_SIZE = 50
PINNED_LIMIT = 100  # pins are few by nature; more than this are not worth a page of their own
PINNED = "Pinned"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class Row:
    """One thread of the list, with the group heading to show before it (None: same group)."""

    heading: str | None
    thread: Thread


class ThreadList(list):
    """Threads of one list page; iterating yields the threads, so plain loops keep working."""

    def __init__(self, rows: list[Row], next_cursor: str | None, *, folder: folders_model.Folder | None = None,
                 folders: list[folders_model.Folder] | None = None) -> None:
        super().__init__(row.thread for row in rows)
        self.rows = rows
        self.next_cursor = next_cursor
        self.folder = folder
        self.folders = folders or []


def group_label(updated_at: datetime, today: date) -> str:
    """Today, Yesterday, Previous 7 days, Previous 30 days or Older (server time zone)."""
    days = (today - updated_at.astimezone().date()).days
    if days <= 0:
        return "Today"
    if days == 1:
        return "Yesterday"
    if days <= 7:
        return "Previous 7 days"
    if days <= 30:
        return "Previous 30 days"
    return "Older"


def encode_cursor(thread: Thread) -> str:
    """The position after a thread: microseconds since the epoch and its id (exact, no float)."""
    micros = (thread.updated_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{thread.id}"


def decode_cursor(text: str) -> tuple[datetime, uuid.UUID] | None:
    """The (updated_at, id) a cursor stands for; None when it is malformed."""
    micros, _, raw_id = (text or "").partition("_")
    thread_id = parse_id(raw_id)
    if thread_id is None or not micros.isdigit() or len(micros) > 18:
        return None
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), thread_id
    except OverflowError:
        return None


def _rows(threads: list[Thread], previous: str | None, today: date) -> list[Row]:
    rows = []
    for thread in threads:
        label = group_label(thread.updated_at, today)
        rows.append(Row(label if label != previous else None, thread))
        previous = label
    return rows


def _today() -> date:
    return datetime.now().astimezone().date()


async def sidebar(conn: asyncpg.Connection, user_id: uuid.UUID) -> ThreadList:
    """The first page of the sidebar: pinned threads, the newest others by date, and folders."""
    today = _today()
    pinned = await thread_list.select_pinned(conn, user_id, PINNED_LIMIT)
    threads = await thread_list.select_page(conn, user_id, limit=PAGE_SIZE + 1)
    more = len(threads) > PAGE_SIZE
    threads = threads[:PAGE_SIZE]
    rows = [Row(PINNED if i == 0 else None, t) for i, t in enumerate(pinned)]
    rows += _rows(threads, None, today)
    folder_list = await folders_model.select_folders(conn, user_id)
    return ThreadList(rows, encode_cursor(threads[-1]) if more else None, folders=folder_list)


async def page(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, before: tuple[datetime, uuid.UUID] | None,
    folder: folders_model.Folder | None = None,
) -> ThreadList:
    """A page of the main list (or of one folder) after a cursor; headings continue the previous page."""
    today = _today()
    threads = await thread_list.select_page(
        conn, user_id, folder_id=folder.id if folder else None, before=before, limit=PAGE_SIZE + 1
    )
    more = len(threads) > PAGE_SIZE
    threads = threads[:PAGE_SIZE]
    previous = group_label(before[0], today) if before else None
    rows = _rows(threads, previous, today)
    return ThreadList(rows, encode_cursor(threads[-1]) if more else None, folder=folder)
