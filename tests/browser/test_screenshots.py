"""Screenshots of the main screens in light, dark and phone variants, into docs/screenshots/.

Look at them after a design change. The phone variant also asserts that nothing scrolls
sideways at 375 px: long code lines and wide tables scroll inside their own boxes.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from model_server import Reply

if not Path("/usr/bin/chromium").exists():
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

VARIANTS = {
    "light": {"viewport": {"width": 1280, "height": 860}, "color_scheme": "light"},
    "dark": {"viewport": {"width": 1280, "height": 860}, "color_scheme": "dark"},
    "phone": {"viewport": {"width": 375, "height": 812}, "is_mobile": True, "has_touch": True,
              "device_scale_factor": 2, "color_scheme": "light"},
}

FINISHED = """# Release checklist

Before tagging a release, work through these steps:

- run the **full test suite** with `pytest -q`
- update the changelog, see https://example.com/a/very/long/url/that/must/wrap/on/small/screens/without/scrolling
- build and publish the wheels

| Step | Owner | Time | Notes on the step that make this table rather wide |
|------|-------|------|------------------------------------------------------|
| Tests | CI | 2 min | runs on every push to the main branch |
| Wheels | maintainer | 5 min | built for CPython 3.11 and 3.12 on Linux and macOS |

```python
def release(version: str, *, dry_run: bool = False) -> None:
    \"\"\"Tag, build and publish one version of the package to the package index.\"\"\"
    run(["git", "tag", "-s", f"v{version}", "-m", f"Release {version}"], check=True)
    for wheel in build_wheels(version):
        upload(wheel, repository="pypi", dry_run=dry_run)
```

> Ship small releases often.
"""

STREAMING = " ".join(f"Streaming sentence number {i} keeps the answer growing slowly." for i in range(40))


async def shoot(page, name: str) -> None:
    await page.wait_for_timeout(150)  # let transitions settle
    await page.screenshot(path=str(OUT / f"{name}.png"))


async def no_sideways_scroll(page, name: str) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{name}: the page is {width}px wide at 375px"


async def test_screenshots_of_main_screens(new_page, ui_for, replies):
    OUT.mkdir(parents=True, exist_ok=True)
    owner = await new_page(**VARIANTS["light"])
    ui = ui_for(owner)
    await ui.signup("screens@example.com")
    replies.append(Reply.text(FINISHED))
    await ui.finished(await ui.send("What is on the release checklist? Show me a table and the code."))
    finished_url = owner.url
    await owner.goto("/")
    await ui.finished(await ui.send("Tell me a long story, slowly."))
    streaming_url = owner.url
    state = await owner.context.storage_state()

    for variant, options in VARIANTS.items():
        phone = variant == "phone"
        anonymous = await new_page(**options)
        await anonymous.goto("/login")
        await shoot(anonymous, f"login-{variant}")
        page = await new_page(storage_state=state, **options)
        await page.goto("/")
        await page.wait_for_selector("#thread-list a", state="attached")
        await shoot(page, f"home-{variant}")
        if phone:
            await no_sideways_scroll(page, "home")
            await page.click(".nav-button")
            await page.wait_for_selector(".sidebar #thread-list a", state="visible")
            await shoot(page, "menu-phone")
            await page.click(f".sidebar a[href='{urlsplit(finished_url).path}']")
        else:
            await page.goto(finished_url)
        await page.wait_for_selector("pre.hl span[class]")
        await page.evaluate("window.scrollTo(0, 0)")
        await shoot(page, f"thread-{variant}")
        if phone:
            await no_sideways_scroll(page, "thread")
        # A fresh answer streams in each variant; Esc stops it afterwards (the "Stopped" status
        # then shows in the next variant's screenshot).
        await page.goto(streaming_url)
        # The model sends 30 words (3⅓ sentences), then stalls: the answer stays "streaming" and the page
        # holds still for the picture (a page scrolling while captured shows sticky bars askew).
        replies.append(Reply.text(STREAMING, delay=0.02, fault="stall", fault_after=30))
        streaming = ui_for(page)
        answer_id = await streaming.send(f"And now a story for the {variant} screenshot.")
        await streaming.shows(answer_id, "number 2 keeps the answer growing slowly. Streaming sentence number")
        await page.wait_for_timeout(300)
        await shoot(page, f"streaming-{variant}")
        if phone:
            await no_sideways_scroll(page, "streaming")
        await page.keyboard.press("Escape")
        await streaming.finished(answer_id, "stopped")
