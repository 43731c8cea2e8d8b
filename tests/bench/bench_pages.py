"""Pages: idle memory, the 1,000-message thread page (fragment cache warm and cold), and the
first load of a 20-message thread in Chromium.
"""
from __future__ import annotations

import asyncio
import gzip
import statistics
import time
from pathlib import Path

from bench_app import Bench
from bench_data import insert_thread, user_id_for
from bench_http import BenchError, COOKIE, User

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg")


async def seed_threads(bench: Bench, user: User) -> dict[str, str]:
    """The user's 20-message and 1,000-message threads."""
    conn = await bench.connect_db()
    try:
        uid = await user_id_for(conn, user.email)
        small = await insert_thread(conn, uid, 20, title="Twenty messages")
        big = await insert_thread(conn, uid, 1000, title="A thousand messages")
    finally:
        await conn.close()
    return {"small": str(small), "big": str(big)}


async def idle_rss(bench: Bench, user: User, thread_id: str) -> dict:
    """idle_rss_mib: the worker right after start-up and one page view."""
    response = await user.client.get(f"/threads/{thread_id}")
    if response.status_code != 200:
        raise BenchError(f"thread page answered {response.status_code}")
    await asyncio.sleep(1.0)
    return {"idle_rss_mib": bench.app_rss_mib()}


async def _timed_get(user: User, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = await user.client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise BenchError(f"{path} answered {response.status_code}")
    return elapsed, len(response.content)


async def page_timings(bench: Bench, user: User, thread_id: str, warm_n: int, cold_n: int) -> dict:
    """GET /threads/<id> of 1,000 messages: cold (fragment keys deleted first) and warm."""
    path = f"/threads/{thread_id}"
    # A median of 7 requests swings twofold on a shared 2-core machine; warm requests are cheap.
    warm_n, cold_n = max(warm_n, 30), max(cold_n, 10)
    await _timed_get(user, path)  # compiles templates, opens pools: not part of either figure
    cold = []
    for _ in range(cold_n):
        await bench.delete_keys("frag:*")
        cold.append((await _timed_get(user, path))[0])
    await _timed_get(user, path)  # fills the cache
    warm = []
    size = 0
    for _ in range(warm_n):
        elapsed, size = await _timed_get(user, path)
        warm.append(elapsed)
    body = (await user.client.get(path)).content
    sql, full_sql = await _branch_query_ms(bench, thread_id)
    warm_p50, cold_p50 = statistics.median(warm), statistics.median(cold)
    return {"page_1000_msgs_warm_p50_ms": warm_p50, "page_1000_msgs_cold_p50_ms": cold_p50,
            "page_cache_speedup": cold_p50 / warm_p50, "page_1000_msgs_branch_sql_ms": sql,
            "page_1000_msgs_full_branch_sql_ms": full_sql,
            "page_1000_msgs_kib": size / 1024, "page_1000_msgs_kib_gzip": len(gzip.compress(body, 6)) / 1024}


async def _branch_query_ms(bench: Bench, thread_id: str, runs: int = 5) -> tuple[float, float]:
    """Median ms of the page's branch query (the newest 50 messages, `select_branch_window`) and
    of the whole branch with every message's siblings (`select_branch`, what prompts read)."""
    import uuid

    from chatapp import chat
    from chatapp.models import messages

    conn = await bench.connect_db()
    try:
        tid = uuid.UUID(thread_id)
        leaf = await conn.fetchval("SELECT current_leaf_id FROM threads WHERE id = $1", tid)
        medians = []
        for query in (lambda: messages.select_branch_window(conn, tid, leaf, chat.PAGE_MESSAGES),
                      lambda: messages.select_branch(conn, tid, leaf)):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                await query()
                times.append((time.perf_counter() - started) * 1000)
            medians.append(statistics.median(times))
        return medians[0], medians[1]
    finally:
        await conn.close()


async def first_load(bench: Bench, user: User, thread_id: str) -> dict:
    """first_load_kib_gzip: every byte of a fresh browser's load of a 20-message thread."""
    if not CHROMIUM.exists():
        return {"note": "first load skipped: /usr/bin/chromium is missing (apt-get install chromium)"}
    from playwright.async_api import async_playwright

    finished = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context()
            # The session cookie from the API login: the login page's own assets stay uncached.
            await context.add_cookies([{"name": COOKIE, "value": user.cookie, "url": bench.url}])
            page = await context.new_page()
            page.on("requestfinished", lambda request: finished.append(request))
            response = await page.goto(f"{bench.url}/threads/{thread_id}", wait_until="networkidle")
            if response is None or response.status != 200:
                raise BenchError("the thread page did not load in Chromium")
            rows = []
            for request in finished:
                resp = await request.response()
                sizes = await request.sizes()
                body = await resp.body() if resp is not None else b""
                headers = await resp.all_headers() if resp is not None else {}
                rows.append((request.resource_type, sizes, body, headers))
        finally:
            await browser.close()
    return _first_load_sizes(rows)


def _first_load_sizes(rows: list) -> dict:
    """Raw transfer sizes, and what gzip would make of uncompressed text bodies."""
    raw = zipped = head = 0
    scripts = 0
    served_compressed = 0
    for kind, sizes, body, headers in rows:
        head_bytes = sizes["responseHeadersSize"] + sizes["requestHeadersSize"]
        transfer = sizes["responseBodySize"]
        head += head_bytes
        raw += transfer
        scripts += kind == "script"
        ctype = headers.get("content-type", "")
        if headers.get("content-encoding"):
            served_compressed += 1
            zipped += transfer
        elif ctype.startswith(TEXT_TYPES):
            zipped += len(gzip.compress(body, 6))
        else:
            zipped += transfer
    return {"first_load_kib_gzip": (zipped + head) / 1024, "first_load_kib_raw": (raw + head) / 1024,
            "first_load_kib_headers": head / 1024, "first_load_requests": len(rows),
            "first_load_script_files": scripts, "first_load_responses_served_compressed": served_compressed}
