"""The JSON API (/api/v1): threads, messages, search. Bearer tokens only; same rules as the browser.

Each view reuses the browser's service functions (chat.check_content, check_rate_limits,
exchange.send, generation.spawn), so the API stores a message before calling the model,
applies the same rate limits (429) and the same ownership rule (404, also for malformed ids).
"""
from __future__ import annotations

import base64
import binascii
from datetime import datetime

from pydantic import ValidationError
from quart import Blueprint, abort, current_app, g, request, stream_with_context
from quart_schema import RequestSchemaValidationError, validate_querystring, validate_request, validate_response
from werkzeug.exceptions import BadRequest

from .. import apistream, chat, errors, generation, prompt, relay, sse, usersettings
from ..apiauth import api_view, authenticate
from ..apischema import (Exchange, MessageCreate, MessageList, MessageOut, SearchQuery, SearchResults,
                         ThreadCreate, ThreadDetail, ThreadListQuery, ThreadOut, ThreadPage, ThreadPatch)
from ..ids import parse_id
from ..models import api_queries, exchange, messages, threads
from ..models import search as message_search
from ..ownership import own_message, own_thread

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(authenticate)


@bp.before_request
async def _utf8_body() -> None:
    """Quart decodes JSON bodies as UTF-8 and fails with 500 on other bytes: refuse them first."""
    if request.is_json and request.method in ("POST", "PATCH", "PUT"):
        try:
            (await request.get_data()).decode("utf-8")
        except UnicodeDecodeError:
            abort(400, "The request body is not valid UTF-8 JSON.")


@bp.errorhandler(RequestSchemaValidationError)
async def _invalid(error: RequestSchemaValidationError):
    """A body or query string that does not fit the schema: 422 naming each problem."""
    cause = error.validation_error
    if isinstance(cause, ValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in cause.errors()]
        message = "; ".join(problems[:10])
    else:
        message = str(cause)
    if request.method not in ("GET", "HEAD") and not request.is_json:
        message = "Send a JSON body with `Content-Type: application/json`. " + message
    return await errors.error_response(422, message)


@bp.errorhandler(BadRequest)
async def _bad_request(error: BadRequest):
    """Our own abort(400, ...) texts pass through; Quart's bare 400 means the JSON did not parse."""
    if error.description != BadRequest.description:
        return await errors.error_response(400, error.description)
    return await errors.error_response(400, "The request body is not valid JSON.")


# ---- helpers -------------------------------------------------------------------------------

async def _own_thread(thread_id: str) -> threads.Thread:
    return await own_thread(thread_id, "There is no thread with this id, or it is not yours.")


async def _own_message(message_id: str) -> messages.Message:
    return await own_message(message_id, "There is no message with this id, or it is not yours.")


def _message_out(message: messages.Message) -> MessageOut:
    return MessageOut.model_validate(message, from_attributes=True)


def _thread_out(thread: threads.Thread) -> ThreadOut:
    return ThreadOut.model_validate(thread, from_attributes=True)


