"""axe-core finds no serious or critical accessibility violations on any main page.

axe-core (from the npm registry, vendored in tests/browser/vendor/ with its MPL-2.0 licence so
the tests run offline) is injected into each page, in light and dark colour schemes and at phone
width. Moderate and minor findings are printed for information (run with -s to see them).
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from model_server import Reply

if not Path("/usr/bin/chromium").exists():
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser

AXE = Path(__file__).with_name("vendor") / "axe.min.js"
BLOCKING = ("serious", "critical")

VARIANTS = {
    "light": {"viewport": {"width": 1280, "height": 860}, "color_scheme": "light"},
    "dark": {"viewport": {"width": 1280, "height": 860}, "color_scheme": "dark"},
    "phone": {"viewport": {"width": 375, "height": 812}, "is_mobile": True, "has_touch": True, "color_scheme": "light"},
}

FINISHED = """# Release checklist

Before tagging a release:

- run the **full test suite** with `pytest -q`
- update the changelog

| Step | Owner | Time |
|------|-------|------|
| Tests | CI | 2 min |
| Wheels | maintainer | 5 min |

```python
def release(version: str) -> None:
    \"\"\"Tag and publish one version.\"\"\"
    run(["git", "tag", f"v{version}"], check=True)
```
"""

STREAMING = " ".join(f"Streaming sentence number {i} keeps the answer growing." for i in range(40))

RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 4).map((n) => n.target.join(" "))}));
}"""


async def audit(page, name: str, report: dict[str, list[dict]]) -> None:
    """Inject axe-core into the loaded page and record its violations under `name`."""
    await page.wait_for_timeout(200)  # let colour transitions settle before contrast checks
    # add_script_tag inlines the file: allowed only because the context bypasses the CSP.
    await page.add_script_tag(path=str(AXE))
    report[name] = await page.evaluate(RUN_AXE)


async def prepare(new_page, ui_for, replies, db) -> dict:
    """An admin with three threads (one finished rich answer, shared); the URLs to audit."""
    owner = await new_page()
    ui = ui_for(owner)
    await ui.signup("a11y@example.com")
    for text in ("Plan the garden", "Recipe for bread"):
        await ui.finished(await ui.send(text))
        await owner.goto("/")
    replies.append(Reply.text(FINISHED))
    await ui.finished(await ui.send("What is on the release checklist?"))
    thread_url = owner.url
    thread_id = thread_url.rsplit("/", 1)[1]
    # Share through the page's own form (a normal, CSP-enforcing context).
    await owner.click(".share-tool summary")
    await owner.click(".share-tool button:text('Create share link')")
    share_url = await owner.locator(f"#share-url-{thread_id}").input_value()
    await db.execute("UPDATE users SET is_admin = true WHERE email = $1", "a11y@example.com")
    return {"state": await owner.context.storage_state(), "thread": thread_url, "share": share_url}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_no_serious_or_critical_axe_violations(variant, new_page, ui_for, replies, db):
    setup = await prepare(new_page, ui_for, replies, db)
    options = VARIANTS[variant]
    report: dict[str, list[dict]] = {}

    # Separate contexts with bypass_csp=True, for the axe checks only: our CSP (rightly) refuses
    # the inline script that add_script_tag creates. The other browser tests keep the CSP on.
    anonymous = await new_page(bypass_csp=True, **options)
    for path in ("/login", "/signup"):
        await anonymous.goto(path)
        await audit(anonymous, path, report)

    page = await new_page(bypass_csp=True, storage_state=setup["state"], **options)
    await page.goto(setup["thread"])
    await page.wait_for_selector("pre.hl span[class]")
    await audit(page, "thread (finished)", report)
    pages = {"home": "/", "settings": "/settings", "search": "/search?q=release", "folders": "/folders",
             "import": "/import", "share": setup["share"], "admin": "/admin",
             "404": f"/threads/{uuid.uuid4()}"}
    for name, path in pages.items():
        response = await page.goto(path)
        assert response.status == (404 if name == "404" else 200), (name, response.status)
        await audit(page, name, report)

    # An answer that streams 30 words and then stalls, so the page is audited mid-stream.
    await page.goto(setup["thread"])
    replies.append(Reply.text(STREAMING, delay=0.01, fault="stall", fault_after=30))
    streaming = ui_for(page)
    answer = await streaming.send("And now a long story.")
    await streaming.shows(answer, "number 2 keeps")
    await audit(page, "thread (streaming)", report)
    await page.keyboard.press("Escape")
    await streaming.finished(answer, "stopped")

    print(f"\naxe-core {variant}: serious+critical / other violations per page")
    for name, found in report.items():
        blocking = [v for v in found if v["impact"] in BLOCKING]
        print(f"  {name:20} {len(blocking)} / {len(found) - len(blocking)}")
        for v in found:
            print(f"    {v['impact']:8} {v['id']}: {v['help']} {v['nodes']}")
    failures = {name: [v for v in found if v["impact"] in BLOCKING] for name, found in report.items()}
    failures = {name: found for name, found in failures.items() if found}
    assert not failures, failures
