"""The chat in a real browser (JavaScript on): send, stream, stop, regenerate, edit, reload, manage threads."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from model_server import Reply

if not Path("/usr/bin/chromium").exists():
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser

CODE = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b\n'
PARAGRAPHS = "\n\n".join(
    " ".join(f"p{p}w{w}" for w in range(12)) for p in range(8)
)  # 8 paragraphs: completed blocks are appended while the last one streams in the tail


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
async def chat(new_page, ui_for):
    """A signed-up user's page on the home screen."""
    page = await new_page(permissions=["clipboard-read", "clipboard-write"])
    ui = ui_for(page)
    await ui.signup()
    return ui


async def test_sign_up_send_with_enter_and_watch_the_answer_stream(chat, replies):
    text = " ".join(f"word{i}" for i in range(40))
    replies.append(Reply.text(text, delay=0.05))
    page = chat.page
    answer = await chat.send("Hello there")
    assert re.search(r"/threads/[0-9a-f-]{36}$", page.url)
    assert await page.locator("article.msg-user .user-text").inner_text() == "Hello there"
    # The tail shows a growing prefix of the answer before the final fragment replaces it.
    await chat.shows(answer, "word10")
    assert await page.locator(f"#{answer}.status-streaming [data-stop]").is_visible()
    final = await chat.finished(answer)
    assert words(final) == text
    streamed = await chat.snapshots(answer)
    assert len(streamed) >= 3, streamed
    assert all(text.startswith(s) for s in streamed), streamed
    assert streamed[0] != text  # it really arrived in pieces
    # The composer was cleared and keeps the focus for the next message.
    assert await page.input_value("#composer-input") == ""
    assert await page.evaluate("document.activeElement.id") == "composer-input"


async def test_shift_enter_inserts_a_newline_and_enter_sends_on_the_thread_page(chat, replies):
    page = chat.page
    await chat.finished(await chat.send("first"))
    await page.fill("#composer-input", "line one")
    await page.press("#composer-input", "Shift+Enter")
    await page.keyboard.type("line two")
    assert await page.input_value("#composer-input") == "line one\nline two"
    assert await page.locator("article.msg-user").count() == 1
    await page.press("#composer-input", "Enter")
    await page.locator("article.msg-user").nth(1).wait_for()
    assert await page.locator("article.msg-user .user-text").nth(1).inner_text() == "line one\nline two"
    answer = await page.locator("article.msg-assistant").nth(1).get_attribute("id")
    assert "You said: line one" in await chat.finished(answer)


async def test_code_is_highlighted_and_the_copy_button_copies_it(chat, replies):
    replies.append(Reply.text(f"Here you are:\n\n```python\n{CODE}```\n\nThat is all.", delay=0.01))
    page = chat.page
    answer = await chat.finished(await chat.send("Write an add function"))
    assert "return a + b" in answer
    assert await page.locator("pre.hl span[class]").count() > 3
    button = page.locator("div.code button.copy")
    await button.click()
    copied = "() => document.querySelector('div.code button.copy').textContent === 'Copied'"
    await chat.until(copied)
    assert await page.evaluate("navigator.clipboard.readText()") == CODE
    await chat.until("() => document.querySelector('div.code button.copy').textContent === 'Copy'", timeout=4)


async def test_escape_stops_a_streaming_answer(chat, replies, db):
    replies.append(Reply(chunks=[f"Word{i} " for i in range(200)], delay=0.05))
    page = chat.page
    answer = await chat.send("Talk for a long time")
    await chat.shows(answer, "Word5")
    await page.keyboard.press("Escape")
    shown = await chat.finished(answer, "stopped")
    assert await page.locator(f"#{answer} .msg-status").inner_text() == "Stopped"
    assert await page.locator("[data-stop]").count() == 0
    kept = await db.fetchval("SELECT content FROM messages WHERE id = $1::uuid", answer.removeprefix("msg-"))
    assert words(shown) == words(kept) and 0 < len(kept) < len("".join(f"Word{i} " for i in range(200)))


