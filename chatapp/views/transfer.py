"""Export (one thread as Markdown or JSON, or everything as one streamed JSON) and import."""
from __future__ import annotations

import asyncio
import logging

from quart import Blueprint, Quart, abort, current_app, g, redirect, request, url_for
from quart.wrappers.request import Body
from werkzeug.exceptions import RequestEntityTooLarge

from .. import chat, exporter, importer
from ..archive import ArchiveError
from ..models import threads, transfer
from ..ownership import own_thread
from ..sessions import COOKIE_NAME, SECURE_COOKIE_NAME, login_required
from ..storage import StorageError
from ..templating import page

bp = Blueprint("transfer", __name__)
log = logging.getLogger(__name__)

IMPORT_PATH = "/import"
IMPORT_BODY_TIMEOUT = 600  # seconds to receive an upload: 50 MiB over a slow uplink takes minutes


async def _tree(thread: threads.Thread) -> tuple[threads.Thread, list]:
    """The thread's whole tree (archived ones read from cold storage), or 503 when unreadable."""
    try:
        return await exporter.load_tree(current_app._get_current_object(), thread)
    except (ArchiveError, StorageError) as exc:
        log.error("export of archived thread %s failed: %s", thread.id, exc)
        abort(503, "This conversation is archived and its archived copy cannot be read right now. "
                   "Try again later, or restore it first.")


def _download(body, content_type: str, filename: str):
    response = current_app.response_class(body, content_type=content_type)
    response.headers["Content-Disposition"] = exporter.attachment(filename)
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/threads/<thread_id>/export.json")
@login_required
async def export_thread_json(thread_id: str):
    """One thread with every message of its tree, in the importable JSON format."""
    thread, messages = await _tree(await own_thread(thread_id))
    async with current_app.db.acquire() as conn:
        folder = await transfer.select_folder_name(conn, thread.id)
    return _download(exporter.thread_json(thread, messages, folder), "application/json; charset=utf-8",
                     exporter.download_name(thread.title, "json"))


@bp.get("/threads/<thread_id>/export.md")
@login_required
async def export_thread_md(thread_id: str):
    """One thread as Markdown: the visible conversation, then every other version."""
    thread, messages = await _tree(await own_thread(thread_id))
    body = exporter.to_markdown(thread, messages, exporter.branch_of(messages, thread.current_leaf_id))
    return _download(body, "text/markdown; charset=utf-8", exporter.download_name(thread.title, "md"))


@bp.get("/export.json")
@login_required
async def export_all():
    """Every thread of the user as one JSON download, streamed batch by batch."""
    app = current_app._get_current_object()  # the body is produced after the request context ends
    response = _download(exporter.stream_everything(app, g.user.id), "application/json; charset=utf-8",
                         exporter.download_name("everything", "json"))
    response.timeout = None  # a large history takes longer than the default response timeout
    return response


async def _import_page(error: str | None = None, status: int = 200):
    limit = size_text(current_app.config["CHATAPP_MAX_IMPORT_BYTES"])
    return await page("import.html", status=status, error=error, limit=limit,
                      imported=request.args.get("imported", type=int), skipped=request.args.get("skipped", type=int),
                      threads=await chat.sidebar_threads(), thread=None)


@bp.get("/import")
@login_required
async def import_page():
    """Import a file, or download everything."""
    return await _import_page()


@bp.post("/import")
@login_required
async def import_file():
    """Import a chatapp export or ChatGPT's conversations.json (field `file`): all or nothing."""
    upload = (await request.files).get("file")
    if upload is None or not upload.filename:
        return await _import_page("Choose a file to import.", 400)
    try:
        # Quart has already spooled the upload to a temporary file; parse it from there, once,
        # in a worker thread so a large file does not stall other requests.
        plan = await asyncio.to_thread(importer.read_file, upload.stream)
    except importer.ImportProblem as problem:
        return await _import_page(str(problem), 400)
    finally:
        upload.close()
    async with current_app.db.acquire() as conn:
        thread_ids = await importer.store(conn, g.user.id, plan)
    if len(thread_ids) == 1 and not plan.skipped:
        return redirect(url_for("threads.show", thread_id=thread_ids[0]), 303)
    return redirect(url_for("transfer.import_page", imported=len(thread_ids), skipped=plan.skipped or None), 303)


class _ImportBody(Body):
    """A request body capped by its total size (Quart's own Body caps only what is buffered).

    It sets Quart 0.22's `_must_raise`, the hook its Body uses to raise 413 inside the app.
    """

    def __init__(self, expected_content_length: int | None, limit: int) -> None:
        super().__init__(expected_content_length, limit)
        self._limit, self._received = limit, 0
        if self._must_raise is not None:  # Content-Length already says too much: say by how much
            self._must_raise = _too_large(limit)

    def append(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self._limit and self._must_raise is None:
            self._must_raise = _too_large(self._limit)
            self.set_complete()
            return
        super().append(data)


def size_text(size: int) -> str:
    """A byte count for people: 50 MiB, 512 KiB."""
    return f"{size / 1048576:g} MiB" if size >= 1048576 else f"{size / 1024:g} KiB"


def _too_large(limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"Import files can be at most {size_text(limit)}.")


def init_app(app: Quart) -> None:
    """Give POST /import (only) its own body limit, CHATAPP_MAX_IMPORT_BYTES.

    Quart sizes a request's body when it creates the request, before any hook or view runs,
    from MAX_CONTENT_LENGTH; so the choice is made in the request class, by method and path.
    Only requests carrying a session cookie get the larger limit: anonymous ones cannot be
    logged in, and would otherwise make the server spool 50 MiB to disk before refusing them.
    """
    base = app.request_class
    limit = app.config["CHATAPP_MAX_IMPORT_BYTES"]

    class ImportAwareRequest(base):  # type: ignore[misc, valid-type]
        def __init__(self, method: str, scheme: str, path: str, *args, **kwargs) -> None:
            super().__init__(method, scheme, path, *args, **kwargs)
            cookies = self.cookies
            if method == "POST" and path == IMPORT_PATH and (COOKIE_NAME in cookies or SECURE_COOKIE_NAME in cookies):
                self.body = _ImportBody(self.content_length, limit)
                self.max_content_length = limit  # the multipart parser's own limit
                self.body_timeout = IMPORT_BODY_TIMEOUT

    app.request_class = ImportAwareRequest
