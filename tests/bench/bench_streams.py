"""Open streams: how many SSE streams one worker holds with heartbeats flowing, and their RSS.

Each stream follows its own answer, kept open by a model reply that sends one chunk and then
stalls. The heartbeat interval is 1 s for the run; a stream counts as alive during the hold
when it saw a heartbeat at least every 2.5 s and never closed.
"""
from __future__ import annotations

import asyncio
import time

from bench_app import Bench
from bench_data import empty_threads
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
        except (OSError, BenchError, ValueError) as exc:
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
    conn = await bench.connect_db()
    try:
        return await empty_threads(conn, user.email, count)
    finally:
        await conn.close()


async def _bounded(items, worker, concurrency: int, errors: list[str]) -> list:
    """worker(item) for each item, `concurrency` at a time; failures are counted, not raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item):
        async with gate:
            try:
                return await worker(item)
            except (BenchError, OSError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
                return None

    return [r for r in await asyncio.gather(*(one(item) for item in items)) if r is not None]


async def open_streams(bench: Bench, user: User, levels: list[int], hold: float) -> dict:
    """max_open_streams and rss_per_1000_streams_mib, opening streams level by level."""
    threads = await _threads_for(bench, user, max(levels))
    watches: list[Watch] = []
    errors: list[str] = []
    result: dict = {"max_open_streams": 0}
    await asyncio.sleep(1.0)
    rss_before = bench.app_rss_mib()
    try:
        for level in levels:
            todo = threads[len(watches) + len(errors):level]
            started = time.monotonic()
            answers = await _bounded(todo, lambda t: user.send_message(t, "bench:stall"), 8, errors)
            result[f"streams_{level}_seconds_to_start_answers"] = time.monotonic() - started
            await asyncio.sleep(1.0)  # let the generations reach the model server
            rss_gens = bench.app_rss_mib()

            async def connect(answer_id: str) -> Watch:
                return Watch(await RawSSE(bench.port, answer_id, user.cookie).open())

            started = time.monotonic()
            watches += await _bounded(answers, connect, 32, errors)
            result[f"streams_{level}_seconds_to_open_streams"] = time.monotonic() - started
            await asyncio.sleep(2.0)  # each stream's first heartbeat
            for watch in watches:
                watch.reset_window()
            await asyncio.sleep(hold)
            alive = [w for w in watches if not w.ended and w.gap_now() <= MAX_GAP_SECONDS]
            ended = [w.ended for w in watches if w.ended]
            gaps = sorted(w.gap_now() for w in watches if not w.ended)
            rss = bench.app_rss_mib()
            result[f"streams_{level}_alive"] = len(alive)
            result[f"streams_{level}_worst_heartbeat_gap_s"] = gaps[-1] if gaps else 0.0
            result["max_open_streams"] = max(result["max_open_streams"], len(alive))
            if "rss_per_1000_streams_mib" not in result and watches:
                per = 1000 / len(watches)
                result["rss_per_1000_streams_mib"] = (rss - rss_before) * per
                result["rss_per_1000_generations_mib"] = (rss_gens - rss_before) * per
                result["rss_per_1000_sse_readers_mib"] = (rss - rss_gens) * per
                result["rss_with_open_streams_mib"] = rss
            if len(alive) < level:
                result["note"] = (f"streams: {len(alive)} of {level} alive; {len(errors)} sends/opens failed"
                                  f" ({(errors or ['-'])[0]}); {len(ended)} ended ({(ended or ['-'])[0]}); "
                                  f"worst heartbeat gap {result[f'streams_{level}_worst_heartbeat_gap_s']:.1f} s")
                break
    finally:
        for watch in watches:
            watch.close()
    result["streams_failed_requests"] = len(errors)
    return result