async def test_regenerate_adds_a_version_and_switching_back_shows_the_first(chat, replies):
    replies.extend([Reply.text("The first answer."), Reply.text("The second answer.", delay=0.02)])
    page = chat.page
    first = await chat.send("Answer me twice")
    await chat.finished(first)
    await page.click(f"#{first} button:text('Regenerate')")
    second = page.locator("article.msg-assistant").last
    await chat.until("(id) => !document.getElementById(id)", first)
    second_id = await second.get_attribute("id")
    assert words(await chat.finished(second_id)) == "The second answer."
    assert await page.locator(f"#{second_id} .siblings span").inner_text() == "2/2"
    await page.click(f"#{second_id} .siblings button[aria-label='Previous version']")
    await page.locator(f"#{first}").wait_for()
    assert await page.locator(f"#{first} .siblings span").inner_text() == "1/2"
    assert words(await page.locator(f"#{first} .msg-body").inner_text()) == "The first answer."
    await page.click(f"#{first} .siblings button[aria-label='Next version']")
    await page.locator(f"#{second_id}").wait_for()


async def test_editing_an_earlier_message_creates_a_branch(chat, replies):
    page = chat.page
    await chat.finished(await chat.send("one"))
    await chat.finished(await chat.send("two"))
    assert await page.locator("article.msg").count() == 4
    first_user = page.locator("article.msg-user").first
    await first_user.locator("summary:text('Edit')").click()
    await first_user.locator("textarea").fill("uno")
    await first_user.locator("button:text('Save and send')").click()
    await chat.until("() => document.querySelectorAll('article.msg').length === 2")
    assert await page.locator("article.msg-user .user-text").inner_text() == "uno"
    assert await page.locator("article.msg-user .siblings span").inner_text() == "2/2"
    answer = await page.locator("article.msg-assistant").get_attribute("id")
    assert words(await chat.finished(answer)) == "You said: uno"
    await page.click("article.msg-user .siblings button[aria-label='Previous version']")
    await chat.until("() => document.querySelectorAll('article.msg').length === 4")
    assert await page.locator("article.msg-user .siblings span").first.inner_text() == "1/2"
    assert [words(t) for t in await page.locator("article.msg-user .user-text").all_inner_texts()] == ["one", "two"]


async def test_the_page_follows_a_streaming_answer_only_while_the_reader_is_at_the_bottom(chat, replies):
    replies.append(Reply.text(PARAGRAPHS * 4, chunk_size_words=3, delay=0.03))
    page = chat.page
    answer = await chat.send("Write a lot")
    at_bottom = "() => scrollY + innerHeight >= document.documentElement.scrollHeight - 150"
    await chat.until("() => document.documentElement.scrollHeight > innerHeight + 400")
    assert await page.evaluate(at_bottom)  # followed the answer down
    await page.mouse.wheel(0, -3000)  # the reader scrolls up to read: no more following
    await chat.until("() => scrollY < 100")
    await page.wait_for_timeout(500)
    assert await page.evaluate("scrollY") < 100
    await page.keyboard.press("Escape")
    await chat.finished(answer, "stopped")


async def test_reloading_in_the_middle_of_an_answer_continues_without_gaps_or_repeats(chat, replies):
    replies.append(Reply.text(PARAGRAPHS, delay=0.03))
    page = chat.page
    answer = await chat.send("Write eight paragraphs")
    await chat.shows(answer, "p2w3")
    before = await chat.snapshots(answer)
    await page.reload()
    await chat.shows(answer, "p5w0")
    final = await chat.finished(answer)
    after = await chat.snapshots(answer)
    expected = words(PARAGRAPHS)
    assert words(final) == expected
    assert after, "nothing streamed after the reload"
    for snap in before + after:  # every state shown was a prefix: nothing repeated, nothing skipped
        assert expected.startswith(snap), (snap, await page.evaluate("window.__sse"))
    assert len(after[-1]) >= len(after[0])


