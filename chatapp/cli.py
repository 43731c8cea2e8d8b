"""`quart --app chatapp <command>`: sync click functions that run async work with asyncio.run."""
from __future__ import annotations

import asyncio
import sys

import click
from quart import Quart


def run_with_database(app: Quart, work) -> object:
    """Open only PostgreSQL (embedded if needed), run `work(conn)`, close it again."""
    from . import db

    async def main() -> object:
        await db.open_database(app)
        try:
            async with app.db.acquire() as conn:
                return await work(conn)
        finally:
            await db.close_database(app)

    return asyncio.run(main())


def init_app(app: Quart) -> None:
    """Register the commands."""

    @app.cli.command("db-upgrade")
    def db_upgrade() -> None:
        """Apply pending database migrations (safe to run on every instance at once)."""
        from . import db

        async def work(conn):
            return await db.schema_version(conn)

        version = run_with_database(app, work)
        click.echo(f"database schema is at version {version}")

    @app.cli.command("create-user")
    @click.argument("email")
    @click.option("--admin", is_flag=True, help="Give the account admin rights.")
    @click.password_option(help="Password (prompted when omitted).")
    def create_user(email: str, admin: bool, password: str) -> None:
        """Create an account (prompts for the password)."""
        from .models import users
        from .views.auth import validate_credentials

        problems = validate_credentials(email, password)
        if problems:
            click.echo("error: " + " ".join(problems.values()), err=True)
            sys.exit(2)

        async def work(conn):
            return await users.insert_user(conn, email, password, is_admin=admin)

        user = run_with_database(app, work)
        if user is None:
            click.echo(f"error: an account for {email} already exists", err=True)
            sys.exit(1)
        click.echo(f"created {'admin ' if admin else ''}user {user.email} ({user.id})")
