"""What the thread page's tools show: pin state, folders to move to, the share link."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from quart import current_app

from .models import folders, shares
from .models.threads import Thread


@dataclass
class ThreadTools:
    """Context of `_thread_tools.html` for one thread."""

    folders: list[folders.Folder]
    folder_id: uuid.UUID | None
    share: shares.Share | None


async def load(user_id: uuid.UUID, thread: Thread) -> ThreadTools:
    """Folders, the thread's folder and its share link, in one connection."""
    async with current_app.db.acquire() as conn:
        return ThreadTools(
            folders=await folders.select_folders(conn, user_id),
            folder_id=await folders.select_thread_folder(conn, user_id, thread.id),
            share=await shares.select_thread_share(conn, user_id, thread.id),
        )