def _encode_cursor(thread: threads.Thread) -> str:
    raw = f"{thread.updated_at.isoformat()}|{thread.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str):
    """(updated_at, id) of a cursor; 400 for anything we did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, tid = raw.partition("|")
        position = (datetime.fromisoformat(stamp), parse_id(tid))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = None
    if position is None or position[1] is None or position[0].tzinfo is None:
        abort(400, "That cursor is not valid: pass `next_cursor` from the previous page unchanged.")
    return position


def _clean_title(title: str) -> str:
    title = " ".join(title.split())
    if not title:
        abort(400, "Give the thread a title.")
    return title


async def _thread_detail(thread: threads.Thread) -> ThreadDetail:
    async with current_app.db.acquire() as conn:
        branch = await messages.select_branch(conn, thread.id, thread.current_leaf_id)
    return ThreadDetail(**_thread_out(thread).model_dump(), messages=[_message_out(m) for m in branch])


def _stream_url(message_id) -> str:
    return f"{bp.url_prefix}/messages/{message_id}/stream"


# ---- threads -------------------------------------------------------------------------------

@bp.get("/threads")
@api_view
@validate_querystring(ThreadListQuery)
@validate_response(ThreadPage)
async def list_threads(query_args: ThreadListQuery) -> ThreadPage:
    """List your threads, most recently active first (cursor pagination)."""
    after = _decode_cursor(query_args.cursor) if query_args.cursor else None
    async with current_app.db.acquire() as conn:
        # One extra row tells whether another page exists.
        rows = await api_queries.select_threads_page(conn, g.user.id, query_args.limit + 1, after)
    page, more = rows[:query_args.limit], len(rows) > query_args.limit
    return ThreadPage(threads=[_thread_out(t) for t in page],
                      next_cursor=_encode_cursor(page[-1]) if more else None)


@bp.post("/threads")
@api_view
@validate_request(ThreadCreate)
@validate_response(ThreadDetail, 201)
async def create_thread(data: ThreadCreate):
    """Create a thread (your default model and system prompt apply unless given)."""
    default_model, default_prompt = await usersettings.new_thread_defaults(g.user)
    model = await chat.choose_model(data.model) if data.model else default_model
    title = _clean_title(data.title) if data.title is not None else threads.DEFAULT_TITLE
    system_prompt = data.system_prompt if data.system_prompt is not None else default_prompt
    async with current_app.db.acquire() as conn:
        thread = await threads.insert_thread(conn, g.user.id, title=title, model=model, system_prompt=system_prompt)
    return await _thread_detail(thread), 201, {"Location": f"{bp.url_prefix}/threads/{thread.id}"}


@bp.get("/threads/<thread_id>")
@api_view
@validate_response(ThreadDetail)
async def get_thread(thread_id: str) -> ThreadDetail:
    """A thread with the messages of its visible branch."""
    return await _thread_detail(await _own_thread(thread_id))


@bp.patch("/threads/<thread_id>")
@api_view
@validate_request(ThreadPatch)
@validate_response(ThreadOut)
async def update_thread(thread_id: str, data: ThreadPatch) -> ThreadOut:
    """Rename a thread, or change its model or system prompt."""
    thread = await _own_thread(thread_id)
    model = await chat.choose_model(data.model) if data.model is not None else thread.model
    system_prompt = data.system_prompt if data.system_prompt is not None else thread.system_prompt
    title = _clean_title(data.title) if data.title is not None else thread.title
    async with current_app.db.acquire() as conn:
        async with conn.transaction():
            updated = await threads.update_title(conn, g.user.id, thread.id, title)
            if updated is not None and (data.model is not None or data.system_prompt is not None):
                updated = await threads.update_settings(conn, g.user.id, thread.id, model=model,
                                                        system_prompt=system_prompt, params=thread.params)
    if updated is None:  # deleted meanwhile
        abort(404, "There is no thread with this id, or it is not yours.")
    return _thread_out(updated)


@bp.delete("/threads/<thread_id>")
@api_view
async def delete_thread(thread_id: str):
    """Delete a thread and all of its messages."""
    thread = await _own_thread(thread_id)
    async with current_app.db.acquire() as conn:
        await threads.delete_thread(conn, g.user.id, thread.id)
    return "", 204


# ---- messages ------------------------------------------------------------------------------

@bp.get("/threads/<thread_id>/messages")
@api_view
@validate_response(MessageList)
async def list_messages(thread_id: str) -> MessageList:
    """The messages of the thread's visible branch, oldest first."""
    detail = await _thread_detail(await _own_thread(thread_id))
    return MessageList(messages=detail.messages)


