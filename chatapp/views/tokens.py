"""API tokens in the settings page: create (shown once), list, revoke."""
from __future__ import annotations

from quart import Blueprint, abort, current_app, g, redirect, request, url_for

from ..models import api_tokens
from ..sessions import login_required
from ..templating import is_htmx
from .settings import render

bp = Blueprint("tokens", __name__)


@bp.post("/settings/tokens")
@login_required
async def create():
    """Create an API token (field `name`); the reply shows the token once, it is never stored."""
    form = await request.form
    name = " ".join(form.get("name", "").split())
    error = None
    if not name:
        error = "Name the token, e.g. after the script or machine that will use it."
    elif len(name) > api_tokens.MAX_NAME_CHARS or "\x00" in name:
        error = f"Keep the name under {api_tokens.MAX_NAME_CHARS} characters."
    if error:
        return await render("tokens", status=400, errors={"token_name": error}, token_name=name)
    async with current_app.db.acquire() as conn:
        token, raw = await api_tokens.insert_token(conn, g.user.id, name)
    # Never redirect here: the reply is the only place the token is ever shown.
    response = await render("tokens", status=201, new_token=raw, new_token_name=token.name)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/settings/tokens/<token_id>/revoke")
@login_required
async def revoke(token_id: str):
    """Revoke a token: the next API request with it answers 401."""
    async with current_app.db.acquire() as conn:
        revoked = await api_tokens.revoke_token(conn, g.user.id, token_id)
    if not revoked:
        abort(404)
    if is_htmx():
        return await render("tokens", notice_tokens="Token revoked.")
    return redirect(url_for("settings.show") + "#tokens", 303)
