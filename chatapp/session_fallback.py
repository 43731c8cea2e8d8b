"""A signed copy of a logged-in session inside its cookie, used only while Redis is unreachable.

The cookie value is `<sid>.<payload>.<signature>`: the random session id (the Redis key, as
before), then base64url JSON {u: user id, c: CSRF token, e: session epoch, t: issue time},
then an HMAC-SHA256 (SECRET_KEY) over both. While Redis answers, only the sid matters. While it
does not, a cookie whose stamp is younger than FALLBACK_MAX_AGE_SECONDS is accepted, provided
the user (read from PostgreSQL on every request anyway) exists, is not disabled and still has
the epoch the stamp names: logout everywhere, password change and disabling an account bump the
epoch in PostgreSQL, so they hold even during the outage. The stamp is re-issued at most every
REFRESH_SECONDS while Redis works, so an active session always carries a recent one.

Trade-off: a single-session logout deletes the Redis key; a stolen copy of that cookie would
still pass the fallback during a Redis outage until its stamp is FALLBACK_MAX_AGE_SECONDS old.
When the logout itself happens during an outage, sessions.logout bumps the epoch instead.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

FALLBACK_MAX_AGE_SECONDS = 24 * 3600
REFRESH_SECONDS = 3600
MAX_SID_CHARS = 64


@dataclass(frozen=True)
class Stamp:
    """The signed facts about a logged-in session."""

    user_id: str
    csrf: str
    epoch: int
    issued: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, sid: str, payload: str) -> str:
    mac = hmac.new(secret.encode(), f"chatapp-session|{sid}|{payload}".encode(), hashlib.sha256)
    return _b64(mac.digest())


def cookie_value(secret: str, sid: str, stamp: Stamp | None) -> str:
    """The cookie for a session: the bare sid (anonymous) or sid, payload and signature."""
    if stamp is None:
        return sid
    data = {"u": stamp.user_id, "c": stamp.csrf, "e": stamp.epoch, "t": int(stamp.issued)}
    payload = _b64(json.dumps(data, separators=(",", ":")).encode())
    return f"{sid}.{payload}.{_signature(secret, sid, payload)}"


def parse(secret: str, value: str | None) -> tuple[str | None, Stamp | None]:
    """(sid, verified stamp or None) of a cookie value; (None, None) when it is malformed."""
    if not value or len(value) > 1024:
        return None, None
    sid, _, rest = value.partition(".")
    if not sid or len(sid) > MAX_SID_CHARS:
        return None, None
    if not rest:
        return sid, None
    payload, _, signature = rest.partition(".")
    if not hmac.compare_digest(signature.encode(), _signature(secret, sid, payload).encode()):
        return sid, None  # a forged or foreign stamp is ignored; the sid may still be valid in Redis
    try:
        data = json.loads(_unb64(payload))
        return sid, Stamp(str(data["u"]), str(data["c"]), int(data["e"]), float(data["t"]))
    except (ValueError, KeyError, TypeError):
        return sid, None


def usable(stamp: Stamp | None, now: float) -> bool:
    """True when the stamp may stand in for the Redis session (recent enough, not from the future)."""
    return stamp is not None and -60 <= now - stamp.issued <= FALLBACK_MAX_AGE_SECONDS


def needs_refresh(stamp: Stamp | None, now: float) -> bool:
    """True when the cookie should be re-sent with a new stamp (missing or older than an hour)."""
    return stamp is None or now - stamp.issued >= REFRESH_SECONDS
