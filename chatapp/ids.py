"""UUIDv7 ids: time-sortable, unguessable, unique across databases."""
from __future__ import annotations

import os
import threading
import time
import uuid


_last = 0
_lock = threading.Lock()


def uuid7() -> uuid.UUID:
    """Return a new RFC 9562 version 7 UUID (48-bit ms timestamp + 74 random bits).

    Monotonic within a process (RFC 9562 "monotonic random"): an id made in the same
    millisecond as the previous one is that one plus one, so ids sort in the order they were
    made. Rows inserted by one statement share `created_at`; their ids keep question before answer.
    """
    global _last
    millis = time.time_ns() // 1_000_000
    rand_a = int.from_bytes(os.urandom(2), "big") & 0xFFF
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    with _lock:
        if value <= _last:
            value = _last + 1
        _last = value
    return uuid.UUID(int=value)


def parse_id(text: str) -> uuid.UUID | None:
    """Parse a path id; None for anything malformed (callers answer 404)."""
    try:
        return uuid.UUID(str(text))
    except (ValueError, TypeError, AttributeError):
        return None
