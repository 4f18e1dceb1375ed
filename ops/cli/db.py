"""`userdest db`: the database schema."""

from __future__ import annotations

import click
import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ops.cli.common import CONNECT_TIMEOUT, emit, json_option, load_settings, work
from shared.migrate import upgrade
from shared.settings import Settings


@click.group()
def db() -> None:
    """The database schema."""


def ensure_database(settings: Settings) -> bool:
    """Create the database DATABASE_URL names unless it exists; True when it was created."""
    url = make_url(settings.sqlalchemy_url)
    name = url.database or ""
    maintenance = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(
        maintenance.render_as_string(hide_password=False),
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT,
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # another `db upgrade` created it a moment ago
    return True


@db.command("upgrade")
@json_option
def db_upgrade(as_json: bool) -> None:
    """Create the database if it does not exist, then migrate it to the newest schema."""
    settings = load_settings()
    created = ensure_database(settings)
    upgrade(settings)

    def analyze(session: Session) -> str | None:
        # Fresh statistics after a migration: a planner guessing sizes may scan what it should probe.
        session.execute(text("ANALYZE"))
        return session.scalar(text("SELECT version_num FROM alembic_version"))

    revision = work(analyze)
    answer = {
        "database": make_url(settings.sqlalchemy_url).database,
        "created": created,
        "revision": revision,
    }
    emit(answer, as_json, title="database up to date")
