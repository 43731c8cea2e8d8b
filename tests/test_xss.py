"""Stored XSS through model output: the corpus in tests/data, rendered whole and while streaming.

Every payload is tried raw and inside Markdown link, image and code contexts, through
`render_markdown` (a finished answer) and through `IncrementalRenderer.update()` with the
text split across stream chunks (what the SSE stream sends). No dangerous tag, attribute,
class or URL may survive. Template syntax must reach the page as literal text.
"""
from __future__ import annotations

import functools
import random
import re

import pytest

from chatapp import render
from chatapp.render import IncrementalRenderer, render_markdown
from model_server import Reply
from streamtools import wait_status
from xss_corpus import CONTEXTS, file_lines, in_context, payloads, problems

PAYLOADS = payloads()
# Cut at every position: the first payload of each family and every 25th one, so every kind
# of trick is cut everywhere. Every payload is cut at a few positions (below).
SAMPLE = sorted({p.id: p for p in PAYLOADS if p.id % 25 == 1 or p.family not in
                 {q.family for q in PAYLOADS if q.id < p.id}}.values(), key=lambda p: p.id)
SAMPLE_CONTEXTS = ("raw", "link target", "fenced code")


@functools.lru_cache(maxsize=None)
def _problems(html: str) -> tuple[str, ...]:
    # Streaming re-renders the same tail many times: check each distinct HTML once.
    return tuple(problems(html))


def _check(html: str, where: str, failures: list[str]) -> None:
    found = _problems(html)
    if found:
        failures.append(f"{where}: {list(found)}\n    html: {html[:300]!r}")


def _stream(text: str, cuts: list[int], where: str, failures: list[str]) -> str:
    """Feed `text` to a fresh IncrementalRenderer in pieces ending at `cuts`; check every output."""
    renderer = IncrementalRenderer()
    blocks: list[str] = []
    tail = ""
    for cut in [*cuts, len(text)]:
        new_blocks, tail = renderer.update(text[:cut])
        for block in new_blocks:
            _check(block, f"{where} block", failures)
        _check(tail, f"{where} tail after {cut} chars", failures)
        blocks += new_blocks
    return "".join(blocks) + tail


def _report(failures: list[str]) -> str:
    return f"{len(failures)} unsafe outputs, first ones:\n" + "\n".join(failures[:15])


def test_corpus_has_at_least_300_distinct_payloads_written_for_chatapp():
    written = [raw for _, raw in file_lines()]
    assert len(set(written)) == len(written), "duplicate lines in tests/data/xss_payloads.txt"
    assert len(written) >= 300
    families = {family for family, _ in file_lines()}
    for needed in ("script", "event handler", "javascript:", "mXSS", "htmx", "template", "remote", "CSS"):
        assert any(needed in family for family in families), needed
    assert len({p.text for p in PAYLOADS}) == len(PAYLOADS)


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_every_payload_renders_inert_when_the_answer_is_complete(context):
    failures: list[str] = []
    for payload in PAYLOADS:
        _check(render_markdown(in_context(context, payload.text)), f"#{payload.id} {context}", failures)
    assert not failures, _report(failures)


def test_sanitiser_alone_holds_against_raw_html_payloads(monkeypatch):
    # Defence in depth: even if the Markdown parser let raw HTML through, nh3 must stop it.
    monkeypatch.setitem(render._MD.options, "html", True)
    failures: list[str] = []
    for payload in PAYLOADS:
        _check(render_markdown(in_context("raw", payload.text)), f"#{payload.id} raw html", failures)
    assert not failures, _report(failures)


def test_sample_payloads_stay_inert_split_at_every_position():
    failures: list[str] = []
    for payload in SAMPLE:
        for context in SAMPLE_CONTEXTS:
            text = in_context(context, payload.text)
            where = f"#{payload.id} {context}"
            # One character per chunk: every prefix is rendered as the open tail...
            whole = _stream(text, list(range(1, len(text))), where, failures)
            # ...and two chunks cut at each position: different blocks complete at once.
            for cut in range(1, len(text)):
                _stream(text, [cut], f"{where} cut at {cut}", failures)
            _check(whole, f"{where} streamed whole", failures)
    assert not failures, _report(failures)


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_every_payload_stays_inert_cut_into_chunks(context):
    # Each payload is cut once per context, at a quarter, half or three quarters of its
    # length (rotating with the context), so across contexts every payload is cut at
    # several places; a random cut is added (so three chunks, or two when they coincide).
    failures: list[str] = []
    rng = random.Random(context)  # fixed: a failure must reproduce
    quarter = list(CONTEXTS).index(context) % 3 + 1
    for payload in PAYLOADS:
        text = in_context(context, payload.text)
        start = text.index("\n\n") + 2  # where the payload's block begins
        cut = start + len(payload.text) * quarter // 4
        cuts = sorted({cut, rng.randrange(1, len(text))})
        _stream(text, cuts, f"#{payload.id} {context} cut at {cuts}", failures)
    assert not failures, _report(failures)


def test_streamed_blocks_are_the_same_html_as_the_finished_answer():
    # The page swaps the final fragment in at the end; streaming must not show anything the
    # finished answer would not (a cheap guard against a divergent streaming path).
    for payload in SAMPLE:
        text = in_context("raw", payload.text)
        renderer = IncrementalRenderer()
        blocks: list[str] = []
        for cut in range(1, len(text) + 1, 3):
            blocks += renderer.update(text[:cut])[0]
        new_blocks, tail = renderer.update(text)
        streamed = "".join(blocks + new_blocks) + tail
        assert _norm(streamed) == _norm(render_markdown(text)), payload


