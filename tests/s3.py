"""S3 for tests: moto's standalone server on loopback, and one `target` fixture that runs a
suite against it and against a local folder (the same object layout).

Test modules import the fixtures they use: `from s3 import target, overrides  # noqa: F401`.
moto accepts a wrong ChecksumSHA256 without complaint (PITFALLS.md), so tests corrupt
objects on purpose and check that chatapp notices by reading back and hashing.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "2",  # one retry keeps the unreachable-endpoint tests quick
    # Never read the developer's own AWS configuration.
    "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


class MotoS3:
    """moto's server in a thread (HTTP on 127.0.0.1, a free port), with fake credentials in the env."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.saved = {name: os.environ.get(name) for name in CREDENTIALS}
        os.environ.update(CREDENTIALS)
        os.environ.pop("AWS_SESSION_TOKEN")
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        import boto3

        self.client = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")

    def close(self) -> None:
        """Stop the server and put the environment back."""
        self.server.stop()
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def new_bucket(self) -> str:
        """A fresh bucket for one test."""
        name = f"chatapp-{secrets.token_hex(4)}"
        self.client.create_bucket(Bucket=name)
        return name

    def _auth(self, value: bytes) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=value, method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=5).read()

    @contextlib.contextmanager
    def checking_credentials(self):
        """While inside, moto refuses access keys it does not know (it accepts any by default)."""
        self._auth(b"0")
        try:
            yield
        finally:
            self._auth(b"inf")


@dataclass
class Target:
    """Where a test's archive (or assets) live, and raw access to the stored objects."""

    kind: str
    url: str
    settings: dict
    moto: MotoS3 | None = None
    bucket: str | None = None
    prefix: str = ""
    folder: Path | None = None

    def read(self, key: str) -> bytes:
        """The stored bytes of an object."""
        if self.kind == "s3":
            return self.moto.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()
        return (self.folder / key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        """Replace an object behind chatapp's back (to corrupt it)."""
        if self.kind == "s3":
            self.moto.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)
        else:
            (self.folder / key).write_bytes(data)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under prefix, sorted."""
        if self.kind == "s3":
            pages = self.moto.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/{prefix}")
            return sorted(o["Key"][len(self.prefix) + 1:] for p in pages for o in p.get("Contents", []))
        if not self.folder.exists():
            return []
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*")
                      if p.is_file() and p.relative_to(self.folder).as_posix().startswith(prefix))

    def head(self, key: str) -> dict:
        """S3's HEAD answer for an object (S3 targets only)."""
        return self.moto.client.head_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")


def make_target(kind: str, moto: MotoS3 | None, folder: Path, setting: str = "ARCHIVE_URL") -> Target:
    """A fresh bucket (s3) or folder (local) named by `setting`."""
    if kind == "s3":
        bucket = moto.new_bucket()
        url = f"s3://{bucket}/chat"
        return Target("s3", url, {setting: url, "AWS_ENDPOINT_URL": moto.url}, moto, bucket, "chat")
    return Target("local", str(folder), {setting: str(folder), "AWS_ENDPOINT_URL": None}, folder=folder)


@pytest.fixture(params=["local", "s3"])
def target(request, tmp_path):
    """The archive location of a test: run once with a local folder and once with moto's S3."""
    moto = request.getfixturevalue("moto_s3") if request.param == "s3" else None
    return make_target(request.param, moto, tmp_path / "archive")


@pytest.fixture
def overrides(overrides, target):
    """The app's settings, pointing ARCHIVE_URL at this test's target."""
    overrides.update(target.settings)
    return overrides


async def seed_history(conn, *, users: int = 2, threads: int = 2, turns: int = 3, idle_days: int = 0) -> list:
    """Users with threads of branching conversations, written with SQL; returns the thread ids.

    Each turn is a question, an answer and a regenerated sibling answer, all stamped with the
    same now() so only a parent-first order (not ids or timestamps) can load them back.
    """
    async with conn.transaction():  # one now() for every row
        return await _seed(conn, users, threads, turns, idle_days)


async def _seed(conn, users: int, threads: int, turns: int, idle_days: int) -> list:
    from chatapp.ids import uuid7

    thread_ids = []
    for u in range(users):
        user_id = uuid7()
        await conn.execute(
            "INSERT INTO users (id, email, password_hash, settings) VALUES ($1, $2, 'x', $3::jsonb)",
            user_id, f"user{u}-{secrets.token_hex(3)}@example.com", '{"theme": "dark", "n": [1, 2.5]}')
        for t in range(threads):
            thread_id = uuid7()
            thread_ids.append(thread_id)
            await conn.execute(
                """INSERT INTO threads (id, user_id, title, params, updated_at)
                   VALUES ($1, $2, $3, '{"temperature": 0.7}'::jsonb, now() - make_interval(days => $4))""",
                thread_id, user_id, f"Thread {u}.{t} <b>&</b>", idle_days)
            parent = None
            for n in range(turns):
                question, answer, sibling = uuid7(), uuid7(), uuid7()
                text = secrets.token_urlsafe(60)
                await conn.execute(
                    """INSERT INTO messages (id, thread_id, parent_id, role, content, created_at)
                       VALUES ($1, $2, $3, 'user', $4, now() - make_interval(days => $5))""",
                    question, thread_id, parent, f"question {n} ünïcode 🙂 {text}", idle_days)
                for mid in (sibling, answer):
                    await conn.execute(
                        """INSERT INTO messages (id, thread_id, parent_id, role, content, status, model,
                                                 prompt_tokens, completion_tokens, created_at, finished_at)
                           VALUES ($1, $2, $3, 'assistant', $4, 'complete', 'test-model', 10, 20,
                                   now() - make_interval(days => $5), now() - make_interval(days => $5))""",
                        mid, thread_id, question, f"answer to {n}: **{text[::-1]}**", idle_days)
                parent = answer
            await conn.execute("UPDATE threads SET current_leaf_id = $2 WHERE id = $1", thread_id, parent)
    await conn.execute(
        """INSERT INTO app_settings (key, value) VALUES ('CHATAPP_SIGNUP', '"closed"'::jsonb)
           ON CONFLICT (key) DO NOTHING""")
    return thread_ids


async def table_checksums(conn) -> dict:
    """(row count, md5 of every row's text in a stable order) of every table but schema_migrations."""
    names = [r["tablename"] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'")]
    sums = {}
    for name in sorted(names):
        row = await conn.fetchrow(
            f"""SELECT count(*) AS n, md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) AS sum
                FROM "{name}" x""")
        sums[name] = (row["n"], row["sum"])
    return sums


def run_sql(url: str, work):
    """Run `await work(conn)` on a fresh connection from sync code (CLI tests)."""
    import asyncio

    import asyncpg

    async def go():
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())