@bp.post("/threads/<thread_id>/messages")
@api_view
@validate_request(MessageCreate)
@validate_response(Exchange, 201)
@validate_response(Exchange, 200)
@validate_response(Exchange, 202)
async def send_message(thread_id: str, data: MessageCreate):
    """Send a message; stream the answer (201 + stream_url) or wait for it (200, or 202 if slow)."""
    thread = await _own_thread(thread_id)
    content = chat.check_content(data.content)
    await chat.check_rate_limits(g.user.id)
    async with current_app.db.acquire() as conn:
        stored = await exchange.send(conn, thread.id, content, thread.model)
    if stored is None:
        abort(409, "This conversation is archived. Restore it to continue it.")
    user_message, answer = stored.question, stored.answer
    # After the statement: the message is stored first; the answer gets the branch it stored.
    generation.spawn(current_app, answer.id, preloaded=(thread, [prompt.Turn(*t) for t in stored.turns]))
    status = 201
    if not data.stream:
        finished = await apistream.wait_done(current_app, answer.id, current_app.config["CHATAPP_API_WAIT_SECONDS"])
        async with current_app.db.acquire() as conn:
            answer = await messages.select_message(conn, g.user.id, answer.id) or answer
        status = 200 if finished and not answer.streaming else 202
    reply = Exchange(user_message=_message_out(user_message), answer=_message_out(answer),
                     stream_url=_stream_url(answer.id))
    return reply, status, {"Location": f"{bp.url_prefix}/messages/{answer.id}"}


@bp.get("/messages/<message_id>")
@api_view
@validate_response(MessageOut)
async def get_message(message_id: str) -> MessageOut:
    """One message (poll an answer's status here after a 202)."""
    return _message_out(await _own_message(message_id))


@bp.get("/messages/<message_id>/stream")
@api_view
async def stream_message(message_id: str):
    """Server-Sent Events of an answer: `delta` (text), `title`, then `done` (the message)."""
    message = await _own_message(message_id)
    if message.role != "assistant":
        abort(400, "Only answers have a stream.")
    last_event_id = relay.valid_entry_id(request.headers.get("Last-Event-ID"))
    user_id = g.user.id  # the body runs after the request's `g` is gone

    async def final_message() -> str:
        async with current_app.db.acquire() as conn:
            final = await messages.select_message(conn, user_id, message.id)
        return _message_out(final or message).model_dump_json()

    @stream_with_context
    async def body():
        if not message.streaming:  # finished: answered from PostgreSQL at once
            yield sse.encode_event(await final_message(), event="done")
            return
        heartbeat = current_app.config["CHATAPP_STREAM_HEARTBEAT_SECONDS"]
        async for chunk in apistream.events(current_app, message.id, final_message, last_event_id, heartbeat):
            yield chunk

    return await sse.stream_response(body())


stream_message.event_stream = True  # documented as text/event-stream (api_docs.py)


@bp.post("/messages/<message_id>/stop")
@api_view
@validate_response(MessageOut, 202)
async def stop_message(message_id: str):
    """Stop an answer that is still streaming; the partial text is kept with status `stopped`."""
    message = await _own_message(message_id)
    if message.role != "assistant":
        abort(400, "Only answers can be stopped.")
    if message.streaming:
        await generation.request_stop(current_app, message.id)
    return _message_out(message), 202


# ---- search --------------------------------------------------------------------------------

@bp.get("/search")
@api_view
@validate_querystring(SearchQuery)
@validate_response(SearchResults)
async def search(query_args: SearchQuery) -> SearchResults:
    """Full-text search over your own messages."""
    async with current_app.db.acquire() as conn:
        hits = await message_search.search_messages(conn, g.user.id, query_args.q, limit=query_args.limit,
                                                    branches=False)
    return SearchResults(results=[
        {"message_id": h.message_id, "thread_id": h.thread_id, "thread_title": h.thread_title, "role": h.role,
         "snippet": message_search.with_markers(h.snippet, "[[", "]]"), "created_at": h.created_at}
        for h in hits])
