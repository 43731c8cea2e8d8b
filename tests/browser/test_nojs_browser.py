"""The chat with JavaScript off: plain forms and redirects, the page refreshes itself while an answer streams."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from model_server import Reply

if not Path("/usr/bin/chromium").exists():
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser

THREAD_URL = re.compile(r"/threads/([0-9a-f-]{36})$")
REFRESH = 'meta[http-equiv="refresh"]'


async def answer_shown(page, text: str, timeout: float = 20.0) -> None:
    """Wait (across the page's own refreshes) until a finished answer contains `text`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if text in " ".join(await page.locator("article.msg-assistant.status-complete").all_inner_texts()):
                return
        except Exception:  # the page was navigating (meta refresh) while we looked
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no finished answer with {text!r}; page shows: {await page.inner_text('main')}")
        await asyncio.sleep(0.1)


async def send_from_home(page, text: str) -> str:
    """Type into the home composer and click Send; return the new thread's id."""
    await page.goto("/")
    await page.fill("#composer-input", text)
    await page.click(".composer button[type=submit]")
    await page.wait_for_url(THREAD_URL)
    return THREAD_URL.search(page.url).group(1)


async def test_without_javascript_sign_up_send_see_the_answer_and_switch_threads(new_page, replies):
    page = await new_page(java_script_enabled=False)
    await page.goto("/signup")
    await page.fill("#email", "nojs@example.com")
    await page.fill("#password", "correct horse battery")
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/$"))
    assert await page.locator("#composer-input").is_visible()
    assert await page.locator("[data-theme-toggle]").is_hidden()  # it needs JavaScript

    replies.append(Reply.text("The first answer arrives slowly, word by word.", delay=0.2))
    first = await send_from_home(page, "First question")
    # While the answer streams the page carries <noscript><meta http-equiv=refresh>.
    assert await page.locator(REFRESH).count() == 1
    assert await page.locator("article.msg-assistant.status-streaming").count() == 1
    await answer_shown(page, "The first answer arrives slowly, word by word.")
    await page.wait_for_load_state()
    assert await page.locator(REFRESH).count() == 0  # done: no more refreshing

    replies.append(Reply.text("The second answer."))
    second = await send_from_home(page, "Second question")
    await answer_shown(page, "The second answer.")
    assert second != first
    await page.wait_for_load_state()

    # Both threads are in the sidebar; following a link switches threads.
    assert await page.locator(f"#thread-{first} a").is_visible()
    await page.click(f"#thread-{first} a")
    await page.wait_for_url(re.compile(f"/threads/{first}$"))
    assert "First question" in await page.inner_text("#conversation")
    assert "Second question" not in await page.inner_text("#conversation")
    assert await page.locator(f"#thread-{first}.current").count() == 1

    # Replying on the thread page is a normal form post too.
    await page.fill("#composer-input", "A follow-up")
    await page.click(".composer button[type=submit]")
    await page.wait_for_url(re.compile(f"/threads/{first}$"))
    await answer_shown(page, "You said: A follow-up")


async def test_without_javascript_the_phone_menu_opens_and_closes(new_page):
    page = await new_page(java_script_enabled=False, viewport={"width": 375, "height": 812}, is_mobile=True,
                          has_touch=True)
    await page.goto("/signup")
    await page.fill("#email", "nojs-phone@example.com")
    await page.fill("#password", "correct horse battery")
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/$"))
    assert await page.locator(".sidebar .new-chat").is_hidden()
    await page.click(".nav-button")  # a <label> for the checkbox: pure CSS
    await page.locator(".sidebar .new-chat").wait_for(state="visible")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await page.click(".nav-backdrop", position={"x": 360, "y": 400})  # beside the drawer: closes it
    await page.locator(".sidebar .new-chat").wait_for(state="hidden")
    await page.click(".nav-button")
    await page.click(".sidebar .nav-close")
    await page.locator(".sidebar .new-chat").wait_for(state="hidden")
