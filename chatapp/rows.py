"""Dump and load table rows as JSON lines, driven by the PostgreSQL catalog.

Backups, archived threads and restores all move rows this way, so a table or column another
migration adds is carried along without code changes. PostgreSQL itself writes each row
(`row_to_json`) and reads it back (`jsonb_populate_recordset`), so every type round-trips
exactly: timestamps with their zone, jsonb, arrays, uuids, numerics.
"""
from __future__ import annotations

from dataclasses import dataclass

import asyncpg

SKIPPED_TABLES = ("schema_migrations",)


def ident(name: str) -> str:
    """Quote an identifier taken from the catalog."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Table:
    """What dumping and loading one table needs to know."""

    name: str
    columns: tuple[str, ...]  # stored columns in order (generated ones are recomputed on insert)
    key: tuple[str, ...]  # primary key, for a stable order
    parent: tuple[str, str] | None  # (column, referenced column) of a self-reference, e.g. messages.parent_id
    parent_constraint: str | None = None  # that self-reference's foreign key constraint
    parent_deferrable: bool = False  # whether it can wait for the commit (migrations/0007 for messages)


async def describe(conn: asyncpg.Connection, name: str) -> Table:
    """Columns, primary key and self-reference of one table."""
    columns = await conn.fetch(
        """SELECT attname FROM pg_attribute WHERE attrelid = quote_ident($1)::regclass
           AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum""",
        name,
    )
    key = await conn.fetch(
        """SELECT a.attname FROM pg_constraint c
           JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) ON true
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
           WHERE c.conrelid = quote_ident($1)::regclass AND c.contype = 'p' ORDER BY k.n""",
        name,
    )
    parent = await conn.fetchrow(
        """SELECT a.attname AS child, r.attname AS referenced, c.conname, c.condeferrable FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
           JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1]
           WHERE c.contype = 'f' AND c.conrelid = quote_ident($1)::regclass
             AND c.confrelid = c.conrelid AND cardinality(c.conkey) = 1
           ORDER BY c.conname LIMIT 1""",
        name,
    )
    return Table(
        name, tuple(r["attname"] for r in columns), tuple(r["attname"] for r in key),
        (parent["child"], parent["referenced"]) if parent else None,
        parent["conname"] if parent else None, bool(parent and parent["condeferrable"]),
    )


async def tables_in_dependency_order(conn: asyncpg.Connection) -> list[str]:
    """Every table of the schema except schema_migrations, referenced tables before referencing ones.

    A cycle (threads.current_leaf_id -> messages -> threads) is broken at a DEFERRABLE foreign
    key, which a restore checks only at commit.
    """
    names = [r["relname"] for r in await conn.fetch(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           ORDER BY c.relname"""
    ) if r["relname"] not in SKIPPED_TABLES]
    edges = await conn.fetch(
        """SELECT src.relname AS child, dst.relname AS parent, c.condeferrable AS deferrable
           FROM pg_constraint c JOIN pg_class src ON src.oid = c.conrelid
           JOIN pg_class dst ON dst.oid = c.confrelid JOIN pg_namespace n ON n.oid = src.relnamespace
           WHERE c.contype = 'f' AND n.nspname = current_schema() AND c.conrelid <> c.confrelid"""
    )
    needs = {name: {} for name in names}  # child -> {parent: deferrable}
    for edge in edges:
        if edge["child"] in needs and edge["parent"] in needs:
            needs[edge["child"]][edge["parent"]] = needs[edge["child"]].get(edge["parent"], True) and edge["deferrable"]
    ordered: list[str] = []
    relaxed = False
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and all(
            p in ordered or (relaxed and deferrable) for p, deferrable in needs[n].items())]
        if ready:
            ordered.append(ready[0])
            relaxed = False
        elif not relaxed:
            relaxed = True  # stuck in a cycle: let deferrable references wait for the commit
        else:  # a cycle of immediate constraints: keep going; the restore reports the violation
            ordered.append(next(n for n in names if n not in ordered))
    return ordered


def select_sql(table: Table) -> str:
    """A query yielding one JSON text per row (column `line`) in primary-key order.

    A plain index scan, so the first rows arrive at once however big the table. In a
    self-referencing table (messages.parent_id) a child may come before its parent: a restore
    checks that foreign key at commit (backup.py), not row by row.
    """
    cols = ", ".join(f"t.{ident(c)}" for c in table.columns)
    order = ", ".join(f"t.{ident(c)}" for c in table.key) or "1"
    return f"SELECT row_to_json(r)::text AS line FROM (SELECT {cols} FROM {ident(table.name)} t ORDER BY {order}) r"


