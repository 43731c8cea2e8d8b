"""The user's settings page: account, usage and the active model backend."""
from __future__ import annotations

from urllib.parse import urlsplit

from quart import Blueprint, current_app, g

from .. import chat
from ..models import usage
from ..sessions import login_required
from ..templating import page

bp = Blueprint("settings", __name__)


def model_backend() -> str:
    """A one-line description of where answers come from."""
    base = current_app.config.get("OPENAI_BASE_URL")
    if base:
        return f"OpenAI-compatible server at {urlsplit(base).netloc or base}"
    if current_app.config.get("OPENAI_API_KEY"):
        return "OpenAI API"
    return "none configured (set OPENAI_API_KEY or OPENAI_BASE_URL)"


@bp.get("/settings")
@login_required
async def show():
    """Account, usage totals and the model backend."""
    async with current_app.db.acquire() as conn:
        totals = await usage.select_user_totals(conn, g.user.id)
    return await page("settings.html", totals=totals, backend=model_backend(),
                      threads=await chat.sidebar_threads(), thread=None)
