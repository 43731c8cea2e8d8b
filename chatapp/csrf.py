"""CSRF protection: a per-session token on every state-changing browser request.

The token travels as the form field `csrf_token` or the `X-CSRF-Token` header (set once for
all HTMX requests by `hx-headers` on <body>). Cross-site Origin headers are refused too.
Only views marked @csrf_exempt (the bearer-token JSON API) skip the check.
"""
from __future__ import annotations

import hmac
from typing import Any, Callable
from urllib.parse import urlsplit

from quart import Quart, abort, current_app, g, request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def csrf_exempt(view: Callable) -> Callable:
    """Mark a view as exempt (only for bearer-token APIs that never read cookies)."""
    view.csrf_exempt = True
    return view


def _same_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return (parts.scheme, parts.netloc) == (request.scheme, request.host)


async def _submitted_token() -> str:
    header = request.headers.get("X-CSRF-Token")
    if header:
        return header
    form = await request.form
    return form.get("csrf_token", "")


async def check_csrf() -> None:
    """Abort 403 unless an unsafe request carries this session's token from our own origin."""
    if request.method in SAFE_METHODS or request.endpoint is None:
        return
    view = current_app.view_functions.get(request.endpoint)
    if view is not None and getattr(view, "csrf_exempt", False):
        return
    origin = request.headers.get("Origin")
    if origin and origin != "null" and not _same_origin(origin):
        abort(403, "Cross-site request refused.")
    expected = g.session.csrf if g.get("session") else ""
    submitted = await _submitted_token()
    if not expected or not hmac.compare_digest(expected.encode(), submitted.encode()):
        abort(403, "Your form expired or came from another site. Reload the page and try again.")


def init_app(app: Quart) -> None:
    """Check CSRF after the session is loaded (hooks run in registration order)."""
    app.before_request(check_csrf)


def token() -> str:
    """The current session's CSRF token for templates ('' when there is no session)."""
    session: Any = g.get("session")
    return session.csrf if session is not None else ""
