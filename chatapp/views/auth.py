"""Accounts: signup, login, logout."""
from __future__ import annotations

import re

from quart import Blueprint, current_app, g, redirect, request, url_for

from .. import ratelimit, sessions
from ..models import app_settings, users
from ..templating import page

bp = Blueprint("auth", __name__)

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
LOGIN_WINDOW = 15 * 60
GENERIC_LOGIN_ERROR = "Wrong email or password."


def validate_credentials(email: str, password: str) -> dict[str, str]:
    """Field errors for a signup (empty when the input is acceptable)."""
    errors = {}
    if not EMAIL_RE.match(email or ""):
        errors["email"] = "Enter a valid email address."
    if len(password or "") < MIN_PASSWORD:
        errors["password"] = f"Use at least {MIN_PASSWORD} characters."
    elif len(password) > MAX_PASSWORD:
        errors["password"] = f"Use at most {MAX_PASSWORD} characters."
    return errors


async def _form_page(template: str, status: int = 200, **context):
    await sessions.ensure_session()
    return await page(template, block="form", status=status, **context)


@bp.route("/signup", methods=["GET", "POST"])
async def signup():
    """Create an account and log in."""
    if g.user is not None:
        return redirect(url_for("threads.home"), 303)
    runtime = await app_settings.effective(current_app)
    if runtime["CHATAPP_SIGNUP"] != "open":
        return await _form_page("signup.html", status=403, closed=True, errors={}, email="")
    if request.method == "GET":
        return await _form_page("signup.html", errors={}, email="")
    form = await request.form
    email = form.get("email", "").strip()
    password = form.get("password", "")
    errors = validate_credentials(email, password)
    if not errors:
        async with current_app.db.acquire() as conn:
            user = await users.insert_user(conn, email, password)
        if user is None:
            errors["email"] = "An account with this email already exists. Log in instead?"
    if errors:
        return await _form_page("signup.html", status=400, errors=errors, email=email)
    await sessions.login(user.id)
    return _landing()


def _landing():
    """After login/signup: go home with a full page load.

    HX-Redirect, not HX-Location: the session (and so its CSRF token) was just rotated, and
    only a full load replaces the token that <body hx-headers> carries.
    """
    target = url_for("threads.home")
    if request.headers.get("HX-Request"):
        response = current_app.response_class("", status=200)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, 303)


@bp.route("/login", methods=["GET", "POST"])
async def login():
    """Log in with email and password."""
    if g.user is not None:
        return redirect(url_for("threads.home"), 303)
    if request.method == "GET":
        return await _form_page("login.html", errors={}, email="")
    form = await request.form
    email = form.get("email", "").strip()
    password = form.get("password", "")
    limit = current_app.config["CHATAPP_LOGIN_ATTEMPTS_PER_15_MIN"]
    subjects = [("login-email", email.lower()), ("login-ip", request.remote_addr or "?")]
    for name, subject in subjects:
        if await ratelimit.peek(name, subject, LOGIN_WINDOW) >= limit:
            return await _form_page(
                "login.html", status=429, email=email,
                errors={"form": "Too many failed attempts. Wait a few minutes and try again."},
            )
    async with current_app.db.acquire() as conn:
        user = await users.select_user_by_email(conn, email)
    ok = await users.check_password(user, password) and user.disabled_at is None
    if not ok:
        for name, subject in subjects:
            await ratelimit.hit(name, subject, limit, LOGIN_WINDOW)
        return await _form_page("login.html", status=400, email=email, errors={"form": GENERIC_LOGIN_ERROR})
    await ratelimit.reset("login-email", email.lower(), LOGIN_WINDOW)
    await sessions.login(user.id)
    return _landing()


@bp.post("/logout")
async def logout():
    """End the session."""
    await sessions.logout()
    return redirect(url_for("auth.login"), 303)
