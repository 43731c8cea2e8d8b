"""Streaming latency and throughput: added time to first token (1 and 100 users), per-chunk
relay overhead, and tokens per second delivered by one worker.

Every latency of the app is set against the same model server reached directly with the
openai SDK in the same run, so the model server's own cost is not charged to the app.
"""
from __future__ import annotations

import asyncio
import random
import re
import statistics
import time

import openai

from bench_app import Bench, CpuMeter
from bench_http import BenchError, User, percentile, read_answer
from bench_model import FIRST_TOKEN

STAMP_RE = re.compile(r"t=(\d{9,11}\.\d{6})")
TOKEN_RE = re.compile(r"\bw(\d+)\b")
CHAT_REPLY = "bench:chat:30:20"  # 30 words, 20 ms apart (50 tokens/s, a typical hosted model)


def direct_client(bench: Bench) -> openai.AsyncOpenAI:
    """The openai SDK pointed straight at the model server (the baseline path)."""
    return openai.AsyncOpenAI(base_url=bench.model_url, api_key="bench-key", max_retries=0, timeout=60)


async def direct_exchange(client: openai.AsyncOpenAI, content: str) -> float:
    """Milliseconds until the SDK yields the first text chunk (the rest is read too)."""
    started = time.time()
    first = None
    stream = await client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": content}], stream=True,
        stream_options={"include_usage": True})
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.time()
    return (first - started) * 1000


async def app_exchange(bench: Bench, user: User, thread_id: str, content: str) -> float:
    """Milliseconds from the POST to the first token's text arriving over SSE."""
    started = time.time()
    answer_id = await user.send_message(thread_id, content)
    result = await read_answer(bench.port, user, answer_id, marker=FIRST_TOKEN)
    if result["first"] is None:
        raise BenchError(f"the first token never arrived: {result['done'][:200]}")
    return (result["first"] - started) * 1000


async def new_thread(user: User) -> str:
    """An empty thread of the user."""
    return await user.new_thread()


async def ttft_one_user(bench: Bench, user: User, samples: int, repeats: int) -> dict:
    """added_ttft_p50_ms: app and direct exchanges interleaved, one at a time."""
    client = direct_client(bench)
    added, app_p50, direct_p50 = [], [], []
    for _ in range(repeats):
        thread_id = await new_thread(user)
        await app_exchange(bench, user, thread_id, "bench:ttft")  # warm-up (title, connections)
        await direct_exchange(client, "bench:ttft")
        app, direct = [], []
        for _ in range(samples):
            app.append(await app_exchange(bench, user, thread_id, "bench:ttft"))
            direct.append(await direct_exchange(client, "bench:ttft"))
        app_p50.append(statistics.median(app))
        direct_p50.append(statistics.median(direct))
        added.append(app_p50[-1] - direct_p50[-1])
    await client.close()
    return {"added_ttft_p50_ms": statistics.median(added),
            "ttft_p50_ms_app": statistics.median(app_p50), "ttft_p50_ms_direct": statistics.median(direct_p50)}


async def _chatting(run_one, users: int, rounds: int, think: float, seed: int) -> list[float]:
    """`users` loops of `rounds` exchanges, each after a random pause of up to `think` s."""
    rng = random.Random(seed)
    pauses = [[rng.uniform(0, think) for _ in range(rounds)] for _ in range(users)]

    async def loop(i: int) -> list[float]:
        out = []
        for r in range(rounds):
            await asyncio.sleep(pauses[i][r])
            out.append(await run_one(i))
        return out

    results = await asyncio.gather(*(loop(i) for i in range(users)))
    return [value for per_user in results for value in per_user]


async def _burst(run_one, users: int, rounds: int) -> list[float]:
    """All users send at the same instant, `rounds` times."""
    values: list[float] = []
    for _ in range(rounds):
        values += await asyncio.gather(*(run_one(i) for i in range(users)))
    return values


