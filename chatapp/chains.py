"""The ids of a branch, remembered per leaf in this process, so a page of a long thread skips the
walk up its whole branch (a recursive query of ~2.5 ms for 1,000 messages).

Safe without invalidation: a message's parent never changes, so the ancestors of a leaf are
fixed for good. A message that is gone (a deleted or archived thread) shows up as a missing
row when the shown messages are read, and the caller then walks the branch again.
"""
from __future__ import annotations

import uuid
from collections import OrderedDict

MAX_BYTES = 4 * 1024 * 1024  # 16 bytes per message: 262,144 remembered ids per process
ID_BYTES = 16


class Chains:
    """A byte-bounded LRU of leaf id -> the branch's ids, root first, 16 bytes each."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[uuid.UUID, bytes] = OrderedDict()

    def get(self, leaf: uuid.UUID) -> bytes | None:
        """The branch ending at `leaf`, if remembered."""
        chain = self._items.get(leaf)
        if chain is not None:
            self._items.move_to_end(leaf)
        return chain

    def put(self, leaf: uuid.UUID, chain: bytes) -> None:
        """Remember a branch (one larger than the whole budget is not kept)."""
        self.forget(leaf)
        if not chain or len(chain) > self.max_bytes:
            return
        self._items[leaf] = chain
        self.size += len(chain)
        while self.size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)

    def forget(self, leaf: uuid.UUID) -> None:
        """Drop a branch that no longer matches the database."""
        chain = self._items.pop(leaf, None)
        if chain is not None:
            self.size -= len(chain)


def window(chain: bytes, last: int | None, before: uuid.UUID | None) -> tuple[list[uuid.UUID], int, int]:
    """The shown ids (the newest `last` before `before`), the branch's length and how many come
    before `before` (the whole branch without it; 0 when `before` is not on the branch)."""
    total = len(chain) // ID_BYTES
    upto = total
    if before is not None:
        wanted = before.bytes
        upto = next((i for i in range(total) if chain[i * ID_BYTES:(i + 1) * ID_BYTES] == wanted), None)
        if upto is None:
            return [], total, 0
    first = max(upto - last, 0) if last else 0
    return [uuid.UUID(bytes=chain[i * ID_BYTES:(i + 1) * ID_BYTES]) for i in range(first, upto)], total, upto
