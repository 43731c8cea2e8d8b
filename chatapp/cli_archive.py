"""`quart --app chatapp backup | list-backups | restore | archive | publish-static`.

Sync click commands that call asyncio.run (quart#361); each opens only what it needs: the
object store first (so a missing bucket or wrong key fails in a second), then PostgreSQL.
Every expected failure is one line on stderr and exit status 1; nothing is deleted.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from quart import Quart

from . import archive, assets, backup, db
from .storage import StorageError, archive_store, archive_url, open_store

EXPECTED = (StorageError, backup.BackupError, archive.ArchiveError, db.DatabaseAheadError)


def _run(main) -> object:
    """asyncio.run, turning expected failures into one line and exit 1."""
    try:
        return asyncio.run(main())
    except EXPECTED as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@contextlib.asynccontextmanager
async def database(app: Quart, migrate: bool):
    """One connection to PostgreSQL (embedded if no URL), optionally migrated first."""
    from . import embedded

    if migrate:
        await db.open_database(app)
    else:  # backup and restore must see the schema as it is (restore migrates by itself)
        url = app.config.get("DATABASE_URL")
        if not url:
            url, handle = await asyncio.to_thread(embedded.start_postgres, Path(app.config["CHATAPP_INSTANCE_DIR"]))
            app.extensions["pgserver"] = handle
        app.db = await db.create_pool(url, 2)
    try:
        async with app.db.acquire() as conn:
            yield conn
    finally:
        await db.close_database(app)


class Progress:
    """A click progress bar on a terminal; silent otherwise (cron, systemd, pipes)."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stdout.isatty()
        self.bar = None

    def start(self, total: int, label: str) -> None:
        """Show a bar for `total` steps (on a terminal)."""
        if self.enabled:
            self.bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            self.bar.__enter__()

    def update(self, count: int) -> None:
        """Advance the bar."""
        if self.bar is not None:
            self.bar.update(count)

    def finish(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


async def _locked(conn, key: int) -> bool:
    return await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)


