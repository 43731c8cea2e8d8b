"""Markdown from the model (untrusted) to safe HTML, whole and incremental for streaming.

Pipeline: markdown-it-py (`js-default`: no raw HTML) with our own rules for code, links
and images -> nh3 with an explicit allow-list. The output may be inserted into a page
without further escaping; callers still wrap it in an `hx-disable` element.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES, Text
from pygments.util import ClassNotFound

# Part of the rendered-fragment cache key: bump whenever the HTML produced changes.
RENDERER_VERSION = "3"  # 2: code blocks are keyboard-focusable (tabindex); 3: entries hold the article too

_CLASS_PREFIX = "hl-"  # token classes stay clear of app.css names such as `.err`
_LIGHT_STYLE = "default"
_DARK_STYLE = "github-dark"
_MAX_HIGHLIGHT_CHARS = 100_000  # beyond this, plain text: some lexers are slow on odd input
_MAX_LANG_LABEL = 40
_TAIL_CHUNK_CHARS = 400  # see _highlight_chunked

_LINK_URL = re.compile(r"(?i)(?:https?|mailto):")
_IMAGE_URL = re.compile(r"(?i)https?:")
# The same normalisation markdown-it applies before parsing; block line numbers
# (token.map) refer to the normalised text, so splitting must use it too.
_NEWLINES = re.compile(r"\r\n?")
_ALIGN_STYLE = re.compile(r"text-align:(left|center|right)")
_ALIGN_CLASSES = {"al-left", "al-center", "al-right"}

_FORMATTER = HtmlFormatter(nowrap=True, classprefix=_CLASS_PREFIX)


@functools.lru_cache(maxsize=128)  # bounded: the language name comes from the model
def _lexer(lang: str) -> Lexer | None:
    """Return a Pygments lexer for a fence language, or None when unknown."""
    if not lang:
        return None
    try:
        # stripnl/ensurenl off: the code must survive byte for byte for the copy button.
        return get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def _highlight(code: str, lexer: Lexer) -> str:
    """Highlight code to class-only spans, keeping its text byte for byte."""
    html = highlight(code, lexer, _FORMATTER)
    # HtmlFormatter ends an unterminated last line with "\n" (an open fence's last line).
    return html[:-1] if html.endswith("\n") and not code.endswith("\n") else html


def _highlight_chunked(code: str, lexer: Lexer, chunks: list[tuple[str, str]]) -> str:
    """Highlight a growing open code block, reusing whole-line chunks done earlier."""
    # Re-lexing all of a long block on every delta is quadratic. Chunks of whole lines
    # are highlighted once; cut points depend on the text only, not on the deltas. Lexer
    # state does not cross a cut, so colours there may be off until the block completes
    # and is rendered whole.
    done = 0
    for i, (source, _) in enumerate(chunks):
        if not code.startswith(source, done):
            del chunks[i:]
            break
        done += len(source)
    while (cut := code.find("\n", done + _TAIL_CHUNK_CHARS)) != -1:
        chunks.append((code[done : cut + 1], _highlight(code[done : cut + 1], lexer)))
        done = cut + 1
    return "".join(html for _, html in chunks) + _highlight(code[done:], lexer)


def _code_html(code: str, lang: str, chunks: list[tuple[str, str]] | None = None) -> str:
    """Render one code block: a bar with language label and copy button, then the code."""
    lexer = _lexer(lang.lower())
    if lexer is None or len(code) > _MAX_HIGHLIGHT_CHARS:
        body = escapeHtml(code)
    elif chunks is None:
        body = _highlight(code, lexer)
    else:
        body = _highlight_chunked(code, lexer, chunks)
    label = escapeHtml(lang[:_MAX_LANG_LABEL] or "text")
    return (
        '<div class="code"><div class="code-bar">'
        f'<span class="lang">{label}</span>'
        '<button type="button" class="copy" aria-label="Copy code">Copy</button>'
        # tabindex: a long line scrolls the block sideways, which keyboard users must reach too.
        f'</div><pre class="hl" tabindex="0"><code>{body}</code></pre></div>\n'
    )


def _render_fence(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    info = unescapeAll(token.info).strip()
    lang = info.split(maxsplit=1)[0] if info else ""
    # Only the streaming tail passes a chunk cache (see IncrementalRenderer).
    cache = env.get("code_chunks")
    chunks = None if cache is None else cache.setdefault((token.map[0], lang), [])
    return _code_html(token.content, lang, chunks)


def _render_code_block(
    self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any
) -> str:
    return _code_html(tokens[idx].content, "")


def _render_image(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    # Never an <img>: loading an image URL the model chose could leak the conversation.
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    src = str(token.attrGet("src") or "")
    if token.meta.get("in_link") or not _IMAGE_URL.match(src):
        return escapeHtml(alt)
    return f'<a href="{escapeHtml(src)}" class="img-link">{escapeHtml(alt or src)}</a>'


def _filter_links(state: StateCore) -> None:
    """Core rule: unwrap links with unsafe targets; mark images inside links."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        kept: list[Token] = []
        in_link = dropping = False
        # Markdown links cannot nest, so the next link_close matches the last link_open.
        for tok in block.children:
            if tok.type == "link_open":
                in_link = True
                dropping = not _LINK_URL.match(str(tok.attrGet("href") or ""))
                if dropping:
                    continue
                tok.attrs = {"href": tok.attrs["href"]}  # the title goes too
            elif tok.type == "link_close":
                in_link = False
                if dropping:
                    dropping = False
                    continue
            elif tok.type == "image" and in_link:
                tok.meta["in_link"] = True  # an <a> inside an <a> would be re-parented
            kept.append(tok)
        block.children = kept