async def fetch_lines(conn: asyncpg.Connection, table: Table, where: str, *args) -> list[tuple[object, str]]:
    """(primary key, JSON line) of a small set of rows (one thread's messages), parents first.

    One indexed query and a sort in Python: a recursive query restricted by `where` would
    make PostgreSQL scan the whole table at each level. Rows are ordered by depth, then key, so
    rehydrating a thread inserts every parent before its children.
    """
    cols = ", ".join(f"t.{ident(c)}" for c in table.columns)
    key = ident(table.parent[1] if table.parent else (table.key or table.columns)[0])
    parent = f"t.{ident(table.parent[0])}" if table.parent else "NULL"
    records = await conn.fetch(
        f"""SELECT t.{key} AS k, {parent} AS p, row_to_json(r)::text AS line
            FROM {ident(table.name)} t CROSS JOIN LATERAL (SELECT {cols}) r WHERE {where}""",
        *args,
    )
    children: dict = {}
    for record in records:
        children.setdefault(record["p"], []).append(record)
    keys = {record["k"] for record in records}
    # Roots: no parent, or a parent outside the set (kept rather than lost).
    level = [r for r in records if r["p"] is None or r["p"] not in keys]
    ordered: list[tuple[object, str]] = []
    while level:
        level.sort(key=lambda r: r["k"])
        ordered.extend((r["k"], r["line"]) for r in level)
        level = [c for r in level for c in children.get(r["k"], [])]
    return ordered


def count_sql(table: Table, where: str = "") -> str:
    """Count a table's rows (optionally those of alias `t` matching `where`)."""
    return f"SELECT count(*) FROM {ident(table.name)} t" + (f" WHERE {where}" if where else "")


async def insert_rows(conn: asyncpg.Connection, table: Table, columns: list[str], lines: list[str]) -> int:
    """Insert JSON rows, skipping any that already exist (any unique key); return how many were new."""
    if not lines:
        return 0
    cols = ", ".join(ident(c) for c in columns)
    status = await conn.execute(
        f"""INSERT INTO {ident(table.name)} ({cols}) OVERRIDING SYSTEM VALUE
            SELECT {cols} FROM jsonb_populate_recordset(NULL::{ident(table.name)}, $1::text::jsonb)
            ON CONFLICT DO NOTHING""",
        "[" + ",".join(lines) + "]",
    )
    return int(status.rsplit(" ", 1)[-1])


async def reset_sequences(conn: asyncpg.Connection, table: Table) -> None:
    """Move serial/identity sequences past the loaded values so new rows get fresh numbers."""
    for column in table.columns:
        sequence = await conn.fetchval("SELECT pg_get_serial_sequence(quote_ident($1), $2)", table.name, column)
        if sequence:
            await conn.execute(
                f"SELECT setval($1, coalesce(max({ident(column)}), 1), max({ident(column)}) IS NOT NULL) "
                f"FROM {ident(table.name)}",
                sequence,
            )


async def defer_self_reference(conn: asyncpg.Connection, table: Table) -> bool:
    """Check the table's self-reference only at commit in this transaction; True if it had to be altered.

    Restores insert rows in key order, so a child may come first. A DEFERRABLE constraint
    (messages since migrations/0007) only needs SET CONSTRAINTS; an older schema's one is made
    deferrable inside the transaction, and undo_deferral puts it back before the commit.
    """
    if not table.parent_constraint:
        return False
    name, constraint = ident(table.name), ident(table.parent_constraint)
    if table.parent_deferrable:
        await conn.execute(f"SET CONSTRAINTS {constraint} DEFERRED")
        return False
    await conn.execute(f"ALTER TABLE {name} ALTER CONSTRAINT {constraint} DEFERRABLE INITIALLY DEFERRED")
    return True


async def undo_deferral(conn: asyncpg.Connection, tables: list[Table]) -> None:
    """Run every deferred check now (a violation raises here), then make altered constraints NOT DEFERRABLE again."""
    await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    for table in tables:
        await conn.execute(f"ALTER TABLE {ident(table.name)} ALTER CONSTRAINT {ident(table.parent_constraint)} "
                           "NOT DEFERRABLE")
