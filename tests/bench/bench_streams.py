"""Open streams: how many SSE streams one worker holds with heartbeats flowing, and their RSS.

Each stream follows its own answer, kept open by a model reply that sends one chunk and then
stalls. The heartbeat interval is 1 s for the run; a stream counts as alive during the hold
when it saw a heartbeat at least every 2.5 s and never closed.
"""
from __future__ import annotations

import asyncio
import time

from bench_app import Bench
from bench_http import BenchError, RawSSE, User

MAX_GAP_SECONDS = 2.5


class Watch:
    """One open stream and the heartbeat gaps seen on it."""

    def __init__(self, sse: RawSSE) -> None:
        self.sse = sse
        self.last_beat = time.monotonic()
        self.max_gap = 0.0
        self.beats = 0
        self.ended: str | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for _arrived, data in self.sse.chunks():
                self.sse.parser.feed_bytes(data)
                if self.sse.parser.comments:  # a keep-alive comment arrived
                    self.beats += len(self.sse.parser.comments)
                    self.sse.parser.comments.clear()
                    now = time.monotonic()
                    self.max_gap = max(self.max_gap, now - self.last_beat)
                    self.last_beat = now
            self.ended = "closed by the server"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.ended = f"{type(exc).__name__}: {exc}"

    def reset_window(self) -> None:
        """Start a new observation window."""
        self.last_beat = time.monotonic()
        self.max_gap = 0.0

    def gap_now(self) -> float:
        """The longest silence in the window, counting the one still going on."""
        return max(self.max_gap, time.monotonic() - self.last_beat)

    def close(self) -> None:
        self.task.cancel()
        self.sse.close()


async def _threads_for(bench: Bench, user: User, count: int) -> list[str]:
    """`count` empty threads of the user, inserted directly (the page/POST cost is not measured)."""
    from chatapp.ids import uuid7

    conn = await bench.connect_db()
    try:
        user_id = await conn.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", user.email)
        ids = [uuid7() for _ in range(count)]
        await conn.executemany(
            "INSERT INTO threads (id, user_id, title, model) VALUES ($1, $2, 'Stream bench', 'test-model')",
            [(tid, user_id) for tid in ids])
        return [str(tid) for tid in ids]
    finally:
        await conn.close()


async def _bounded(items, worker, concurrency: int) -> list:
    """Run worker(item) for each item, at most `concurrency` at a time, keeping order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item):
        async with gate:
            return await worker(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def open_streams(bench: Bench, user: User, levels: list[int], hold: float) -> dict:
    """max_open_streams and rss_per_1000_streams_mib, opening streams level by level."""
    threads = await _threads_for(bench, user, max(levels))
    watches: list[Watch] = []
    result: dict = {"max_open_streams": 0}
    await asyncio.sleep(1.0)
    rss_before = bench.app_rss_mib()
    rss_gens = rss_before
    try:
        for level in levels:
            todo = threads[len(watches):level]
            started = time.monotonic()
            answers = await _bounded(todo, lambda t: user.send_message(t, "bench:stall"), 8)
            send_seconds = time.monotonic() - started
            await asyncio.sleep(1.0)  # let the generations reach the model server
            rss_gens = bench.app_rss_mib()

            async def connect(answer_id: str) -> Watch:
                return Watch(await RawSSE(bench.port, answer_id, user.cookie).open())

            started = time.monotonic()
            watches += await _bounded(answers, connect, 32)
            open_seconds = time.monotonic() - started
            await asyncio.sleep(2.0)  # each stream's first heartbeat
            for watch in watches:
                watch.reset_window()
            await asyncio.sleep(hold)
            ended = [w.ended for w in watches if w.ended]
            late = sorted(w.gap_now() for w in watches if not w.ended)
            worst = late[-1] if late else 0.0
            rss = bench.app_rss_mib()
            result[f"streams_{level}_worst_heartbeat_gap_s"] = worst
            result[f"streams_{level}_seconds_to_start_answers"] = send_seconds
            result[f"streams_{level}_seconds_to_open_streams"] = open_seconds
            if ended or worst > MAX_GAP_SECONDS:
                result["note"] = (f"at {level} streams: {len(ended)} ended ({(ended or [''])[0]}), "
                                  f"worst heartbeat gap {worst:.1f} s")
                break
            result["max_open_streams"] = level
            if level == 1000 or (level == levels[0] and "rss_per_1000_streams_mib" not in result):
                per = 1000 / level
                result["rss_per_1000_streams_mib"] = (rss - rss_before) * per
                result["rss_per_1000_generations_mib"] = (rss_gens - rss_before) * per
                result["rss_per_1000_sse_readers_mib"] = (rss - rss_gens) * per
                result["rss_with_1000_streams_mib"] = rss
    finally:
        for watch in watches:
            watch.close()
    if not result["max_open_streams"] and "note" not in result:
        raise BenchError("no level held")
    return result

