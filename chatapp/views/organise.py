"""Organising threads: pins, folders, and the paged thread list grouped by date."""
from __future__ import annotations

from quart import Blueprint, abort, current_app, g, redirect, request, url_for

from .. import chat, thread_list
from ..models import folders, threads
from ..ownership import own_thread
from ..sessions import login_required
from ..templating import is_htmx, page

bp = Blueprint("organise", __name__)


async def _own_folder(folder_id: str) -> folders.Folder:
    """The user's folder or 404."""
    async with current_app.db.acquire() as conn:
        folder = await folders.select_folder(conn, g.user.id, folder_id)
    if folder is None:
        abort(404)
    return folder


def _name_error(name: str) -> str | None:
    """What is wrong with a folder name (None: nothing)."""
    if not name:
        return "Give the folder a name."
    if len(name) > folders.MAX_NAME_CHARS:
        return f"Keep folder names under {folders.MAX_NAME_CHARS} characters."
    return None


async def _folders_page(error: str | None = None, status: int = 200):
    """The folders page, with the error of the last form when there was one."""
    async with current_app.db.acquire() as conn:
        folder_list = await folders.select_folders(conn, g.user.id)
    return await page("folders.html", status=status, folder_list=folder_list, error=error,
                      threads=await chat.sidebar_threads(), thread=None)


@bp.get("/threads")
@login_required
async def index():
    """A page of the thread list after `before` (optionally of one `folder`); htmx gets only the rows."""
    raw_cursor = request.args.get("before", "")
    before = thread_list.decode_cursor(raw_cursor) if raw_cursor else None
    if raw_cursor and before is None:
        abort(400, "That page link is broken. Go back to the first page.")
    folder = await _own_folder(request.args["folder"]) if request.args.get("folder") else None
    async with current_app.db.acquire() as conn:
        listing = await thread_list.page(conn, g.user.id, before=before, folder=folder)
    if is_htmx():
        return await page("_thread_rows.html", threads=listing, thread=None)  # with Vary: HX-Request
    return await page("thread_index.html", listing=listing, folder=folder, first=before is None,
                      threads=await chat.sidebar_threads(), thread=None)


async def _list_changed(thread: threads.Thread):
    """After a pin or move: htmx gets the refreshed sidebar (and pin button); browsers go back."""
    if not is_htmx():
        return redirect(url_for("threads.show", thread_id=thread.id), 303)
    async with current_app.db.acquire() as conn:
        thread = await threads.select_thread(conn, g.user.id, thread.id)
    return await page("_organised.html", threads=await chat.sidebar_threads(), thread=thread)  # with Vary: HX-Request


@bp.post("/threads/<thread_id>/pin")
@login_required
async def pin(thread_id: str):
    """Pin a thread to the top of the list, or unpin it."""
    thread = await own_thread(thread_id)
    async with current_app.db.acquire() as conn:
        await folders.toggle_pin(conn, g.user.id, thread.id)
    return await _list_changed(thread)


@bp.post("/threads/<thread_id>/folder")
@login_required
async def move(thread_id: str):
    """Move a thread into one of the user's folders (field `folder_id`; empty: out of any)."""
    thread = await own_thread(thread_id)
    raw = (await request.form).get("folder_id", "").strip()
    target = None
    if raw:
        target = (await _own_folder(raw)).id
    async with current_app.db.acquire() as conn:
        await folders.move_thread(conn, g.user.id, thread.id, target)
    return await _list_changed(thread)


@bp.get("/folders")
@login_required
async def manage():
    """The folders page: create, rename and delete folders."""
    return await _folders_page()


@bp.post("/folders")
@login_required
async def create():
    """Create a folder (field `name`)."""
    name = " ".join((await request.form).get("name", "").split())
    if error := _name_error(name):
        return await _folders_page(error, 400)
    async with current_app.db.acquire() as conn:
        folder = await folders.insert_folder(conn, g.user.id, name)
    if folder is None:
        return await _folders_page(f"You already have a folder named “{name}”.", 400)
    return redirect(url_for("organise.manage"), 303)


@bp.get("/folders/<folder_id>")
@login_required
async def folder(folder_id: str):
    """One folder's threads, newest first."""
    found = await _own_folder(folder_id)
    async with current_app.db.acquire() as conn:
        listing = await thread_list.page(conn, g.user.id, before=None, folder=found)
    return await page("thread_index.html", listing=listing, folder=found, first=True,
                      threads=await chat.sidebar_threads(), thread=None)


@bp.post("/folders/<folder_id>/rename")
@login_required
async def rename(folder_id: str):
    """Rename a folder (field `name`)."""
    found = await _own_folder(folder_id)
    name = " ".join((await request.form).get("name", "").split())
    if error := _name_error(name):
        return await _folders_page(error, 400)
    async with current_app.db.acquire() as conn:
        renamed = await folders.rename_folder(conn, g.user.id, found.id, name)
    if not renamed:
        return await _folders_page(f"You already have a folder named “{name}”.", 400)
    return redirect(url_for("organise.manage"), 303)


@bp.post("/folders/<folder_id>/delete")
@login_required
async def delete(folder_id: str):
    """Delete a folder; its threads stay, in no folder."""
    found = await _own_folder(folder_id)
    async with current_app.db.acquire() as conn:
        await folders.delete_folder(conn, g.user.id, found.id)
    return redirect(url_for("organise.manage"), 303)