async def ttft_many_users(bench: Bench, users: list[User], rounds: int, repeats: int, think: float = 1.0) -> dict:
    """added_ttft_p99_ms_100_users: 100 users chatting at once (random pauses), and a burst."""
    threads = await asyncio.gather(*(new_thread(u) for u in users))
    clients = [direct_client(bench) for _ in range(4)]

    async def app_one(i: int) -> float:
        return await app_exchange(bench, users[i], threads[i], CHAT_REPLY)

    async def direct_one(i: int) -> float:
        return await direct_exchange(clients[i % len(clients)], CHAT_REPLY)

    n = len(users)
    await _burst(app_one, n, 1)  # warm-up: titles of new threads, connection pools
    out: dict[str, list[float]] = {k: [] for k in ("app", "direct", "added", "burst_app", "burst_direct", "burst_added")}
    for rep in range(repeats):
        app = await _chatting(app_one, n, rounds, think, seed=rep)
        direct = await _chatting(direct_one, n, rounds, think, seed=rep)
        burst_app = await _burst(app_one, n, max(1, rounds // 2))
        burst_direct = await _burst(direct_one, n, max(1, rounds // 2))
        for key, values in (("app", app), ("direct", direct), ("burst_app", burst_app), ("burst_direct", burst_direct)):
            out[key].append(percentile(values, 99))
        out["added"].append(out["app"][-1] - out["direct"][-1])
        out["burst_added"].append(out["burst_app"][-1] - out["burst_direct"][-1])
        out.setdefault("p50_added", []).append(percentile(app, 50) - percentile(direct, 50))
    for client in clients:
        await client.close()
    med = {k: statistics.median(v) for k, v in out.items()}
    return {"added_ttft_p99_ms_100_users": med["added"], "ttft_p99_ms_100_users_app": med["app"],
            "ttft_p99_ms_100_users_direct": med["direct"], "added_ttft_p50_ms_100_users": med["p50_added"],
            "added_ttft_p99_ms_100_users_burst": med["burst_added"],
            "ttft_p99_ms_100_users_burst_app": med["burst_app"]}


async def _stamped_latencies(bench: Bench, user: User, thread_id: str, chunks: int, millis: float) -> list[float]:
    """Per chunk: milliseconds from the model server's send to the SSE event carrying it."""
    answer_id = await user.send_message(thread_id, f"bench:stamp:{chunks}:{millis}")
    result = await read_answer(bench.port, user, answer_id)
    seen: dict[str, float] = {}
    for arrived, _kind, data in result["texts"]:
        for stamp in STAMP_RE.findall(data):
            if stamp not in seen:
                seen[stamp] = (arrived - float(stamp)) * 1000
    if len(seen) < chunks * 0.9:
        raise BenchError(f"only {len(seen)} of {chunks} stamped chunks arrived")
    return list(seen.values())


async def relay_overhead(bench: Bench, user: User, chunks: int, repeats: int) -> dict:
    """relay_overhead_p50_ms at 50 chunks/s, and at 5 chunks/s (no throttling in the way)."""
    thread_id = await new_thread(user)
    await _stamped_latencies(bench, user, thread_id, 5, 200)  # warm-up
    fast, slow, fast_p99 = [], [], []
    for _ in range(repeats):
        values = await _stamped_latencies(bench, user, thread_id, chunks, 20)
        fast.append(statistics.median(values))
        fast_p99.append(percentile(values, 99))
        slow.append(statistics.median(await _stamped_latencies(bench, user, thread_id, max(10, chunks // 4), 200)))
    return {"relay_overhead_p50_ms": statistics.median(fast), "relay_overhead_p99_ms": statistics.median(fast_p99),
            "relay_overhead_p50_ms_5_per_s": statistics.median(slow)}


def _delivered(texts: list[tuple[float, str, str]]) -> int:
    """Distinct tokens the reader was shown: all blocks plus the last tail."""
    seen: set[str] = set()
    last_tail = ""
    for _arrived, kind, data in texts:
        if kind == "tail":
            last_tail = data
        else:
            seen.update(TOKEN_RE.findall(data))
    seen.update(TOKEN_RE.findall(last_tail))
    return len(seen)


async def _throughput_step(bench: Bench, user: User, threads: list[str], streams: int, tokens: int,
                           seconds: float) -> tuple[float, float]:
    """`streams` readers loop over flood answers for `seconds`; return (tokens/s, worker CPU %)."""
    delivered = 0
    deadline = time.monotonic() + seconds
    last_done = started = time.time()

    async def loop(i: int) -> None:
        nonlocal delivered, last_done
        while time.monotonic() < deadline:
            answer_id = await user.send_message(threads[i], f"bench:flood:{tokens}")
            result = await read_answer(bench.port, user, answer_id)
            delivered += _delivered(result["texts"])
            last_done = max(last_done, result["done_at"])

    meter = CpuMeter(bench.worker_pid).start()
    await asyncio.gather(*(loop(i) for i in range(streams)))
    return delivered / (last_done - started), meter.stop()


async def relay_throughput(bench: Bench, user: User, levels: list[int], tokens: int, seconds: float,
                           repeats: int) -> dict:
    """relay_tokens_per_s: more concurrent answers until the worker is CPU-bound."""
    threads = [await new_thread(user) for _ in range(max(levels))]
    await _throughput_step(bench, user, threads, 2, 200, 0.1)  # warm-up
    best, best_level, cpu_at_best, per_level = 0.0, 0, 0.0, {}
    for level in levels:
        runs = [await _throughput_step(bench, user, threads, level, tokens, seconds) for _ in range(repeats)]
        rate = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        per_level[level] = (rate, cpu)
        if rate > best:
            best, best_level, cpu_at_best = rate, level, cpu
        elif cpu >= 90:
            break  # CPU-bound and no longer faster: more streams only queue
    extra = {f"relay_tokens_per_s_{lvl}_streams": v[0] for lvl, v in per_level.items()}
    return {"relay_tokens_per_s": best, "relay_streams_at_best": best_level,
            "relay_worker_cpu_percent": cpu_at_best, **extra}
