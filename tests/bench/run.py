"""chatapp benchmarks: `python tests/bench/run.py [--quick] [--json FILE] [--profile DIR]`.

Starts PostgreSQL/Redis (as the tests do), the scripted model server and the app under
Hypercorn with the production config, runs each measurement group, prints a table against the
goals of issue #8 and writes the numbers as JSON. Medians of repeated runs are reported.
`--quick` cuts repetitions and the archive size, never the sizes the goals name.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_profile  # noqa: E402
from bench_app import Bench  # noqa: E402

# (key, comparison, goal); None: reported, no goal.
GOALS = [
    ("added_ttft_p50_ms", "<=", 10), ("added_ttft_p99_ms_100_users", "<=", 50),
    ("relay_overhead_p50_ms", "<=", 1), ("max_open_streams", ">=", 1000),
    ("rss_per_1000_streams_mib", "<=", 100), ("relay_tokens_per_s", ">=", 20000),
    ("page_1000_msgs_warm_p50_ms", "<=", 20), ("page_1000_msgs_cold_p50_ms", None, None),
    ("page_cache_speedup", ">=", 5), ("first_load_kib_gzip", "<=", 50), ("idle_rss_mib", "<=", 80),
    ("archive_msgs_per_s", ">=", 20000),
]
SIZES = {
    "quick": dict(ttft_samples=20, ttft_repeats=3, users=100, user_rounds=1, user_repeats=1,
                  relay_chunks=40, relay_repeats=3, flood_levels=[1, 8, 32], flood_tokens=1000,
                  flood_seconds=4.0, flood_repeats=1, stream_levels=[1000], stream_hold=5.0,
                  page_warm=7, page_cold=3, archive_messages=20_000),
    "full": dict(ttft_samples=50, ttft_repeats=5, users=100, user_rounds=5, user_repeats=3,
                 relay_chunks=100, relay_repeats=5, flood_levels=[1, 4, 16, 32, 64, 128], flood_tokens=2000,
                 flood_seconds=10.0, flood_repeats=3, stream_levels=[1000, 1500, 2000, 3000], stream_hold=10.0,
                 page_warm=50, page_cold=20, archive_messages=200_000),
}
GROUPS = ("idle", "pages", "first_load", "ttft", "relay", "users", "throughput", "streams", "archive")


def machine() -> str:
    """CPU model, cores and memory of this machine."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kib = int(handle.readline().split()[1])
    return f"{model}, {os.cpu_count()} cores, {mem_kib / 2**20:.1f} GiB RAM, Python {platform.python_version()}"