def _align_to_class(state: StateCore) -> None:
    """Core rule: turn table cells' style="text-align:x" into class="al-x" (no style allowed)."""
    for tok in state.tokens:
        if tok.type in ("th_open", "td_open") and "style" in tok.attrs:
            match = _ALIGN_STYLE.fullmatch(str(tok.attrs.pop("style")))
            if match:
                tok.attrSet("class", f"al-{match.group(1)}")


def _make_markdown() -> MarkdownIt:
    """Build the parser: js-default (raw HTML off), tables, strikethrough, our rules."""
    md = MarkdownIt("js-default").enable(["table", "strikethrough"])
    # A reference definition may arrive after the block that uses it, which would change a
    # block already streamed; `[x]: url` lines therefore stay plain text everywhere.
    md.disable("reference")
    # Let every link parse, so a bad one renders as its text rather than as raw Markdown;
    # _filter_links and nh3 decide what may be a link.
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    md.core.ruler.push("filter_links", _filter_links)
    md.core.ruler.push("align_to_class", _align_to_class)
    md.add_render_rule("fence", _render_fence)
    md.add_render_rule("code_block", _render_code_block)
    md.add_render_rule("image", _render_image)
    return md


_MD = _make_markdown()

_CLEANER = nh3.Cleaner(
    tags={
        "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s",
        "code", "pre", "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr",
        "th", "td", "a", "div", "span", "button",
    },  # fmt: skip
    clean_content_tags={"script", "style"},
    # "*": nothing on every tag (nh3 would otherwise keep `title` and `lang` everywhere).
    attributes={"*": set(), "a": {"href"}, "ol": {"start"}},
    tag_attribute_values={"button": {"type": {"button"}, "aria-label": {"Copy code"}}, "pre": {"tabindex": {"0"}}},
    # Only classes we emit ourselves, so output can never hook into app CSS or JS.
    allowed_classes={
        "a": {"img-link"},
        "div": {"code", "code-bar"},
        "span": {"lang"} | {_CLASS_PREFIX + c for c in STANDARD_TYPES.values() if c},
        "pre": {"hl"},
        "button": {"copy"},
        "th": _ALIGN_CLASSES,
        "td": _ALIGN_CLASSES,
    },
    link_rel="noopener nofollow ugc",
    url_schemes={"http", "https", "mailto"},
    url_relative="deny",
    strip_comments=True,
)


def _normalize(text: str) -> str:
    """Apply markdown-it's input normalisation (line endings, NUL)."""
    if "\r" in text:
        text = _NEWLINES.sub("\n", text)
    return text.replace("\0", "\ufffd")


def render_markdown(text: str) -> str:
    """Render untrusted Markdown to sanitised HTML, safe to insert without escaping."""
    return _CLEANER.clean(_MD.render(text))


def split_blocks(text: str) -> tuple[list[str], str]:
    """Split Markdown into the sources of its complete top-level blocks and the open tail."""
    text = _normalize(text)
    # A partial last line may still change meaning ("#" is a heading, "#x" is not), so
    # only whole lines decide where blocks end.
    settled = text[: text.rfind("\n") + 1]
    starts = [
        tok.map[0]
        for tok in _MD.parse(settled)
        if tok.level == 0 and tok.nesting >= 0 and tok.map is not None
    ]
    # The last block is open: a later line may still extend it (lists, tables, setext
    # headings, unclosed fences, lazy continuations). Blocks before it were closed by a
    # whole line, and markdown block parsing never reopens a closed block.
    if len(starts) < 2:
        return [], text
    # Not str.splitlines(): it splits on characters markdown-it treats as text.
    line_offsets = [0]
    for line in settled.split("\n")[: starts[-1]]:
        line_offsets.append(line_offsets[-1] + len(line) + 1)
    bounds = [0] + [line_offsets[line] for line in starts[1:]]
    blocks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    return blocks, text[bounds[-1] :]


