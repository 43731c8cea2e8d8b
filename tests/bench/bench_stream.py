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
TTFT_REPLY = "bench:chat:6:20"  # short, but still streaming when the reader connects


def direct_client(bench: Bench) -> openai.AsyncOpenAI:
    """The openai SDK pointed straight at the model server (the baseline path)."""
    return openai.AsyncOpenAI(base_url=bench.model_url, api_key="bench-key", max_retries=0, timeout=60)


async def direct_exchange(client: openai.AsyncOpenAI, content: str) -> float:
    """Milliseconds until the SDK yields the first text chunk (then the stream is closed)."""
    started = time.time()
    stream = await client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": content}], stream=True,
        stream_options={"include_usage": True})
    try:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                return (time.time() - started) * 1000
    finally:
        await stream.close()
    raise BenchError("the model server sent no text")


async def app_exchange(bench: Bench, user: User, thread_id: str, content: str,
                       parts: dict[str, list[float]] | None = None) -> float:
    """Milliseconds from the POST to the first token's text arriving over SSE.

    With `parts`, also when the POST answered and when the first token reached the answer's
    Redis Stream (the first entry's id is Redis' clock at the XADD, in ms).
    """
    started = time.time()
    answer_id = await user.send_message(thread_id, content)
    posted = time.time()
    result = await read_answer(bench.port, user, answer_id, marker=FIRST_TOKEN)
    if result["first"] is None:
        raise BenchError(f"the first token never arrived: {result['done'][:200]}")
    if parts is not None:
        parts.setdefault("post", []).append((posted - started) * 1000)
        client = bench.redis_client()
        try:
            first = await client.xrange(f"{bench.services.redis_prefix}gen:{answer_id}", count=1)
        finally:
            await client.aclose()
        if first:
            parts.setdefault("xadd", []).append(float(first[0][0].split(b"-")[0]) - started * 1000)
    return (result["first"] - started) * 1000


async def new_thread(user: User) -> str:
    """An empty thread of the user."""
    return await user.new_thread()


async def ttft_one_user(bench: Bench, user: User, samples: int, repeats: int) -> dict:
    """added_ttft_p50_ms: app and direct exchanges interleaved, one at a time."""
    client = direct_client(bench)
    added, app_p50, direct_p50, post_p50, xadd_p50, cpu_ms = [], [], [], [], [], []
    for _ in range(repeats):
        thread_id = await new_thread(user)
        await app_exchange(bench, user, thread_id, TTFT_REPLY)  # warm-up (title, connections)
        await direct_exchange(client, TTFT_REPLY)
        app, direct, parts = [], [], {}
        cpu = 0.0
        for _ in range(samples):
            meter = CpuMeter(bench.worker_pid).start()
            app.append(await app_exchange(bench, user, thread_id, TTFT_REPLY, parts))
            await asyncio.sleep(0.2)  # the answer's end (final UPDATE, title) is the worker's work too
            cpu += meter.seconds()
            direct.append(await direct_exchange(client, TTFT_REPLY))
        cpu_ms.append(1000 * cpu / samples)
        app_p50.append(statistics.median(app))
        direct_p50.append(statistics.median(direct))
        added.append(app_p50[-1] - direct_p50[-1])
        post_p50.append(statistics.median(parts["post"]))
        xadd_p50.append(statistics.median(parts["xadd"]))
    await client.close()
    return {"added_ttft_p50_ms": statistics.median(added), "ttft_post_reply_p50_ms": statistics.median(post_p50),
            "ttft_first_token_in_redis_p50_ms": statistics.median(xadd_p50),
            "ttft_p50_ms_app": statistics.median(app_p50), "ttft_p50_ms_direct": statistics.median(direct_p50),
            "ttft_worker_cpu_ms_per_exchange": statistics.median(cpu_ms)}


async def _threads(bench: Bench, users: list[User]) -> list[str]:
    """One empty thread per user, inserted directly."""
    from bench_data import empty_threads

    conn = await bench.connect_db()
    try:
        return [(await empty_threads(conn, u.email, 1))[0] for u in users]
    finally:
        await conn.close()


def _counting(run_one, errors: list[str]):
    """Wrap an exchange so a failed one is counted (and shown) instead of ending the run."""
    async def wrapped(i: int) -> float | None:
        try:
            return await run_one(i)
        except Exception as exc:  # 403/429/500 under load are findings, not crashes
            errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            return None
    return wrapped


async def _chatting(run_one, users: int, rounds: int, think: tuple[float, float], seed: int) -> list[float]:
    """`users` loops of `rounds` exchanges, each after a random pause within `think` s."""
    rng = random.Random(seed)
    pauses = [[rng.uniform(*think) for _ in range(rounds)] for _ in range(users)]

    async def loop(i: int) -> list[float]:
        out = []
        for r in range(rounds):
            await asyncio.sleep(pauses[i][r])
            out.append(await run_one(i))
        return out

    results = await asyncio.gather(*(loop(i) for i in range(users)))
    return [value for per_user in results for value in per_user if value is not None]


