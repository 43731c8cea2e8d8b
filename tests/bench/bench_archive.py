"""Archive: `quart --app chatapp backup` of many messages to moto's S3, with its peak RSS.

The command runs exactly as an operator would run it (a fresh process, so start-up counts),
configured through ARCHIVE_URL and AWS_ENDPOINT_URL. Messages come in reply chains of 1,000,
the shape that made a parents-first export walk 1,000 levels deep before its first row.
"""
from __future__ import annotations

import subprocess
import time

import psutil

from bench_app import BIN, ROOT, Bench, free_port
from bench_data import insert_thread

BUCKET = "chatapp-bench-archive"
PER_THREAD = 1000


def backup_registered(bench: Bench) -> bool:
    """True when `quart --app chatapp backup --help` succeeds."""
    probe = subprocess.run([str(BIN / "quart"), "--app", "chatapp", "backup", "--help"], cwd=ROOT,
                           env=bench.app_env(), capture_output=True, timeout=120)
    return probe.returncode == 0


async def seed_messages(bench: Bench, total: int) -> None:
    """`total` messages in threads of 1,000, owned by one user inserted directly."""
    from chatapp.ids import uuid7

    conn = await bench.connect_db()
    try:
        uid = uuid7()
        await conn.execute(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'not-a-hash')",
            uid, f"archive-{uid.hex[:8]}@bench.example.com")
        for start in range(0, total, PER_THREAD):
            await insert_thread(conn, uid, min(PER_THREAD, total - start), title="Archived", short=True)
    finally:
        await conn.close()


async def archive(bench: Bench, messages: int) -> dict:
    """archive_msgs_per_s and archive_peak_rss_mib of one backup run."""
    if not backup_registered(bench):
        return {"note": "archive skipped: `quart --app chatapp backup` is not a registered command yet"}
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket=BUCKET)
        await seed_messages(bench, messages)
        conn = await bench.connect_db()
        try:
            total = await conn.fetchval("SELECT count(*) FROM messages")
        finally:
            await conn.close()
        env = bench.app_env(ARCHIVE_URL=f"s3://{BUCKET}/bench", AWS_ENDPOINT_URL=endpoint, **creds)
        started = time.monotonic()
        log = bench.tmp / "backup.log"
        with open(log, "wb") as out:  # a file, not a pipe: a chatty command cannot block on it
            proc = subprocess.Popen([str(BIN / "quart"), "--app", "chatapp", "backup"], cwd=ROOT, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
            peak = _watch_peak_rss(proc)
        elapsed = time.monotonic() - started
        output = log.read_text(errors="replace")
        if proc.returncode != 0:
            return {"note": f"archive failed (exit {proc.returncode}): {output.strip()[-300:]}"}
        return {"archive_msgs_per_s": total / elapsed, "archive_peak_rss_mib": peak,
                "archive_messages": total, "archive_seconds": elapsed}
    finally:
        moto.stop()


def _watch_peak_rss(proc: subprocess.Popen, timeout: float = 1800.0) -> float:
    """Sample the RSS of the command (and its children) until it exits; the peak in MiB."""
    peak = 0
    deadline = time.monotonic() + timeout
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            break
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    proc.wait()
    return peak / 2**20