async def _unlock(conn, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", key)


def _backup_age(backup_id: str) -> timedelta | None:
    try:
        made = datetime.strptime(backup_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return datetime.now(timezone.utc) - made


def init_app(app: Quart) -> None:
    """Register the archive, backup and static-asset commands."""

    @app.cli.command("backup")
    @click.option("--dry-run", is_flag=True, help="Print the tables and row counts; write nothing.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
    @click.option("--min-interval-hours", type=click.FloatRange(min=0), default=0,
                  help="Skip when the newest backup is younger than this (for timers on every instance).")
    def backup_command(dry_run: bool, quiet: bool, min_interval_hours: float) -> None:
        """Snapshot every table to ARCHIVE_URL/backups/<backup-id>/ (gzip JSON lines + manifest.json)."""
        progress = Progress(quiet)
        url = archive_url(app.config)

        async def main():
            """Check the store, then snapshot (or plan) under the backup lock."""
            async with archive_store(app.config) as store:
                await store.check()
                if min_interval_hours and not dry_run:
                    newest = (await backup.list_backups(store) or [None])[-1]
                    age = _backup_age(newest) if newest else None
                    if age is not None and age < timedelta(hours=min_interval_hours):
                        return f"skipped: backup {newest} is {age.total_seconds() / 3600:.1f} h old"
                async with database(app, migrate=False) as conn:
                    if dry_run:
                        plans = await backup.plan(conn, count=True)
                        lines = [f"would write a backup of schema version {await db.schema_version(conn)} "
                                 f"to {url}/backups/{backup.new_backup_id()}/:"]
                        lines += [f"  {p.table.name}: {p.rows} rows" for p in plans]
                        return "\n".join(lines)
                    if not await _locked(conn, backup.BACKUP_LOCK_KEY):
                        return "skipped: another backup is running"
                    try:
                        manifest = await backup.write_backup(
                            conn, store, count=progress.enabled, progress=progress.update,
                            on_plan=lambda plans: progress.start(sum(p.rows or 0 for p in plans), "backup"),
                        )
                    finally:
                        progress.finish()
                        await _unlock(conn, backup.BACKUP_LOCK_KEY)
            rows = sum(p["rows"] for p in manifest["parts"])
            return f"backup {manifest['backup_id']}: {rows} rows in {len(manifest['parts'])} parts at {url}"

        message = _run(main)
        if not quiet or dry_run:
            click.echo(message)

    @app.cli.command("list-backups")
    def list_backups_command() -> None:
        """List the complete backups in ARCHIVE_URL, oldest first."""

        async def main():
            """The ids with a manifest."""
            async with archive_store(app.config) as store:
                await store.check()
                return await backup.list_backups(store)

        for backup_id in _run(main):
            click.echo(backup_id)

    @app.cli.command("restore")
    @click.argument("backup_id")
    @click.option("--dry-run", is_flag=True, help="Verify every checksum and print what would be loaded.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
    def restore_command(backup_id: str, dry_run: bool, quiet: bool) -> None:
        """Verify a backup's checksums, then load it (rows that exist are skipped)."""
        progress = Progress(quiet)

        async def main():
            """Verify every part, then load them."""
            async with archive_store(app.config) as store:
                await store.check()
                manifest = await backup.read_manifest(store, backup_id)
                manifest.setdefault("backup_id", backup_id)
                with tempfile.TemporaryDirectory(prefix="chatapp-restore-") as folder:
                    progress.start(len(manifest["parts"]), "verify")
                    try:
                        paths = await backup.download_verified(store, manifest, Path(folder), progress.update)
                    finally:
                        progress.finish()
                    if dry_run:
                        counts: dict[str, int] = {}
                        for part in manifest["parts"]:
                            counts[part["table"]] = counts.get(part["table"], 0) + part["rows"]
                        return [f"backup {backup_id} verified (schema version {manifest['schema_version']}); "
                                "would load:"] + [f"  {t}: {n} rows" for t, n in counts.items()]
                    async with database(app, migrate=False) as conn:
                        progress.start(sum(p["rows"] for p in manifest["parts"]), "restore")
                        try:
                            stats = await backup.load(conn, manifest, paths, progress.update)
                        finally:
                            progress.finish()
            return [f"restored backup {backup_id}:"] + [
                f"  {table}: {new} restored, {seen} already there" for table, (new, seen) in stats.items()]

        for line in _run(main):
            click.echo(line)

    @app.cli.command("archive")
    @click.option("--older-than", "days", type=click.IntRange(min=0), required=True,
                  help="Archive threads with no activity for this many days (0: every idle thread).")
    @click.option("--dry-run", is_flag=True, help="List the threads that would be archived.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
    def archive_command(days: int, dry_run: bool, quiet: bool) -> None:
        """Move idle threads' messages to ARCHIVE_URL/threads/ (verified) and out of PostgreSQL."""
        progress = Progress(quiet)
        url = archive_url(app.config)
        failures: list[str] = []

        def on_thread(candidate, key, error) -> None:
            """Count each thread done and remember failures for stderr."""
            progress.update(1)
            if error:
                failures.append(f"thread {candidate.id}: {error}")

        async def main():
            """Check the store, then archive (or list) under the archive lock."""
            async with archive_store(app.config) as store:
                await store.check()
                async with database(app, migrate=True) as conn:
                    if dry_run:
                        found = await archive.select_candidates(conn, days)
                        return [f"would archive {len(found)} threads "
                                f"({sum(c.messages for c in found)} messages) to {url}/threads/:"] + [
                            f"  {c.id}  {c.messages} messages, last activity {c.last_activity:%Y-%m-%d}"
                            for c in found]
                    if not await _locked(conn, archive.ARCHIVE_LOCK_KEY):
                        return ["skipped: another archive run holds the lock"]
                    try:
                        progress.start(len(await archive.select_candidates(conn, days)), "archive")
                        done = await archive.archive_threads(conn, store, days, on_thread=on_thread)
                    finally:
                        progress.finish()
                        await _unlock(conn, archive.ARCHIVE_LOCK_KEY)
            lines = [f"archived {done['archived']} threads ({done['messages']} messages) to {url}/threads/"]
            if done["changed"]:
                lines.append(f"{done['changed']} threads changed while archiving and stay in PostgreSQL")
            return lines

        lines = _run(main)
        if not quiet or dry_run:
            for line in lines:
                click.echo(line)
        for failure in failures:
            click.echo(f"error: {failure}", err=True)
        if failures:
            sys.exit(1)

    @app.cli.command("publish-static")
    @click.option("--dry-run", is_flag=True, help="List what would be uploaded.")
    @click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
                  default=assets.STATIC_DIR, show_default=True, help="Folder of assets to publish.")
    def publish_static_command(dry_run: bool, source: Path) -> None:
        """Upload static/ to STATIC_PUBLISH_URL under content-hashed names, with a manifest."""
        url = app.config.get("STATIC_PUBLISH_URL")
        if not url:
            click.echo("error: set STATIC_PUBLISH_URL (s3://bucket/prefix or a folder) to publish assets", err=True)
            sys.exit(1)

        async def main():
            """Upload what changed, then the manifest."""
            async with open_store(url, app.config.get("AWS_ENDPOINT_URL")) as store:
                await store.check()
                return await assets.publish_static(store, source, dry_run=dry_run,
                                                   instance_dir=Path(app.config["CHATAPP_INSTANCE_DIR"]))

        report = _run(main)
        verb = "would upload" if dry_run else "uploaded"
        for name in report.uploaded:
            click.echo(f"{verb} {name} -> {report.manifest[name]}")
        state = "changed" if report.manifest_changed else "unchanged"
        click.echo(f"{verb} {len(report.uploaded)} files, skipped {len(report.skipped)} unchanged; "
                   f"manifest {state} at {url.rstrip('/')}/{assets.MANIFEST_KEY}")
