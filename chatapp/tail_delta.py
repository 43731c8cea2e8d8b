"""Bring a reader's streamed answer up to date by editing what it shows, not re-sending it.

A streamed answer's open part changes with every chunk. Re-sending its HTML each time costs
bytes that grow with it, so such frames must be throttled and a chunk could wait ~150 ms to
show. Most chunks only add text at the end of the innermost element (`<p>Hello wor</p>` ->
`<p>Hello world</p>`) or add a new block after the last one; for those the page gets a `delta`
event `+<depth> <html>`: append the balanced html inside the element found by walking `depth`
times to the last child (depth 0: after the last block). Anything else (emphasis closing, a
link completing, Pygments re-tokenising) replaces only the last block: `= <html>` (throttled by
the caller). The html is always a piece of the server's sanitised render cut at tag boundaries.
"""
from __future__ import annotations

import re

_NAME = re.compile(r"[a-z][a-z0-9]*")
# Attribute values are double-quoted in the sanitiser's output and may hold ">" (a "<" in one
# makes `balanced` refuse the piece: the caller then re-sends the whole tail).
_TAG = re.compile(r'<(/?)([a-z][a-z0-9]*)((?:\s+[^\s"\'>/=]+(?:="[^"]*")?)*)\s*/?>')
_VOID = frozenset({"br", "hr", "img", "input", "wbr", "col"})
# Fragment parsing in these contexts differs from parsing the whole document (the newline
# after <pre>, table sections): append only where both parse the same.
_NO_APPEND_INTO = frozenset({"pre", "table", "thead", "tbody", "tfoot", "tr", "colgroup"})


def balanced(fragment: str) -> bool:
    """True when every tag the fragment opens it also closes, in order."""
    if fragment.count("<") != len(_TAG.findall(fragment)):
        return False  # a "<" that is not a whole tag: never guess
    stack: list[str] = []
    for match in _TAG.finditer(fragment):
        closing, name = match.group(1), match.group(2)
        if name in _VOID:
            continue
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


def trailing_closers(html: str) -> tuple[int, list[tuple[str, str]]]:
    """Where the run of closing tags ending `html` starts, and its tags innermost first.

    Each tag's text includes the whitespace after it. Scans from the end: the cost does not
    grow with the answer.
    """
    closers: list[tuple[str, str]] = []
    pos = len(html)
    while True:
        end = pos
        while end > 0 and html[end - 1].isspace():
            end -= 1
        if end < 4 or html[end - 1] != ">":
            break
        start = html.rfind("<", 0, end - 1)
        name = html[start + 2: end - 1]
        if start < 0 or html[start + 1] != "/" or not _NAME.fullmatch(name):
            break
        closers.append((html[start:pos], name))
        pos = start
    closers.reverse()
    return pos, closers


def append_delta(old: str, new: str) -> tuple[int, str] | None:
    """(depth, html) such that appending html inside the depth-th last child of old gives new.

    Depth 0 appends after the last top-level element (a new block), depth 1 inside it. None
    when new is not old with HTML added at the end of one element (send the whole tail then).
    """
    if not old or len(new) <= len(old):
        return None
    body_end, closers = trailing_closers(old)
    if not new.startswith(old[:body_end]):
        return None
    for kept in range(len(closers) + 1):  # innermost first: where text usually grows
        if kept < len(closers) and closers[kept][1] in _NO_APPEND_INTO:
            continue
        head_end = body_end + sum(len(text) for text, _ in closers[:kept])
        rest = old[head_end:]
        fragment_end = len(new) - len(rest)
        if fragment_end <= head_end or not new.endswith(rest) or new[:head_end] != old[:head_end]:
            continue
        fragment = new[head_end:fragment_end]
        if balanced(fragment):
            return len(closers) - kept, fragment
    return None


def last_element_start(html: str) -> int | None:
    """Where the last top-level element of `html` starts; None unless html is only elements."""
    if html.count("<") != len(_TAG.findall(html)):
        return None
    depth, last, pos = 0, None, 0
    for match in _TAG.finditer(html):
        if depth == 0 and html[pos: match.start()].strip():
            return None  # text outside any element
        closing, name = match.group(1), match.group(2)
        if depth == 0 and not closing:
            last = match.start()
        if name not in _VOID:
            depth += -1 if closing else 1
            if depth < 0:
                return None
        pos = match.end()
    if depth != 0 or html[pos:].strip():
        return None
    return last


class ShownTail:
    """What one reader's tail element shows, and the edit that brings it to a new view."""

    def __init__(self) -> None:
        self.html = ""
        self.last_start: int | None = None  # where its last top-level element starts

    def replace(self, html: str) -> None:
        """The reader was sent `html` whole."""
        self.html, self.last_start = html, last_element_start(html)

    def edit(self, view: str, may_replace: bool) -> str | None:
        """The `delta` data turning the shown HTML into `view`, or None (send it whole).

        An append is always offered; replacing the last block only when `may_replace`.
        """
        if not self.html:
            return None
        appended = append_delta(self.html, view)
        if appended is not None:
            depth, fragment = appended
            if depth == 0:
                start = last_element_start(fragment)
                self.last_start = None if start is None else len(self.html) + start
            self.html = view
            return f"+{depth} {fragment}"
        start = self.last_start
        if not may_replace or start is None or view[:start] != self.html[:start]:
            return None
        fragment = view[start:]
        inner = last_element_start(fragment)
        if inner is None:
            return None
        self.html, self.last_start = view, start + inner
        return f"= {fragment}"