async def test_rename_and_delete_a_thread(chat, replies):
    page = chat.page
    await chat.finished(await chat.send("A thread to rename"))
    thread_id = page.url.rsplit("/", 1)[1]
    await page.click(".thread-tools summary:text('Rename')")
    await page.fill(f"#rename-{thread_id}", "Renamed in the browser")
    await page.click(".thread-tools details[open] button[type=submit]")
    await chat.until(
        "(id) => document.querySelector('#thread-' + id + ' a')?.textContent === 'Renamed in the browser'", thread_id)
    assert await page.locator(f"#thread-title-{thread_id}").inner_text() == "Renamed in the browser"
    assert not await page.locator(".thread-tools details[open]").count()  # the popover closed
    await page.reload()
    assert await page.locator(f"#thread-title-{thread_id}").inner_text() == "Renamed in the browser"
    await page.click(".thread-tools button:text('Delete')")  # hx-confirm: the dialog is accepted
    await page.wait_for_url(re.compile(r"/$"))
    await page.locator(".welcome").wait_for()
    assert await page.locator(f"#thread-{thread_id}").count() == 0
    response = await page.goto(f"/threads/{thread_id}")
    assert response.status == 404


async def test_theme_toggle_cycles_and_persists(chat):
    page = chat.page
    toggle = page.locator("[data-theme-toggle]")
    assert await toggle.is_visible()
    assert await page.evaluate("document.documentElement.dataset.theme") is None
    await toggle.click()
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    await page.reload()
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert "Dark" in await page.locator("[data-theme-toggle]").inner_text()
    await page.click("[data-theme-toggle]")
    assert await page.evaluate("document.documentElement.dataset.theme") == "light"
    await page.click("[data-theme-toggle]")
    assert await page.evaluate("document.documentElement.dataset.theme") is None
    assert await page.evaluate("localStorage.getItem('chatapp-theme')") == "system"  # this browser's choice


async def test_error_fragments_show_in_the_flash_and_can_be_dismissed(chat):
    page = chat.page
    await chat.finished(await chat.send("hi"))
    # An over-long title is refused with 400: htmx shows the error fragment in #flash.
    thread_id = page.url.rsplit("/", 1)[1]
    await page.click(".thread-tools summary:text('Rename')")
    await page.evaluate("(id) => document.getElementById('rename-' + id).removeAttribute('maxlength')", thread_id)
    await page.fill(f"#rename-{thread_id}", "x" * 300)
    await page.click(".thread-tools details[open] button[type=submit]")
    flash = page.locator("#flash .flash-message.error")
    await flash.wait_for()
    box = await flash.bounding_box()
    assert box["y"] < 40  # fixed at the top
    await flash.click()
    await flash.wait_for(state="detached")


async def test_phone_menu_opens_and_closes_after_a_thread_link(new_page, ui_for, replies):
    page = await new_page(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    ui = ui_for(page)
    await ui.signup("phone@example.com")
    await ui.finished(await ui.send("from the phone"))
    assert not await page.locator(".sidebar").is_visible()
    await page.click(".nav-button")
    link = page.locator("#thread-list a").first
    await link.wait_for(state="visible")
    await link.click()
    await page.wait_for_load_state()
    assert not await page.is_checked("#nav-toggle")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375


async def test_htmx_post_right_after_signup_is_accepted(new_page, ui_for, replies):
    page = await new_page()
    ui = ui_for(page)
    await ui.signup("fresh@example.com", reload=False)
    await page.fill("#composer-input", "hello")
    await page.press("#composer-input", "Enter")
    outcome = "() => location.pathname.startsWith('/threads/') || document.querySelector('#flash .flash-message')"
    await ui.until(outcome)
    assert "/threads/" in page.url, await page.inner_text("#flash")