def raise_file_limit() -> int:
    """Thousands of sockets (streams, model connections) need a high open-file limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class Runner:
    """Runs the groups in order against one Bench, collecting numbers and notes."""

    def __init__(self, bench: Bench, args: argparse.Namespace) -> None:
        self.bench, self.args = bench, args
        self.size = SIZES["quick" if args.quick else "full"]
        self.results: dict[str, float] = {}
        self.notes: list[str] = []
        self.started = time.monotonic()

    def wanted(self, group: str) -> bool:
        return not self.args.only or group in self.args.only

    async def group(self, name: str, factory) -> None:
        """Run one measurement group; a failure becomes a note and the run goes on."""
        if not self.wanted(name):
            return
        began = time.monotonic()
        print(f"[{began - self.started:6.1f} s] {name} ...", flush=True)
        try:
            pid = self.bench.worker_pid if self.bench.app_proc else None
            with bench_profile.record(self.args.profile, name, pid):
                out = await factory()
        except Exception as exc:
            self.notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            return
        note = out.pop("note", None)
        if note:
            self.notes.append(note)
        self.results.update(out)
        print(f"           {name} took {time.monotonic() - began:.1f} s", flush=True)

    async def run(self) -> None:
        from bench_archive import archive
        from bench_http import create_users
        from bench_pages import first_load, idle_rss, page_timings, seed_threads
        from bench_streams import open_streams
        from bench_stream import relay_overhead, relay_throughput, ttft_many_users, ttft_one_user

        b, s = self.bench, self.size
        # Accounts first (argon2 signups), then a fresh worker for the idle figure.
        solo = await create_users(b, 4, "solo")
        crowd = await create_users(b, s["users"], "crowd") if self.wanted("users") else []
        page_user, ttft_user, flood_user, stream_user = solo
        threads = await seed_threads(b, page_user)
        await asyncio.to_thread(b.start_app)
        for user in solo + crowd:
            user.rebase(b.url)
        await self.group("idle", lambda: idle_rss(b, page_user, threads["small"]))
        await self.group("pages", lambda: page_timings(b, page_user, threads["big"], s["page_warm"], s["page_cold"]))
        await self.group("first_load", lambda: first_load(b, page_user, threads["small"]))
        await self.group("ttft", lambda: ttft_one_user(b, ttft_user, s["ttft_samples"], s["ttft_repeats"]))
        await self.group("relay", lambda: relay_overhead(b, ttft_user, s["relay_chunks"], s["relay_repeats"]))
        await self.group("users", lambda: ttft_many_users(b, crowd, s["user_rounds"], s["user_repeats"]))
        await self.group("throughput", lambda: relay_throughput(
            b, flood_user, s["flood_levels"], s["flood_tokens"], s["flood_seconds"], s["flood_repeats"]))
        await self.group("streams", lambda: open_streams(b, stream_user, s["stream_levels"], s["stream_hold"]))
        await asyncio.to_thread(b.stop_app)  # ends the stalled answers; the backup runs alone
        await self.group("archive", lambda: archive(b, s["archive_messages"]))
        for user in solo + crowd:
            await user.close()


def verdict(value, op, goal) -> str:
    if value is None:
        return "not measured"
    if op is None:
        return ""
    ok = value <= goal if op == "<=" else value >= goal
    return "ok" if ok else "MISS"


def table(results: dict, notes: list[str]) -> str:
    """The goals table, then the supporting figures and notes."""
    rows = [f"{'key':34} {'measured':>12}  {'goal':>9}  verdict", "-" * 70]
    for key, op, goal in GOALS:
        value = results.get(key)
        shown = "-" if value is None else f"{value:12.1f}" if abs(value) < 1e6 else f"{value:12.0f}"
        rows.append(f"{key:34} {shown:>12}  {(op or '') + ' ' + str(goal or '-'):>9}  {verdict(value, op, goal)}")
    extras = sorted(k for k in results if k not in {g[0] for g in GOALS})
    if extras:
        rows += ["", "supporting figures:"]
        rows += [f"  {k:44} {results[k]:12.2f}" for k in extras]
    if notes:
        rows += ["", "notes:"] + [f"  - {n}" for n in notes]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description="chatapp benchmarks (issue #8).")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller archive (< 5 min)")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles of the worker per group here")
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups")
    parser.add_argument("--worker-class", default="uvloop", choices=["asyncio", "uvloop"],
                        help="Hypercorn worker class (production, deploy/hypercorn.toml, uses uvloop)")
    args = parser.parse_args()
    if args.profile and not bench_profile.available():
        parser.error("--profile needs py-spy (pip install py-spy)")
    limit = raise_file_limit()
    print(f"machine: {machine()}; open-file limit {limit}", flush=True)
    bench = Bench(args.quick, args.worker_class)
    runner = None
    started = time.monotonic()
    try:
        bench.start()
        print(f"services: {bench.describe_services()}; app {bench.url} ({args.worker_class}); "
              f"logs in {bench.tmp}", flush=True)
        runner = Runner(bench, args)
        load_before = os.getloadavg()[0]
        asyncio.run(runner.run())
        # Other work on the machine inflates every latency: record how busy it was.
        runner.results["machine_load_avg_1m_start"] = load_before
        runner.results["machine_load_avg_1m_end"] = os.getloadavg()[0]
    finally:
        bench.stop()
    results = runner.results if runner else {}
    notes = runner.notes if runner else []
    print()
    print(table(results, notes))
    print(f"\ntotal {time.monotonic() - started:.0f} s ({'quick' if args.quick else 'full'} run)")
    if args.json:
        numbers = {key: results.get(key) for key, _, _ in GOALS}
        numbers.update({k: v for k, v in results.items() if isinstance(v, (int, float))})
        args.json.write_text(json.dumps(numbers, indent=2, sort_keys=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