async def _burst(run_one, users: int, rounds: int) -> list[float]:
    """All users send at the same instant, `rounds` times."""
    values: list[float] = []
    for _ in range(rounds):
        values += await asyncio.gather(*(run_one(i) for i in range(users)))
    return [v for v in values if v is not None]


THINK_SECONDS = (2.0, 8.0)  # reading the answer and typing the next message, per user


async def ttft_many_users(bench: Bench, users: list[User], rounds: int, repeats: int,
                          think: tuple[float, float] = THINK_SECONDS) -> dict:
    """added_ttft_p99_ms_100_users: 100 users chatting at once (each pausing 2-8 s between
    messages, so ~18 messages/s arrive), and a burst where all 100 send at the same instant."""
    threads = await _threads(bench, users)
    clients = [direct_client(bench) for _ in range(4)]
    errors: list[str] = []
    burst_errors: list[str] = []
    parts: dict[str, list[float]] = {}

    async def app_exchange_of(i: int) -> float:
        return await app_exchange(bench, users[i], threads[i], CHAT_REPLY, parts)

    async def direct_one(i: int) -> float:
        return await direct_exchange(clients[i % len(clients)], CHAT_REPLY)

    app_one = _counting(app_exchange_of, errors)
    burst_one = _counting(app_exchange_of, burst_errors)

    n = len(users)
    await _chatting(app_one, n, 1, (0.0, think[1]), seed=99)  # warm-up: titles of new threads, pools
    errors.clear()
    parts.clear()
    out: dict[str, list[float]] = {k: [] for k in ("app", "direct", "added", "burst_app", "burst_direct", "burst_added")}
    for rep in range(repeats):
        app = await _chatting(app_one, n, rounds, think, seed=rep)
        chat_parts = {k: list(v) for k, v in parts.items()}
        direct = await _chatting(direct_one, n, max(1, rounds // 2), think, seed=rep)  # steady: fewer
        burst_app = await _burst(burst_one, n, max(1, rounds // 2))
        burst_direct = await _burst(direct_one, n, max(1, rounds // 2))
        for key, values in (("app", app), ("direct", direct), ("burst_app", burst_app), ("burst_direct", burst_direct)):
            out[key].append(percentile(values, 99))
        out["added"].append(out["app"][-1] - out["direct"][-1])
        out["burst_added"].append(out["burst_app"][-1] - out["burst_direct"][-1])
        out.setdefault("p50_added", []).append(percentile(app, 50) - percentile(direct, 50))
    for client in clients:
        await client.close()
    med = {k: statistics.median(v) for k, v in out.items()}
    for key, name in (("post", "post_reply"), ("xadd", "first_token_in_redis")):
        if chat_parts.get(key):
            med[f"{name}_p50"] = percentile(chat_parts[key], 50)
            med[f"{name}_p99"] = percentile(chat_parts[key], 99)
    return {"added_ttft_p99_ms_100_users": med["added"], "ttft_p99_ms_100_users_app": med["app"],
            "ttft_p99_ms_100_users_direct": med["direct"], "added_ttft_p50_ms_100_users": med["p50_added"],
            "added_ttft_p99_ms_100_users_burst": med["burst_added"],
            "ttft_p99_ms_100_users_burst_app": med["burst_app"],
            **{f"ttft_100_users_{k}_ms": v for k, v in med.items() if k.startswith(("post_reply", "first_token"))},
            "ttft_100_users_failed_exchanges": len(errors), "ttft_100_users_burst_failed_exchanges": len(burst_errors),
            **({"note": "100 users: " + "; ".join(sorted(set(errors + burst_errors))[:3])} if errors or burst_errors else {})}


async def _stamped_latencies(bench: Bench, user: User, thread_id: str, chunks: int,
                             millis: float) -> list[tuple[float, float]]:
    """Per chunk: ms from the model server's send to the SSE event carrying it, and to the
    Redis Stream entry holding it (the entry id is the XADD time in ms, by Redis' clock)."""
    answer_id = await user.send_message(thread_id, f"bench:stamp:{chunks}:{millis}")
    result = await read_answer(bench.port, user, answer_id)
    to_redis: dict[str, float] = {}
    client = bench.redis_client()
    try:
        for entry_id, fields in await client.xrange(f"{bench.services.redis_prefix}gen:{answer_id}"):
            for stamp in STAMP_RE.findall(fields.get(b"t", b"").decode()):
                to_redis[stamp] = float(entry_id.split(b"-")[0]) - float(stamp) * 1000
    finally:
        await client.aclose()
    seen: dict[str, tuple[float, float]] = {}
    for arrived, _kind, data, _id in result["texts"]:
        for stamp in STAMP_RE.findall(data):
            if stamp not in seen:
                seen[stamp] = ((arrived - float(stamp)) * 1000, to_redis.get(stamp, float("nan")))
    if len(seen) < chunks * 0.9:
        raise BenchError(f"only {len(seen)} of {chunks} stamped chunks arrived")
    return list(seen.values())


async def _direct_chunk_latencies(bench: Bench, chunks: int, millis: float) -> list[float]:
    """Per chunk: ms from the model server's send to the openai SDK yielding it here."""
    client = direct_client(bench)
    values = []
    try:
        stream = await client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": f"bench:stamp:{chunks}:{millis}"}], stream=True)
        async for chunk in stream:
            now = time.time()
            for choice in chunk.choices:
                values += [(now - float(s)) * 1000 for s in STAMP_RE.findall(choice.delta.content or "")]
    finally:
        await client.close()
    return values


async def relay_overhead(bench: Bench, user: User, chunks: int, repeats: int) -> dict:
    """relay_overhead_p50_ms at 50 chunks/s, and at 5 chunks/s (no throttling in the way)."""
    thread_id = await new_thread(user)
    await _stamped_latencies(bench, user, thread_id, 5, 200)  # warm-up
    fast, slow, fast_p99, fast_redis, slow_redis = [], [], [], [], []
    for _ in range(repeats):
        values = await _stamped_latencies(bench, user, thread_id, chunks, 20)
        fast.append(statistics.median(v[0] for v in values))
        fast_p99.append(percentile([v[0] for v in values], 99))
        fast_redis.append(statistics.median(v[1] for v in values))
        values = await _stamped_latencies(bench, user, thread_id, 10, 200)
        slow.append(statistics.median(v[0] for v in values))
        slow_redis.append(statistics.median(v[1] for v in values))
    direct = statistics.median(await _direct_chunk_latencies(bench, 10, 200))
    return {"relay_overhead_p50_ms": statistics.median(fast), "relay_overhead_p99_ms": statistics.median(fast_p99),
            "relay_direct_sdk_p50_ms_5_per_s": direct,
            "relay_model_to_redis_p50_ms": statistics.median(fast_redis),
            "relay_overhead_p50_ms_5_per_s": statistics.median(slow),
            "relay_model_to_redis_p50_ms_5_per_s": statistics.median(slow_redis)}


def _delivered(texts: list[tuple[float, str, str, str]]) -> int:
    """Distinct tokens the reader was shown: blocks and appended edits, plus the last tail."""
    seen: set[str] = set()
    last_tail = ""
    for _arrived, kind, data, _id in texts:
        if kind == "tail":
            last_tail = data
        else:
            seen.update(TOKEN_RE.findall(data))
    seen.update(TOKEN_RE.findall(last_tail))
    return len(seen)


async def _throughput_step(bench: Bench, user: User, threads: list[str], streams: int, tokens: int,
                           seconds: float, errors: list[str]) -> tuple[float, float]:
    """`streams` readers loop over flood answers for `seconds`; return (tokens/s, worker CPU %)."""
    delivered = 0
    deadline = time.monotonic() + seconds
    last_done = started = time.time()

    async def loop(i: int) -> None:
        nonlocal delivered, last_done
        while time.monotonic() < deadline:
            try:
                answer_id = await user.send_message(threads[i], f"bench:flood:{tokens}")
                result = await read_answer(bench.port, user, answer_id)
            except BenchError as exc:
                errors.append(str(exc)[:120])
                await asyncio.sleep(0.5)
                continue
            delivered += _delivered(result["texts"])
            last_done = max(last_done, result["done_at"])

    meter = CpuMeter(bench.worker_pid).start()
    await asyncio.gather(*(loop(i) for i in range(streams)))
    return delivered / (last_done - started), meter.stop()


async def relay_throughput(bench: Bench, user: User, levels: list[int], tokens: int, seconds: float,
                           repeats: int) -> dict:
    """relay_tokens_per_s: more concurrent answers until the worker is CPU-bound."""
    threads = await _threads(bench, [user] * max(levels))
    errors: list[str] = []
    await _throughput_step(bench, user, threads, 2, 200, 0.1, errors)  # warm-up
    best, best_level, cpu_at_best, per_level = 0.0, 0, 0.0, {}
    for level in levels:
        runs = [await _throughput_step(bench, user, threads, level, tokens, seconds, errors) for _ in range(repeats)]
        rate = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        per_level[level] = (rate, cpu)
        if rate > best:
            best, best_level, cpu_at_best = rate, level, cpu
        elif cpu >= 90 or rate < 0.9 * best:
            break  # no longer faster: more streams only queue
    extra = {f"relay_tokens_per_s_{lvl}_streams": v[0] for lvl, v in per_level.items()}
    note = {"note": f"throughput: {len(errors)} failed answers, e.g. {errors[0]}"} if errors else {}
    return {"relay_tokens_per_s": best, "relay_streams_at_best": best_level,
            "relay_worker_cpu_percent": cpu_at_best, "relay_failed_answers": len(errors), **extra, **note}
