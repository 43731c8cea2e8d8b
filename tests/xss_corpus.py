"""The XSS corpus: payloads from tests/data/xss_payloads.txt plus generated URL-scheme families,
the Markdown contexts each is tried in, and the check that rendered HTML is inert.

Every payload carries its number: script that runs calls `__xss(<n>)`, a resource that loads
asks `https://probe.example/exfil?d=<n>`, so a failure names the payload that got through.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bs4 import BeautifulSoup

DATA = Path(__file__).parent / "data" / "xss_payloads.txt"
PROBE_HOST = "probe.example"
_ESCAPE = re.compile(r"\\(n|t|r|0|\\|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\"}


@dataclass(frozen=True)
class Payload:
    """One payload: its number, the family it belongs to and its text (placeholders filled)."""

    id: int
    family: str
    text: str


def _unescape(line: str) -> str:
    def one(match: re.Match) -> str:
        code = match.group(1)
        return _SIMPLE.get(code) or chr(int(code[1:], 16))

    return _ESCAPE.sub(one, line)


def file_lines() -> list[tuple[str, str]]:
    """(family, raw payload) for each payload line of the data file, placeholders unfilled."""
    family, lines = "", []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.startswith("#: =="):
            family = line.strip("#: =")
        elif line.strip() and not line.startswith("#:"):
            lines.append((family, _unescape(line)))
    return lines


# Generated family: dangerous schemes x obfuscations x Markdown forms. The obfuscations are
# what browsers and URL parsers forgive: case, entities, tabs/newlines inside, leading
# spaces and control characters, percent-encoding.
_SCHEMES = {
    "javascript": "$X",
    "data": "text/html,<script>$X</script>",
    "vbscript": "msgbox(1)",
}
_OBFUSCATIONS = {
    "plain": lambda s: s + ":",
    "upper": lambda s: s.upper() + ":",
    "mixed": lambda s: "".join(c.upper() if i % 2 else c for i, c in enumerate(s)) + ":",
    "decimal entity": lambda s: f"&#{ord(s[0])};{s[1:]}:",
    "padded entity": lambda s: f"&#0000{ord(s[0])}{s[1:]}:",
    "hex entity": lambda s: f"{s[:-1]}&#x{ord(s[-1]):x};:",
    "named colon": lambda s: s + "&colon;",
    "tab inside": lambda s: f"{s[:2]}\t{s[2:]}:",
    "tab entity": lambda s: f"{s[:2]}&Tab;{s[2:]}:",
    "newline entity": lambda s: f"{s[:2]}&NewLine;{s[2:]}:",
    "leading space": lambda s: f" {s}:",
    "leading control": lambda s: f"\x01{s}:",
    "percent colon": lambda s: s + "%3A",
}
_FORMS = {
    "link": "[x]({url})",
    "image": "![x]({url})",
    "angle link": "[x](<{url}>)",
    "autolink": "<{url}>",
}


def generated_lines() -> list[tuple[str, str]]:
    """(family, raw payload) of the generated URL-scheme family."""
    lines = []
    for scheme, rest in _SCHEMES.items():
        for obfuscate in _OBFUSCATIONS.values():
            for template in _FORMS.values():
                lines.append(("generated: dangerous URL schemes", template.format(url=obfuscate(scheme) + rest)))
    return lines


def payloads() -> list[Payload]:
    """The whole corpus, numbered from 1, with placeholders filled in."""
    written = file_lines()
    seen = {raw for _, raw in written}
    lines = written + [(family, raw) for family, raw in generated_lines() if raw not in seen]
    result = []
    for number, (family, raw) in enumerate(lines, start=1):
        text = (raw.replace("$X", f"__xss({number})")
                .replace("$P", f"https://{PROBE_HOST}/exfil?d={number}")
                .replace("$H", PROBE_HOST))
        result.append(Payload(number, family, text))
    return result


# Where a payload may end up in model output: raw, and inside link, image and code syntax.
CONTEXTS = {
    "raw": "{}",
    "link text": "[{}](https://ok.example/)",
    "link target": "[x]({})",
    "image alt": "![{}](https://ok.example/i.png)",
    "image source": "![x]({})",
    "autolink": "<{}>",
    "inline code": "`{}`",
    "fenced code": "```\n{}\n```",
    "fence info": "```{}\nx\n```",
    "table cell": "| a |\n|---|\n| {} |",
    "quoted list": "> - {}",
}


def in_context(context: str, text: str) -> str:
    """The payload placed in a Markdown context, between two ordinary paragraphs."""
    return f"Before.\n\n{CONTEXTS[context].format(text)}\n\nAfter."


# What the renderer may emit, and nothing else (kept apart from chatapp.render on purpose:
# loosening the sanitiser's allow-list must fail these tests).
ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "div", "span",
    "button",
}  # fmt: skip
FORBIDDEN_TAGS = {
    "script", "iframe", "object", "embed", "svg", "math", "img", "style", "link", "meta", "form",
    "input", "base", "textarea", "select", "video", "audio", "source", "template", "frame",
    "frameset", "noscript", "noembed", "xmp", "title", "picture", "portal", "applet",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "rel", "class"}, "ol": {"start"}, "button": {"type", "aria-label", "class"},
    "div": {"class"}, "span": {"class"}, "pre": {"class", "tabindex"}, "th": {"class"}, "td": {"class"},
}  # fmt: skip
# Attributes whose value is fixed by our renderer (a code block is keyboard-scrollable: tabindex 0).
FIXED_VALUES = {("pre", "tabindex"): "0"}
OUR_CLASSES = {"img-link", "code", "code-bar", "lang", "hl", "copy", "al-left", "al-center", "al-right"}
FORBIDDEN_ATTRIBUTES = {"style", "src", "srcset", "srcdoc", "formaction", "action", "id", "name", "background",
                        "poster", "ping", "xlink:href", "data", "code"}
SAFE_SCHEMES = {"http", "https", "mailto"}
# Browsers drop these before reading a URL's scheme (WHATWG URL: C0 controls and space at
# the ends; tab and newlines anywhere).
_URL_INVISIBLE = re.compile(r"[\t\n\r]")


def url_scheme(href: str) -> str:
    """The scheme a browser would see in an href (lower case; '' for a relative URL)."""
    cleaned = _URL_INVISIBLE.sub("", href).strip("".join(chr(c) for c in range(0x21)))
    return urlsplit(cleaned).scheme.lower()


def problems(html: str) -> list[str]:
    """Everything dangerous in rendered HTML: forbidden tags, attributes, classes and URLs."""
    found = []
    for tag in BeautifulSoup(html, "html.parser").find_all(True):
        if tag.name in FORBIDDEN_TAGS or tag.name not in ALLOWED_TAGS:
            found.append(f"tag <{tag.name}>")
        for attr, value in tag.attrs.items():
            if (attr.startswith(("on", "hx-", "data-", "sse-")) or attr in FORBIDDEN_ATTRIBUTES
                    or attr not in ALLOWED_ATTRIBUTES.get(tag.name, set())):
                found.append(f"attribute {attr}= on <{tag.name}>")
            elif (tag.name, attr) in FIXED_VALUES and value != FIXED_VALUES[(tag.name, attr)]:
                found.append(f"attribute {attr}={value!r} on <{tag.name}>")
        classes = set(tag.get("class") or [])
        if tag.name == "span":
            classes = {c for c in classes if not c.startswith("hl-")}  # Pygments token classes
        if classes - OUR_CLASSES:
            found.append(f"class {sorted(classes - OUR_CLASSES)} on <{tag.name}>")
        if tag.has_attr("href") and url_scheme(tag["href"]) not in SAFE_SCHEMES:
            found.append(f"href {tag['href']!r}")
    return found
