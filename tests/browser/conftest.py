"""Browser fixtures: one Debian Chromium per run, a fresh context per test, CSP-clean pages.

Playwright's async API drives /usr/bin/chromium (downloads by test tools fail here). Every
page records its console; a test fails at teardown if a page logged a Content Security
Policy violation or an uncaught script error.
"""
from __future__ import annotations

import asyncio
import collections
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from model_server import Reply, last_user_message

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]
SKIP_REASON = "Debian's Chromium is not installed (apt-get install chromium)"
PASSWORD = "correct horse battery"
CSP_WORDS = ("Content Security Policy", "Refused to")

# Runs in every document before its own scripts: report CSP violations to the console, and
# record what a streaming answer shows in each frame (blocks + tail) per message.
INIT_SCRIPT = r"""
document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`Refused to load: Content Security Policy ${e.violatedDirective} ${e.blockedURI}`));
window.__snaps = {};
// Sampled once per frame, so it records what is painted, not transient DOM states
// between two events handled in the same task.
(function sample() {
  for (const msg of document.querySelectorAll("article.status-streaming")) {
    const id = msg.id.slice(4), blocks = document.getElementById("blocks-" + id),
          tail = document.getElementById("tail-" + id);
    if (!blocks || !tail) continue;
    const tailText = tail.querySelector(".typing") ? "" : tail.innerText;  // not "Thinking…"
    const text = (blocks.innerText + " " + tailText).split(/\s+/).join(" ").trim();
    const list = (window.__snaps[id] = window.__snaps[id] || []);
    if (text && list[list.length - 1] !== text) list.push(text);
  }
  requestAnimationFrame(sample);
})();
window.__sse = [];
document.addEventListener("htmx:sseBeforeMessage", (e) =>
  window.__sse.push(`${e.detail.type} id=${e.detail.lastEventId} ${(e.detail.data || "").replace(/<[^>]*>/g, " ").split(/\s+/).join(" ").slice(0, 80)}`));
"""


def words(text: str) -> str:
    """Text with all whitespace collapsed, for comparing what the page shows."""
    return " ".join(text.split())


@dataclass
class Watched:
    """A page and what its console said."""

    page: Any
    console: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [m for m in self.console if any(w in m for w in CSP_WORDS) or m.startswith("pageerror")]


@pytest.fixture(scope="session")
async def browser():
    """One headless Chromium for the whole run."""
    if not CHROMIUM.exists():
        pytest.skip(SKIP_REASON)
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield instance
        await instance.close()


@pytest.fixture
async def new_page(browser, live):
    """Open pages in fresh contexts on the live app; check their consoles at teardown."""
    contexts, watched = [], []

    async def open_page(**options: Any):
        options.setdefault("viewport", {"width": 1280, "height": 860})
        context = await browser.new_context(base_url=live.url, **options)
        context.set_default_timeout(10_000)
        if options.get("java_script_enabled", True):
            await context.add_init_script(INIT_SCRIPT)
        contexts.append(context)
        page = await context.new_page()
        record = Watched(page)
        page.on("console", lambda m: record.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: record.console.append(f"pageerror: {e}"))
        page.on("dialog", lambda d: d.accept())  # hx-confirm
        watched.append(record)
        return page

    yield open_page
    for context in contexts:
        await context.close()
    problems = [p for record in watched for p in record.problems()]
    assert not problems, f"console problems: {problems}"


@pytest.fixture
def replies(model_server):
    """Answers for the next streamed requests (FIFO, then an echo); title requests get a fixed title.

    The app asks the model for a thread title (without streaming) after the first answer, so
    scripting the server's own queue would hand a scripted answer to the title request.
    """
    queue: collections.deque[Reply] = collections.deque()
    saved = model_server.default

    def route(body: dict) -> Reply:
        if not body.get("stream"):
            return Reply.text("Browser test chat")
        return queue.popleft() if queue else Reply.text(f"You said: {last_user_message(body)}")

    model_server.default = route
    yield queue
    model_server.default = saved


class UI:
    """Steps a person takes in the browser."""

    def __init__(self, page) -> None:
        self.page = page

    async def signup(self, email: str = "ada@example.com", reload: bool = True) -> None:
        page = self.page
        await page.goto("/signup")
        await page.fill("#email", email)
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(re.compile(r"/$"))
        await page.wait_for_selector("#composer-input")
        if reload:
            # Server bug (see test_chat_browser.test_htmx_post_right_after_signup_is_accepted):
            # HX-Location swaps only <body>'s content, so <body hx-headers> keeps the
            # pre-login CSRF token. A full page load picks up the new one.
            await page.goto("/")

    async def send(self, text: str) -> str:
        """Type into the composer and press Enter; return the id of the answer's article."""
        page = self.page
        before = await page.locator("article.msg-assistant").count()
        on_thread = "/threads/" in page.url
        await page.fill("#composer-input", text)
        await page.press("#composer-input", "Enter")
        if not on_thread:
            await page.wait_for_url(re.compile(r"/threads/[0-9a-f-]{36}$"))
            before = 0
        answer = page.locator("article.msg-assistant").nth(before)
        await answer.wait_for()
        return await answer.get_attribute("id")

    async def finished(self, article_id: str, status: str = "complete") -> str:
        """Wait until the answer reaches `status`; return its visible text."""
        final = self.page.locator(f"#{article_id}.status-{status}")
        await final.wait_for(timeout=15_000)
        return await final.locator(".msg-body").inner_text()

    async def until(self, script: str, arg: Any = None, timeout: float = 10.0) -> Any:
        """Poll a JS function `(arg) => value` until it returns something truthy.

        Not page.wait_for_function: that compiles its predicate with eval, which our CSP
        (rightly) refuses; page.evaluate goes through the DevTools protocol instead.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.page.evaluate(script, arg)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"still falsy after {timeout}s: {script}")
            await asyncio.sleep(0.03)

    async def shows(self, element_id: str, text: str, timeout: float = 10.0) -> None:
        """Wait until the element's visible text contains `text`."""
        await self.until("([id, t]) => document.getElementById(id)?.innerText.includes(t)", [element_id, text], timeout)

    async def snapshots(self, article_id: str) -> list[str]:
        """What the streaming answer showed after each change (see INIT_SCRIPT)."""
        return await self.page.evaluate("(id) => window.__snaps[id] || []", article_id.removeprefix("msg-"))


@pytest.fixture
def ui_for():
    """UI(page) for a page opened with new_page."""
    return UI