class IncrementalRenderer:
    """Render a growing answer: complete blocks are emitted once, the open tail each time."""

    split = staticmethod(split_blocks)

    def __init__(self) -> None:
        self._text = ""  # normalised text seen so far
        self._done = 0  # offset in _text where the open part starts
        self._settled = 0  # length of whole lines in _text at the last split
        self._count = 0
        self._tail: tuple[str, str] = ("", "")  # (source, html) of the last tail
        self._code_chunks: dict[Any, list[tuple[str, str]]] = {}  # for the tail's fences

    @property
    def completed_count(self) -> int:
        """Number of blocks emitted as complete so far."""
        return self._count

    def update(self, text: str) -> tuple[list[str], str]:
        """Take the full text so far; return HTML of newly completed blocks and of the tail."""
        text = _normalize(text)
        if not text.startswith(self._text):
            raise ValueError("update() needs the full text so far, extending the previous one")
        self._text = text
        new_blocks: list[str] = []
        settled = text.rfind("\n") + 1
        # Completed blocks are fixed, so only the open part is re-parsed, and only when a
        # new whole line arrived (nothing else can close a block).
        if settled > self._settled:
            self._settled = settled
            sources, _ = split_blocks(text[self._done :])
            for source in sources:
                new_blocks.append(render_markdown(source))
                self._done += len(source)
            self._count += len(sources)
            if sources:
                self._code_chunks.clear()  # the tail starts elsewhere now
        tail_source = text[self._done :]
        if tail_source != self._tail[0]:
            env = {"code_chunks": self._code_chunks}
            self._tail = (tail_source, _CLEANER.clean(_MD.render(tail_source, env)))
        return new_blocks, self._tail[1]


def _declarations(style_name: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Return a Pygments style's base declarations and per-token-class declarations."""
    formatter = HtmlFormatter(style=style_name, classprefix=_CLASS_PREFIX)
    rules: dict[str, dict[str, str]] = {}
    for cls, (css, _ttype, _level) in formatter.class2style.items():
        decls = dict(d.split(": ", 1) for d in css.split("; ") if d)
        # Error boxes flash on every half-streamed string literal; colours are enough.
        decls.pop("border", None)
        # Plain text has no class (its colour is the base .hl colour): a selector ".hl ." is
        # invalid CSS and would drop every other selector sharing its rule.
        if decls and cls:
            rules[cls] = decls
    style = formatter.style
    text_color = style.style_for_token(Text)["color"]
    # Explicit text colour: a forced theme must not inherit the other theme's page colour.
    base = {"color": f"#{text_color or '000'}", "background": style.background_color}
    return base, rules


# Values that undo a property the other theme sets but this one does not.
_RESETS = {
    "color": "inherit",
    "background-color": "transparent",
    "font-weight": "normal",
    "font-style": "normal",
    "text-decoration": "none",
}


def _rules(
    scope: str,
    rules: dict[str, dict[str, str]],
    base: dict[str, str],
    other: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """CSS lines for one theme under `scope`, resetting what `other` sets and it does not."""
    other = other or {}
    by_body: dict[str, list[str]] = {}  # classes sharing declarations share one rule
    for cls in sorted(set(rules) | set(other)):
        decls = dict(rules.get(cls, {}))
        for prop in other.get(cls, {}):
            decls.setdefault(prop, _RESETS.get(prop, "initial"))
        body = ";".join(f"{k}:{v}" for k, v in decls.items())
        by_body.setdefault(body, []).append(f"{scope}.hl .{cls}")
    lines = [f"{scope}.hl{{{';'.join(f'{k}:{v}' for k, v in base.items())}}}"]
    lines += [f"{','.join(selectors)}{{{body}}}" for body, selectors in by_body.items()]
    return lines


def pygments_css() -> str:
    """Return the code-highlighting stylesheet: light, dark by OS preference or by toggle."""
    light_base, light = _declarations(_LIGHT_STYLE)
    dark_base, dark = _declarations(_DARK_STYLE)
    lines = ["/* Generated by chatapp.render.write_pygments_css(); do not edit. */"]
    lines += _rules("", light, light_base)
    lines += _rules("[data-theme=dark] ", dark, dark_base, light)
    lines.append("@media (prefers-color-scheme: dark) {")
    lines += _rules("", dark, dark_base, light)
    lines += _rules("[data-theme=light] ", light, light_base, dark)
    lines.append("}")
    return "\n".join(lines) + "\n"


STATIC_CSS = Path(__file__).resolve().parent.parent / "static" / "pygments.css"


def write_pygments_css(path: Path = STATIC_CSS) -> Path:
    """Write pygments_css() to `path` (static/pygments.css by default) and return it."""
    path.write_text(pygments_css(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_pygments_css())
