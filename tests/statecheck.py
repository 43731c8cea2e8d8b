"""Snapshots of everything the app stores (every table, every Redis key) to prove a request changed nothing.

A snapshot is each table's row count and an md5 of its rows, and each Redis key of this run
with a digest of its value. Left out, because they change on reads by design:
- `api_tokens.last_used_at`: the API notes a token's use (at most once a minute);
- Redis cache keys (`frag:` rendered answers, `share:` rendered share pages, `models` list) and
  rate-limit counters (`rl:`);
- key expiry times (sessions slide their expiry on every visit; TTLs are not compared).
"""
from __future__ import annotations

import hashlib

import asyncpg
import redis.asyncio as aredis

IGNORED_COLUMNS = {("api_tokens", "last_used_at")}
IGNORED_KEY_KINDS = ("frag:", "share:", "models", "rl:")  # the start of a key after the prefix


async def database_state(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """{table: (row count, md5 of all rows)} for every table but the migrations ledger."""
    columns = await conn.fetch(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
           ORDER BY table_name, ordinal_position""")
    by_table: dict[str, list[str]] = {}
    for row in columns:
        if (row["table_name"], row["column_name"]) not in IGNORED_COLUMNS:
            by_table.setdefault(row["table_name"], []).append(row["column_name"])
    state = {}
    for table, names in by_table.items():
        # Table and column names come from the catalog, quoted as identifiers.
        cols = ", ".join(f'"{n}"' for n in names)
        row = await conn.fetchrow(
            f'SELECT count(*) AS n, md5(coalesce(string_agg(r::text, \'|\' ORDER BY r::text), \'\')) AS digest '
            f'FROM (SELECT {cols} FROM "{table}") AS r')
        state[table] = (row["n"], row["digest"])
    return state


async def redis_state(client: aredis.Redis, prefix: str) -> dict[str, str]:
    """{key: digest of its value} for this run's keys, without caches and rate-limit counters."""
    state = {}
    async for raw in client.scan_iter(match=prefix + "*", count=1000):
        key = raw.decode()
        if key[len(prefix):].startswith(IGNORED_KEY_KINDS):
            continue
        kind = (await client.type(raw)).decode()
        if kind == "string":
            value = await client.get(raw)
        elif kind == "hash":
            value = sorted((await client.hgetall(raw)).items())
        elif kind == "set":
            value = sorted(await client.smembers(raw))
        elif kind == "zset":
            value = await client.zrange(raw, 0, -1, withscores=True)
        elif kind == "list":
            value = await client.lrange(raw, 0, -1)
        elif kind == "stream":
            value = await client.xrange(raw)
        else:  # gone between SCAN and TYPE, or a type we do not use
            value = kind
        state[key] = hashlib.sha256(repr(value).encode()).hexdigest()[:16]
    return state


class StateCheck:
    """Take snapshots of the run's database and Redis keys, and diff them."""

    def __init__(self, database_url: str, redis_url: str, prefix: str) -> None:
        self.database_url, self.redis_url, self.prefix = database_url, redis_url, prefix

    async def snapshot(self) -> dict:
        """The current state of both stores."""
        conn = await asyncpg.connect(self.database_url)
        client = aredis.Redis.from_url(self.redis_url)
        try:
            return {"db": await database_state(conn), "redis": await redis_state(client, self.prefix)}
        finally:
            await conn.close()
            await client.aclose()

    @staticmethod
    def diff(before: dict, after: dict) -> list[str]:
        """What changed between two snapshots, in words."""
        changes = []
        for table in sorted(set(before["db"]) | set(after["db"])):
            old, new = before["db"].get(table), after["db"].get(table)
            if old != new:
                changes.append(f"table {table}: rows {old and old[0]} -> {new and new[0]}"
                               + (" (contents changed)" if old and new and old[0] == new[0] else ""))
        for key in sorted(set(before["redis"]) | set(after["redis"])):
            if key not in after["redis"]:
                changes.append(f"redis key removed: {key}")
            elif key not in before["redis"]:
                changes.append(f"redis key added: {key}")
            elif before["redis"][key] != after["redis"][key]:
                changes.append(f"redis key changed: {key}")
        return changes
