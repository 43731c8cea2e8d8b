"""Server-side sessions in Redis: an opaque random id in a cookie, data in a Redis hash.

Anonymous visitors get a short-lived session only when a page needs a CSRF token (login and
signup forms); logging in rotates the id. Every session id of a user is also kept in a set
so all of them can be revoked at once (logout everywhere, password change, disable).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable

from quart import Quart, current_app, g, redirect, request, url_for
from redis.exceptions import RedisError

ANONYMOUS_TTL_SECONDS = 2 * 3600
COOKIE_NAME = "chatapp_session"
SECURE_COOKIE_NAME = "__Host-chatapp_session"


@dataclass
class Session:
    """The current request's session."""

    sid: str | None = None
    user_id: str | None = None
    csrf: str = ""
    created: float = 0.0
    fresh: bool = False  # the cookie must be (re)sent
    ended: bool = False  # the cookie must be cleared
    data: dict[str, Any] = field(default_factory=dict)


def _cookie_name() -> str:
    """`__Host-` prefixed name when served over https (requires Secure, Path=/, no Domain)."""
    return SECURE_COOKIE_NAME if request.scheme == "https" else COOKIE_NAME


def _digest(sid: str) -> str:
    """Redis stores a keyed hash of the id, so a leaked Redis dump holds no usable session ids."""
    secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(secret, sid.encode(), hashlib.sha256).hexdigest()


def _session_key(sid: str) -> str:
    return current_app.redis.key("sess", _digest(sid))


def _user_sessions_key(user_id: str) -> str:
    return current_app.redis.key("user_sessions", user_id)


async def load_session() -> Session:
    """Read the session named by the request cookie (an empty Session when there is none)."""
    sid = request.cookies.get(SECURE_COOKIE_NAME) or request.cookies.get(COOKIE_NAME)
    if not sid or len(sid) > 64:
        return Session()
    redis = current_app.redis.fast
    key = _session_key(sid)
    try:
        raw = await redis.hgetall(key)
    except (RedisError, OSError):
        return Session()
    if not raw:
        return Session(ended=True)
    data = {k.decode(): v.decode() for k, v in raw.items()}
    session = Session(
        sid=sid,
        user_id=data.get("user_id") or None,
        csrf=data.get("csrf", ""),
        created=float(data.get("created", "0")),
    )
    if session.user_id:
        # Sliding expiry: each visit pushes the end of a logged-in session forward.
        try:
            await redis.expire(key, _ttl(session.user_id))
        except (RedisError, OSError):
            pass
    return session


def _ttl(user_id: str | None) -> int:
    if user_id:
        return int(current_app.config["CHATAPP_SESSION_DAYS"] * 86400)
    return ANONYMOUS_TTL_SECONDS


async def _store(session: Session) -> None:
    """Write a session's hash and index it under its user."""
    redis = current_app.redis.fast
    key = _session_key(session.sid)
    mapping = {"csrf": session.csrf, "created": str(session.created), "user_id": session.user_id or ""}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, _ttl(session.user_id))
        if session.user_id:
            index = _user_sessions_key(session.user_id)
            pipe.sadd(index, _digest(session.sid))
            pipe.expire(index, _ttl(session.user_id))
        await pipe.execute()


async def ensure_session() -> Session:
    """Return the request's session, creating an anonymous one (for its CSRF token) if needed."""
    session: Session = g.session
    if session.sid is None:
        session.sid = secrets.token_urlsafe(32)
        session.csrf = secrets.token_urlsafe(32)
        session.created = time.time()
        session.fresh = True
        await _store(session)
    return session


async def login(user_id: str) -> Session:
    """Start a logged-in session with a new id (rotation defeats session fixation)."""
    old: Session = g.session
    if old.sid:
        await current_app.redis.fast.delete(_session_key(old.sid))
    session = Session(
        sid=secrets.token_urlsafe(32), user_id=str(user_id), csrf=secrets.token_urlsafe(32),
        created=time.time(), fresh=True,
    )
    await _store(session)
    g.session = session
    return session


async def logout() -> None:
    """End the current session and clear its cookie."""
    session: Session = g.session
    if session.sid:
        redis = current_app.redis.fast
        await redis.delete(_session_key(session.sid))
        if session.user_id:
            await redis.srem(_user_sessions_key(session.user_id), _digest(session.sid))
    g.session = Session(ended=True)


async def revoke_all(user_id: str) -> int:
    """End every session of a user (logout everywhere, password change, disable)."""
    redis = current_app.redis.fast
    index = _user_sessions_key(str(user_id))
    digests = await redis.smembers(index)
    keys = [current_app.redis.key("sess", d.decode()) for d in digests]
    if keys:
        await redis.delete(*keys)
    await redis.delete(index)
    return len(keys)


async def set_cookie(response: Any) -> Any:
    """Send or clear the session cookie as the request's session requires."""
    session: Session | None = g.get("session")
    if session is None:
        return response
    secure = request.scheme == "https"
    if session.fresh and session.sid:
        response.set_cookie(
            _cookie_name(), session.sid, max_age=_ttl(session.user_id), path="/",
            httponly=True, secure=secure, samesite="Lax",
        )
    elif session.ended:
        for name in (COOKIE_NAME, SECURE_COOKIE_NAME):
            if name in request.cookies:
                response.delete_cookie(name, path="/", secure=name == SECURE_COOKIE_NAME,
                                       httponly=True, samesite="Lax")
    return response


def login_required(view: Callable) -> Callable:
    """Redirect anonymous page requests to /login (303)."""

    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            if request.headers.get("HX-Request"):
                response = current_app.response_class("", status=401)
                response.headers["HX-Redirect"] = url_for("auth.login")
                return response
            return redirect(url_for("auth.login"), 303)
        return await view(*args, **kwargs)

    wrapper.login_required = True  # read by the route meta-tests
    return wrapper


def init_app(app: Quart) -> None:
    """Load the session and user before each request; set the cookie after."""

    @app.before_request
    async def _load() -> None:
        g.session = await load_session()
        g.user = None
        if g.session.user_id:
            from .models import users

            async with app.db.acquire() as conn:
                user = await users.select_user(conn, g.session.user_id)
            if user is None or user.disabled_at is not None:
                # Disabled or deleted accounts lose their sessions on the next request.
                await revoke_all(g.session.user_id)
                g.session = Session(ended=True)
            else:
                g.user = user

    app.after_request(set_cookie)
