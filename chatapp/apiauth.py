"""Bearer-token authentication of the JSON API.

/api/v1 never looks at the session cookie: a request without `Authorization: Bearer ...`
gets 401 even when it carries a logged-in cookie. That is what makes it safe to exempt the
API from CSRF checks: a cross-site page can make the browser send cookies, never this header.
"""
from __future__ import annotations

from typing import Any, Callable

from quart import current_app, g, make_response, request

from . import errors
from .csrf import csrf_exempt
from .models import api_tokens
from .sessions import Session

REALM = 'Bearer realm="chatapp"'


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _unauthorized(message: str, error: str | None = None) -> Any:
    response = await make_response(await errors.error_response(401, message))
    response.headers["WWW-Authenticate"] = REALM + (f', error="{error}"' if error else "")
    return response


async def authenticate() -> Any:
    """Before each API request: set g.user from the bearer token, or answer 401."""
    # Whatever the cookie said is dropped, and no cookie is sent back on API answers.
    g.session = Session()
    g.user = None
    if "Authorization" not in request.headers:
        return await _unauthorized("This API needs an API token: send `Authorization: Bearer chatapp_...`. "
                                   "Create one in Settings.")
    token = bearer_token()
    if token is None:
        return await _unauthorized("Use the Bearer scheme: `Authorization: Bearer chatapp_...`.", "invalid_request")
    async with current_app.db.acquire() as conn:
        found = await api_tokens.select_user_by_token(conn, token)
    if found is None:
        return await _unauthorized("This API token is unknown, revoked, or its account is disabled.",
                                   "invalid_token")
    g.user, g.api_token_id = found
    return None


def api_view(view: Callable) -> Callable:
    """Mark an API view: bearer-token only (checked by the blueprint), so no CSRF token."""
    view.bearer_required = True
    return csrf_exempt(view)
