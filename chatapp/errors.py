"""Friendly error pages and fragments; never a traceback."""
from __future__ import annotations

import logging
from typing import Any

import asyncpg
from quart import Quart, render_template, request
from redis import exceptions as redis_errors
from werkzeug.exceptions import HTTPException

from . import logs

log = logging.getLogger(__name__)

UNAVAILABLE_MESSAGE = "The server cannot reach its database or cache right now. Try again in a moment."
# Errors that mean "a dependency is down or hung", answered 503 instead of 500. TimeoutError
# covers asyncpg's connect/acquire/command timeouts and the request deadlines (db.py).
DEPENDENCY_ERRORS = (
    TimeoutError, ConnectionError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    redis_errors.ConnectionError, redis_errors.TimeoutError,
)

TITLES = {
    400: "That didn't look right",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    422: "That didn't look right",
    429: "Slow down",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}


def _wants_json() -> bool:
    return request.path.startswith("/api/") or (
        request.accept_mimetypes.best == "application/json" and not request.headers.get("HX-Request")
    )


async def error_response(status: int, message: str) -> Any:
    """An error as JSON (API), a fragment (htmx) or a full page."""
    title = TITLES.get(status, "Error")
    request_id = logs.current_request_id()  # quoted by users in support requests; matches the logs
    if _wants_json():
        # Always (body, status, headers): callers add headers such as Retry-After.
        return {"error": {"status": status, "title": title, "message": message, "request_id": request_id}}, status, {}
    if request.headers.get("HX-Request"):
        # htmx shows error fragments in the page's flash area, whatever the request targeted.
        body = await render_template("_error.html", status=status, title=title, message=message,
                                     request_id=request_id)
        return body, status, {"Vary": "HX-Request", "HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
    body = await render_template("error.html", status=status, title=title, message=message,
                                 request_id=request_id)
    return body, status, {"Vary": "HX-Request"}


def init_app(app: Quart) -> None:
    """Turn every HTTP error and unexpected exception into a friendly answer."""

    @app.errorhandler(HTTPException)
    async def _http(error: HTTPException) -> Any:
        # Our own abort(code, "message") texts are for users; werkzeug's defaults are not.
        message = error.description if error.description != type(error).description else ""
        defaults = {
            404: "There is nothing here, or it is not yours.",
            413: "That is more than this server accepts in one request.",
            405: "That action is not available here.",
        }
        response = await error_response(error.code or 500, message or defaults.get(error.code, error.name))
        if error.code == 429 and getattr(error, "retry_after", None):
            response[2]["Retry-After"] = str(error.retry_after)
        return response

    async def _dependency_down(error: Exception) -> Any:
        # PostgreSQL or Redis did not answer in time (or refused): a clear, fast 503, no traceback.
        log.warning("dependency unavailable on %s %s: %r", request.method, request.path, error)
        response = await error_response(503, UNAVAILABLE_MESSAGE)
        response[2]["Retry-After"] = "5"
        return response

    for kind in DEPENDENCY_ERRORS:
        app.register_error_handler(kind, _dependency_down)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return await error_response(500, "The server hit an unexpected error. Please try again.")
