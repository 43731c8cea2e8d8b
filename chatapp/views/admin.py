"""Admin: accounts with their usage, disabling accounts, signup and the model list.

Only admins see any of it; everyone else gets 404, as if the page did not exist. Settings
saved here go to app_settings and win over the environment's defaults on every instance
(each caches the merged view for a few seconds).
"""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from quart import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from .. import chat, sessions
from ..ids import parse_id
from ..models import admin, app_settings, users
from ..sessions import login_required
from ..templating import is_htmx, page

bp = Blueprint("admin", __name__)

MAX_MODELS = 100
MAX_MODEL_CHARS = 200


def admin_required(view: Callable) -> Callable:
    """Logged in and an admin, else 404 (the admin area does not admit it exists)."""

    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not g.user.is_admin:
            abort(404)
        return await view(*args, **kwargs)

    return login_required(wrapper)


async def _render(status: int = 200, **extra):
    runtime = await app_settings.effective(current_app)
    async with current_app.db.acquire() as conn:
        accounts = await admin.select_users_with_usage(conn)
        saved = await app_settings.select_all(conn)
    context = {
        "accounts": accounts, "runtime": runtime, "saved": saved, "errors": {}, "form": None,
        "notice": "Settings saved." if request.args.get("done") == "settings" else None,
        "threads": await chat.sidebar_threads(), "thread": None, "max_listed": admin.MAX_USERS_LISTED,
    }
    context.update(extra)
    return await page("admin.html", block="admin_settings", status=status, **context)


@bp.get("/admin")
@admin_required
async def show():
    """Accounts with usage, and the run-time settings."""
    return await _render()


def _parse_settings(form) -> tuple[dict[str, Any], dict[str, str]]:
    """The submitted run-time settings and the errors in them."""
    errors: dict[str, str] = {}
    signup = form.get("signup", "")
    if signup not in ("open", "closed"):
        errors["signup"] = "Signup is either open or closed."
    raw_models = form.get("models", "").replace(",", "\n")
    models = list(dict.fromkeys(m.strip() for m in raw_models.splitlines() if m.strip()))
    if len(models) > MAX_MODELS or any(len(m) > MAX_MODEL_CHARS or "\x00" in m for m in models):
        errors["models"] = f"List at most {MAX_MODELS} models of at most {MAX_MODEL_CHARS} characters each."
    default_model = form.get("default_model", "").strip()
    if not default_model or len(default_model) > MAX_MODEL_CHARS or "\x00" in default_model:
        errors["default_model"] = "Name the default model."
    elif models and default_model not in models:
        errors["default_model"] = "The default model must be one of the listed models."
    limits = {}
    for field, name, top in (("rate_limit", "CHATAPP_RATE_LIMIT_PER_MINUTE", 10000),
                             ("max_concurrent", "CHATAPP_MAX_CONCURRENT_GENERATIONS", 1000)):
        try:
            limits[name] = int(form.get(field, ""))
            if not 1 <= limits[name] <= top:
                raise ValueError
        except ValueError:
            errors[field] = f"A whole number from 1 to {top:,}."
    values = {"CHATAPP_SIGNUP": signup, "CHATAPP_MODELS": models, "CHATAPP_DEFAULT_MODEL": default_model, **limits}
    return values, errors


@bp.post("/admin/settings")
@admin_required
async def save_settings():
    """Save signup, the model list, the default model and the rate limits."""
    form = await request.form
    values, errors = _parse_settings(form)
    if errors:
        return await _render(status=400, errors=errors, form=form)
    async with current_app.db.acquire() as conn:
        async with conn.transaction():
            for key, value in values.items():
                await app_settings.upsert(conn, key, value, g.user.id)
    app_settings.forget(current_app)
    if is_htmx():
        return await _render(notice="Settings saved.")
    return redirect(url_for("admin.show", done="settings"), 303)


async def _set_disabled(user_id: str, disabled: bool):
    uid = parse_id(user_id)
    if uid is None:
        abort(404)
    if uid == g.user.id:
        abort(400, "You cannot disable your own account.")
    async with current_app.db.acquire() as conn:
        if await users.select_user(conn, uid) is None:
            abort(404)
        await users.update_disabled(conn, uid, disabled)
        account = await admin.select_user_usage(conn, uid)
    if disabled:
        # Sessions end now; API tokens are refused from the next request (checked each time).
        await sessions.revoke_all(uid)
    if is_htmx():
        return await render_template("_admin_user_row.html", account=account)
    return redirect(url_for("admin.show"), 303)


@bp.post("/admin/users/<user_id>/disable")
@admin_required
async def disable(user_id: str):
    """Disable an account: its sessions and API tokens stop working on the next request."""
    return await _set_disabled(user_id, True)


@bp.post("/admin/users/<user_id>/enable")
@admin_required
async def enable(user_id: str):
    """Enable a disabled account again (its user logs in anew)."""
    return await _set_disabled(user_id, False)
