"""Server-side sessions in Redis: an opaque random id in a cookie, data in a Redis hash.

Anonymous visitors get a short-lived session only when a page needs a CSRF token (login and
signup forms); logging in rotates the id. Every session id of a user is also kept in a set
so all of them can be revoked at once (logout everywhere, password change, disable); the
user's session epoch in PostgreSQL makes that revocation hold even when Redis cannot be
reached. While Redis is unreachable, a logged-in session keeps working from the signed copy
in its cookie (chatapp/session_fallback.py); logins and new sessions answer 503 until it is back.
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

from . import session_fallback

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
    epoch: int = 0  # the user's session epoch when this session was issued
    fallback: bool = False  # read from the signed cookie because Redis was unreachable


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
    cookie = request.cookies.get(SECURE_COOKIE_NAME) or request.cookies.get(COOKIE_NAME)
    sid, stamp = session_fallback.parse(current_app.config["SECRET_KEY"], cookie)
    if sid is None:
        return Session()
    store = current_app.redis
    key = _session_key(sid)
    missing = object()
    ttl = _ttl("logged-in")
    raw = await store.guarded(lambda: _read_and_slide(store.fast, key, ttl), default=missing)
    if raw is missing:  # Redis unreachable: the signed copy in the cookie may stand in
        now = time.time()
        if stamp is not None and session_fallback.usable(stamp, now):
            return Session(sid=sid, user_id=stamp.user_id, csrf=stamp.csrf, created=stamp.issued,
                           epoch=stamp.epoch, fallback=True)
        return Session()
    if not raw:
        return Session(ended=True)
    data = {k.decode(): v.decode() for k, v in raw.items()}
    session = Session(
        sid=sid,
        user_id=data.get("user_id") or None,
        csrf=data.get("csrf", ""),
        created=float(data.get("created", "0")),
        epoch=int(data.get("epoch", "0") or 0),
    )
    if session.user_id:
        # Keep the cookie's signed copy recent, so it can stand in during a Redis outage.
        if session_fallback.needs_refresh(stamp, time.time()) or (stamp and stamp.csrf != session.csrf):
            session.fresh = True
    return session


# Read a session and, when it is a logged-in one, push its end forward (sliding expiry): one
# round trip on every request instead of HGETALL then EXPIRE.
_READ_AND_SLIDE = """
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] == 'user_id' and fields[i + 1] ~= '' then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
  end
end
return fields
"""


async def _read_and_slide(redis, key: str, ttl: int) -> dict[bytes, bytes]:
    """The session hash (empty when gone), its expiry renewed if a user is logged in."""
    script = current_app.extensions.get("session_script")
    if script is None or script.registered_client is not redis:
        script = current_app.extensions["session_script"] = redis.register_script(_READ_AND_SLIDE)
    flat = await script(keys=[key], args=[ttl])
    return dict(zip(flat[::2], flat[1::2]))


def _ttl(user_id: str | None) -> int:
    if user_id:
        return int(current_app.config["CHATAPP_SESSION_DAYS"] * 86400)
    return ANONYMOUS_TTL_SECONDS


async def _store(session: Session) -> None:
    """Write a session's hash and index it under its user."""
    store = current_app.redis
    key = _session_key(session.sid)
    mapping = {"csrf": session.csrf, "created": str(session.created), "user_id": session.user_id or "",
               "epoch": str(session.epoch)}
    try:
        async with store.fast.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, _ttl(session.user_id))
            if session.user_id:
                index = _user_sessions_key(session.user_id)
                pipe.sadd(index, _digest(session.sid))
                pipe.expire(index, _ttl(session.user_id))
            await pipe.execute()
    except (RedisError, OSError) as exc:
        store.failed(exc)  # counts towards the breaker; the request answers 503
        raise


async def ensure_session() -> Session:
    """Return the request's session, creating an anonymous one (for its CSRF token) if needed."""
    session: Session = g.session
    if session.sid is None:
        current_app.redis.require()  # answered 503 at once while the breaker is open
        session.sid = secrets.token_urlsafe(32)
        session.csrf = secrets.token_urlsafe(32)
        session.created = time.time()
        session.fresh = True
        await _store(session)
    return session


async def login(user_id: str) -> Session:
    """Start a logged-in session with a new id (rotation defeats session fixation)."""
    old: Session = g.session
    current_app.redis.require()  # a session we could not revoke later is never issued
    if old.sid:
        await current_app.redis.fast.delete(_session_key(old.sid))
    async with current_app.db.acquire() as conn:
        from .models import users

        epoch = await users.select_session_epoch(conn, user_id)
    session = Session(
        sid=secrets.token_urlsafe(32), user_id=str(user_id), csrf=secrets.token_urlsafe(32),
        created=time.time(), fresh=True, epoch=epoch,
    )
    await _store(session)
    g.session = session
    return session


async def logout() -> None:
    """End the current session and clear its cookie."""
    session: Session = g.session
    if session.sid:
        store = current_app.redis

        async def forget() -> bool:
            await store.fast.delete(_session_key(session.sid))
            if session.user_id:
                await store.fast.srem(_user_sessions_key(session.user_id), _digest(session.sid))
            return True

        if not await store.guarded(forget, default=False) and session.user_id:
            # Redis is unreachable, so this one session cannot be deleted there: end all of the
            # user's sessions through PostgreSQL instead (a logout must never silently fail).
            await _bump_epoch(session.user_id)
    g.session = Session(ended=True)


async def _bump_epoch(user_id: str) -> None:
    from .models import users

    async with current_app.db.acquire() as conn:
        await users.bump_session_epoch(conn, user_id)


async def revoke_all(user_id: str) -> int:
    """End every session of a user (logout everywhere, password change, disable).

    PostgreSQL first (the epoch makes every existing session invalid even if Redis is down),
    then the Redis copies are deleted when Redis answers.
    """
    await _bump_epoch(str(user_id))
    store = current_app.redis
    index = _user_sessions_key(str(user_id))

    async def delete_all() -> int:
        digests = await store.fast.smembers(index)
        keys = [store.key("sess", d.decode()) for d in digests]
        if keys:
            await store.fast.delete(*keys)
        await store.fast.delete(index)
        return len(keys)

    return await store.guarded(delete_all, default=0)


async def set_cookie(response: Any) -> Any:
    """Send or clear the session cookie as the request's session requires."""
    session: Session | None = g.get("session")
    if session is None:
        return response
    secure = request.scheme == "https"
    if session.fresh and session.sid:
        stamp = None
        if session.user_id:
            stamp = session_fallback.Stamp(session.user_id, session.csrf, session.epoch, time.time())
        value = session_fallback.cookie_value(current_app.config["SECRET_KEY"], session.sid, stamp)
        response.set_cookie(
            _cookie_name(), value, max_age=_ttl(session.user_id), path="/",
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
            elif user.session_epoch != g.session.epoch:
                # Revoked (logout everywhere, password change) while Redis could not be told.
                g.session = Session(ended=True)
            else:
                g.user = user

    app.after_request(set_cookie)
