"""The user's settings page: account, defaults for new threads, theme, usage, model backend,
password, sessions and deleting the account. API tokens live in views/tokens.py.

Forms work without JavaScript (post, then 303 back to /settings with a notice); the defaults
form also posts with htmx and gets its own section back.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from quart import Blueprint, current_app, g, redirect, request, url_for

from .. import chat, generation, local_model, ratelimit, sessions, usersettings
from ..models import api_tokens, usage, users
from ..sessions import login_required
from ..templating import is_htmx, page
from .auth import LOGIN_WINDOW, MAX_PASSWORD, MIN_PASSWORD

bp = Blueprint("settings", __name__)

NOTICES = {
    "defaults": "Saved. New threads use these defaults.",
    "theme": "Theme saved.",
    "password": "Password changed. Every other session and every API token has been signed out.",
}


def model_backend() -> str:
    """A one-line description of where answers come from."""
    local = local_model.describe(current_app)  # first: the local server also sets OPENAI_BASE_URL
    if local:
        return local
    base = current_app.config.get("OPENAI_BASE_URL")
    if base:
        return f"OpenAI-compatible server at {urlsplit(base).netloc or base}"
    if current_app.config.get("OPENAI_API_KEY"):
        return "OpenAI API"
    return "none configured (set OPENAI_API_KEY or OPENAI_BASE_URL, or install chatapp[local] to run offline)"


async def render(block: str | None = None, status: int = 200, **extra):
    """The settings page (or one of its sections for htmx) with everything it shows."""
    async with current_app.db.acquire() as conn:
        totals = await usage.select_user_totals(conn, g.user.id)
        tokens = await api_tokens.select_tokens(conn, g.user.id)
    default_model, _ = await usersettings.new_thread_defaults(g.user)
    context = {
        "totals": totals, "backend": model_backend(), "threads": await chat.sidebar_threads(), "thread": None,
        "tokens": tokens, "new_token": None, "models": await chat.available_models(),
        "default_model": default_model, "system_prompt": (g.user.settings or {}).get("system_prompt", ""),
        "theme": usersettings.theme(g.user), "themes": usersettings.THEMES, "errors": {},
        "notice": NOTICES.get(request.args.get("done", "")), "max_token_name": api_tokens.MAX_NAME_CHARS,
    }
    context.update(extra)
    return await page("settings.html", block=block, status=status, **context)


def _back(done: str):
    """After a plain form post: back to the settings page with a notice."""
    return redirect(url_for("settings.show", done=done), 303)


async def _password_ok(password: str) -> bool:
    """Check the current password, rate-limited like logins so a stolen session cannot guess it."""
    subject = str(g.user.id)
    limit = current_app.config["CHATAPP_LOGIN_ATTEMPTS_PER_15_MIN"]
    if await ratelimit.peek("password-check", subject, LOGIN_WINDOW) >= limit:
        return False
    if await users.check_password(g.user, password):
        return True
    await ratelimit.hit("password-check", subject, limit, LOGIN_WINDOW)
    return False


@bp.get("/settings")
@login_required
async def show():
    """Account, defaults, theme, usage, API tokens, password and account deletion."""
    return await render()


@bp.post("/settings/defaults")
@login_required
async def save_defaults():
    """Save the default model and system prompt of new threads."""
    form = await request.form
    model = form.get("default_model", "").strip()
    system_prompt = form.get("system_prompt", "")
    errors = {}
    if model and model not in await chat.available_models():
        errors["default_model"] = "That model is not offered."
    if len(system_prompt) > usersettings.MAX_SYSTEM_PROMPT_CHARS:
        errors["system_prompt"] = f"Keep the system prompt under {usersettings.MAX_SYSTEM_PROMPT_CHARS:,} characters."
    if "\x00" in system_prompt:
        errors["system_prompt"] = "The system prompt cannot contain NUL characters."
    if errors:
        return await render("defaults", status=400, errors=errors, default_model=model, system_prompt=system_prompt)
    async with current_app.db.acquire() as conn:
        await users.update_settings(conn, g.user.id, {"default_model": model, "system_prompt": system_prompt})
        g.user = await users.select_user(conn, g.user.id)
    if is_htmx():
        return await render("defaults", notice_defaults=NOTICES["defaults"])
    return _back("defaults")


@bp.post("/settings/theme")
@login_required
async def save_theme():
    """Save the theme override (light, dark, or follow the system)."""
    form = await request.form
    theme = form.get("theme", "")
    if theme not in usersettings.THEMES:
        return await render(status=400, errors={"theme": "Pick light, dark or system."})
    async with current_app.db.acquire() as conn:
        await users.update_settings(conn, g.user.id, {"theme": theme})
    # The theme is an attribute of <html>: always a full page load, never a fragment.
    return _back("theme")


@bp.post("/settings/password")
@login_required
async def change_password():
    """Change the password; every other session and every API token stops working."""
    form = await request.form
    current, new = form.get("current_password", ""), form.get("new_password", "")
    errors = {}
    if not await _password_ok(current):
        errors["current_password"] = "That is not your current password (or too many attempts: wait a few minutes)."
    elif len(new) < MIN_PASSWORD:
        errors["new_password"] = f"Use at least {MIN_PASSWORD} characters."
    elif len(new) > MAX_PASSWORD:
        errors["new_password"] = f"Use at most {MAX_PASSWORD} characters."
    if errors:
        return await render(status=400, errors=errors)
    async with current_app.db.acquire() as conn:
        async with conn.transaction():
            await users.update_password(conn, g.user.id, new)
            await api_tokens.revoke_all(conn, g.user.id)
    await sessions.revoke_all(g.user.id)
    await sessions.login(g.user.id)  # this browser stays signed in, with a fresh session id
    return _back("password")


@bp.post("/settings/logout-everywhere")
@login_required
async def logout_everywhere():
    """End every session of this account, this one included (API tokens keep working)."""
    await sessions.revoke_all(g.user.id)
    g.session = sessions.Session(ended=True)
    return redirect(url_for("auth.login"), 303)


@bp.post("/settings/delete-account")
@login_required
async def delete_account():
    """Delete the account and everything in it, after confirming the password."""
    form = await request.form
    if not await _password_ok(form.get("password", "")):
        return await render(status=400, errors={"delete_password": "That is not your password. Nothing was deleted."})
    user_id = g.user.id
    async with current_app.db.acquire() as conn:
        message_ids = await conn.fetch(
            "SELECT m.id FROM messages m JOIN threads t ON t.id = m.thread_id WHERE t.user_id = $1", user_id)
        await users.delete_user(conn, user_id)  # threads, messages and tokens go by cascade
    await sessions.revoke_all(user_id)
    await _forget_cached([row["id"] for row in message_ids])
    g.session = sessions.Session(ended=True)
    g.user = None
    return redirect(url_for("auth.signup"), 303)


async def _forget_cached(message_ids: list) -> None:
    """Remove the deleted account's copies in Redis: rendered answers and answer streams."""
    keys = [chat.fragment_key(mid) for mid in message_ids]
    keys += [generation.stream_key(current_app, mid) for mid in message_ids]
    for start in range(0, len(keys), 500):
        await current_app.redis.delete_fragments(keys[start:start + 500])
