"""`delta` edits of a streamed answer: applied as the page applies them, they give the render.

The relay keeps what each reader's tail element shows (`ShownTail`) and sends the cheapest edit:
an append at a depth, or a replacement of the last block. Here every edit is applied with
BeautifulSoup exactly as static/app.js applies it (tests/streamtools.apply_delta) and the
result must parse to the same document as the view the server meant, for real answers cut at
every position and for the XSS corpus.
"""
from __future__ import annotations

import random
import re
import warnings

import pytest
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning
from hypothesis import given, settings
from hypothesis import strategies as st

from chatapp import render
from chatapp.relay import wrap_block
from chatapp.tail_delta import ShownTail, append_delta, balanced, last_element_start, trailing_closers
from streamtools import apply_delta
from xss_corpus import CONTEXTS, in_context, payloads, problems

# Fragments like " more" look like file names to BeautifulSoup; they are HTML here.
warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning)

ANSWERS = [
    "## Plan\n\nFirst we *read* the file, then **write** it.\n\n- one\n- two with `code`\n- three\n\n"
    "```python\ndef f(x):\n    return [i * x for i in range(10)]\n```\n\nDone, see [docs](https://example.com).",
    "1. alpha\n2. beta\n   continued\n3. gamma\n\n> quoted *words* here\n> and more\n\n| a | b |\n|---|---|\n"
    "| 1 | 2 |\n| 3 | 4 |\n\nLast line with ~~strike~~ and a_b_c.",
    "Plain paragraph that goes on for a while without any formatting at all, like most answers do.\n"
    "A soft break, then\n\nanother paragraph.\n\n---\n\n```\nno language\n  indented\n```\n",
    "Nested:\n\n- outer\n  - inner one\n  - inner **two**\n- back out\n\nText & <angle> \"quotes\" 'single'.",
]


def _normal(html: str) -> str:
    """A document's structure and text, blind to whitespace between tags."""
    return re.sub(r">\s+<", "><", str(BeautifulSoup(html, "html.parser"))).strip()


def _stream(text: str, cuts: list[int], may_replace) -> tuple[str, ShownTail, list[str]]:
    """Feed text to the renderer at `cuts`, editing a shown tail as the relay does.

    Returns the page's tail element HTML, the server's idea of it, and the edits sent.
    """
    renderer, shown = render.IncrementalRenderer(), ShownTail()
    unsealed, page, edits = "", wrap_block(""), []
    for end in cuts + [len(text)]:
        blocks, tail = renderer.update(text[:end])
        unsealed += "".join(blocks)
        view = unsealed + tail
        if view == shown.html:
            continue
        edit = shown.edit(view, may_replace())
        if edit is None:  # the relay sends the tail element whole
            shown.replace(view)
            page = wrap_block(view)
        else:
            edits.append(edit)
            page = apply_delta(page, edit)
        assert _normal(page) == _normal(wrap_block(view)), (text[:end], edit)
    return page, shown, edits


@pytest.mark.parametrize("answer", ANSWERS, ids=["mixed", "lists-tables", "plain", "nested"])
def test_edits_at_every_cut_build_exactly_the_render(answer):
    page, _, edits = _stream(answer, list(range(1, len(answer))), lambda: True)
    assert _normal(page) == _normal(wrap_block(render.render_markdown(answer)))
    # Most steps are appends: that is the point of the edits.
    appends = sum(e.startswith("+") for e in edits)
    assert appends > len(edits) * 0.6, (appends, len(edits))


@given(st.sampled_from(ANSWERS), st.lists(st.integers(1, 400), max_size=40), st.randoms())
@settings(max_examples=150, deadline=None)
def test_edits_at_random_cuts_and_throttling_build_the_render(answer, cuts, rng):
    cuts = sorted({c for c in cuts if c < len(answer)})
    page, _, _ = _stream(answer, cuts, lambda: rng.random() < 0.5)
    assert _normal(page) == _normal(wrap_block(render.render_markdown(answer)))


def test_every_xss_payload_streamed_through_edits_builds_safe_html():
    failures = []
    rng = random.Random(7)
    for payload in payloads()[::3]:
        for context in CONTEXTS:
            text = in_context(context, payload.text)
            cuts = sorted(rng.sample(range(1, len(text)), min(12, len(text) - 1))) if len(text) > 1 else []
            page, _, edits = _stream(text, cuts, lambda: rng.random() < 0.5)
            inside = BeautifulSoup(page, "html.parser").find().decode_contents()  # our wrapper aside
            found = list(problems(inside)) + [p for e in edits for p in problems(e.partition(" ")[2])]
            if found:
                failures.append(f"#{payload.id} {context}: {found[:3]}")
    assert not failures, "\n".join(failures[:20])


def test_append_inside_the_innermost_element():
    assert append_delta("<p>Hello wor</p>\n", "<p>Hello world</p>\n") == (1, "ld")
    assert append_delta("<ul>\n<li>a</li>\n</ul>\n", "<ul>\n<li>a and b</li>\n</ul>\n") == (2, " and b")


def test_append_a_sibling_or_a_new_block():
    assert append_delta("<ul>\n<li>a</li>\n</ul>\n", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n") == (1, "<li>b</li>\n")
    assert append_delta("<p>x</p>\n", "<p>x</p>\n<h2>y</h2>\n") == (0, "<h2>y</h2>\n")


def test_changes_that_are_not_appends_are_refused():
    assert append_delta("<p>a **b</p>\n", "<p>a <strong>b</strong></p>\n") is None
    assert append_delta("<p>abc</p>\n", "<p>ab</p>\n") is None
    assert append_delta("", "<p>a</p>\n") is None
    # Never append inside <pre> or a table section: fragment parsing differs there.
    assert append_delta("<pre>a\n</pre>\n", "<pre>a\nb\n</pre>\n") is None
    assert append_delta("<table><tbody><tr><td>1</td></tr></tbody></table>",
                        "<table><tbody><tr><td>1</td></tr><tr><td>2</td></tr></tbody></table>") is None


def test_a_replacement_covers_only_the_last_block():
    shown = ShownTail()
    shown.replace("<h2>T</h2>\n<p>see [li</p>\n")
    edit = shown.edit("<h2>T</h2>\n<p>see <a href=\"u\">li</a></p>\n", may_replace=True)
    assert edit == '= <p>see <a href="u">li</a></p>\n'
    assert shown.edit("<h2>T</h2>\n<p>see <a href=\"u\">li</a> more</p>\n", may_replace=True) == "+1  more"


def test_a_throttled_replacement_waits():
    shown = ShownTail()
    shown.replace("<p>a *b</p>\n")
    assert shown.edit("<p>a <em>b</em></p>\n", may_replace=False) is None
    assert shown.html == "<p>a *b</p>\n"  # nothing was sent, nothing is assumed shown


def test_balanced_and_element_boundaries():
    assert balanced("a <em>b</em> c") and balanced("<br>x") and not balanced("<em>b") and not balanced("</p><p>")
    assert not balanced('<a title="<b>">x</a>')  # a "<" inside an attribute: never guess
    assert balanced('<a title="x > y">z</a>')
    assert last_element_start("<h2>a</h2>\n<p>b</p>\n") == len("<h2>a</h2>\n")
    assert last_element_start("text <p>b</p>") is None
    assert last_element_start("<p>unclosed") is None
    assert trailing_closers("<ul>\n<li>a</li>\n</ul>\n") == (10, [("</li>\n", "li"), ("</ul>\n", "ul")])