def _norm(html: str) -> str:
    return re.sub(r"\s+", "", html)


TEMPLATE_ANSWER = "\n\n".join([
    "{{ 1337*7 }}", "{% for x in range(3) %}{{x}}{% endfor %}", "${1337*7}", "<%= 1337*7 %>",
    "{{ config.SECRET_KEY }}", "`{{ 1337*7 }}`", "[x](https://ok.example/{{1337*7}})",
])


async def test_template_syntax_reaches_the_page_as_literal_text(app, user, model_server, db, monkeypatch):
    monkeypatch.setattr(model_server, "default",
                        lambda body: Reply.text(TEMPLATE_ANSWER if body.get("stream") else "Title {{ 1337*7 }}"))
    thread_id = await user.new_thread("{{ 1337*7 }} ${1337*7} {% raw %}x{% endraw %}")
    answer_id = await db.fetchval("SELECT id FROM messages WHERE role = 'assistant'")
    await wait_status(db, answer_id)
    pages = [await (await user.client.get(f"/threads/{thread_id}")).get_data(as_text=True),
             await (await user.client.get(f"/messages/{answer_id}/stream")).get_data(as_text=True)]
    for body in pages:
        assert "9359" not in body  # 1337*7, evaluated by no template engine
        assert "test-secret" not in body  # the SECRET_KEY of the test app
    page = pages[0]
    assert "{{ 1337*7 }}" in page and "${1337*7}" in page and "&lt;%= 1337*7 %&gt;" in page
    assert "{% raw %}x{% endraw %}" in page  # the user's own message, escaped not evaluated


async def test_model_output_with_a_nul_byte_is_stored(app, user, model_server, db, monkeypatch):
    # Several payloads hide behind NUL (<scr\0ipt>); a model can send one at any time.
    monkeypatch.setattr(model_server, "default", lambda body: Reply.text("a <scr\0ipt>__xss(1)</scr\0ipt> b"))
    await user.new_thread("hello")
    answer_id = await db.fetchval("SELECT id FROM messages WHERE role = 'assistant'")
    row = await wait_status(db, answer_id, timeout=2)
    assert row["status"] == "complete"


def injected(html: str) -> list[str]:
    """Active markup in a whole page that the templates do not put there themselves."""
    from bs4 import BeautifulSoup

    found = []
    for tag in BeautifulSoup(html, "html.parser").find_all(True):
        ours = (tag.name == "script" and str(tag.get("src", "")).startswith("/static/")) or (
            tag.name == "link" and (str(tag.get("href", "")).startswith("/static/") or tag.get("rel") == ["icon"])) or (
            tag.name == "meta" and not tag.has_attr("http-equiv"))
        if ours:
            continue
        if tag.name in {"script", "img", "iframe", "svg", "math", "object", "embed", "style", "base", "meta",
                        "link", "frame", "video", "audio", "template"}:
            found.append(str(tag)[:120])
        for attr, value in tag.attrs.items():
            text = " ".join(value) if isinstance(value, list) else str(value)
            if attr.startswith("on") or attr in {"srcdoc", "formaction"}:
                found.append(f"{attr}= on <{tag.name}>")
            elif attr.startswith(("hx-", "data-hx-", "sse-")) and ("__xss" in text or "probe.example" in text):
                found.append(f"{attr}={text[:60]!r} on <{tag.name}>")
            elif attr in {"href", "src", "action"} and re.match(r"\s*(javascript|data|vbscript):", text, re.I):
                found.append(f"{attr}={text[:60]!r} on <{tag.name}>")
    return found


async def test_payloads_stay_inert_on_every_page_that_shows_them(app, user, model_server, db, monkeypatch):
    # Model output, the model's thread title and the user's own text, as the thread page, the
    # thread list, search results (snippets), a share link and the settings page show them.
    answer = "\n\n".join(p.text for p in PAYLOADS).replace("\0", "\ufffd")
    title = "<img src=x onerror=__xss(90001)>"
    monkeypatch.setattr(model_server, "default",
                        lambda body: Reply.text(answer, chunk_size_words=50) if body.get("stream") else Reply.text(title))
    question = "xss " + "\n\n".join(p.text for p in PAYLOADS[:150]).replace("\0", "")
    thread_id = await user.new_thread(question)
    answer_id = await db.fetchval("SELECT id FROM messages WHERE role = 'assistant'")
    assert (await wait_status(db, answer_id))["status"] == "complete"
    shared = await user.post(f"/threads/{thread_id}/share")
    assert shared.status_code in (200, 303)
    share_id = await db.fetchval("SELECT id FROM shares")
    pages = [f"/threads/{thread_id}", "/", "/threads", "/settings", "/search?q=xss", "/search?q=onerror",
             "/search?q=%3Cscript%3E__xss(0)%3C%2Fscript%3E", "/search?q=%22%3E%3Cimg%20src%3Dx%20onerror%3D__xss(0)%3E",
             f"/s/{share_id}"]
    for path in pages:
        response = await user.client.get(path)
        assert response.status_code == 200, path
        body = await response.get_data(as_text=True)
        assert not injected(body), (path, injected(body)[:10])
    assert "<mark>" in await (await user.client.get("/search?q=xss")).get_data(as_text=True)  # it found them
    for path in (f"/threads/{thread_id}/export.md", f"/threads/{thread_id}/export.json"):
        response = await user.client.get(path)
        assert response.status_code == 200
        # Downloads never render as HTML in our origin.
        assert "html" not in response.headers["Content-Type"]
        assert response.headers["Content-Disposition"].startswith("attachment")
