"""`userdest db`: the database schema."""

from __future__ import annotations

import click
import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ops.cli.common import (
    CONNECT_TIMEOUT,
    emit,
    in_transaction,
    json_option,
    load_settings,
    require_yes,
)
from shared import migrate
from shared.migrate import upgrade
from shared.settings import Settings


@click.group()
def db() -> None:
    """The database schema."""


def ensure_database(settings: Settings) -> bool:
    """Create the database DATABASE_URL names unless it exists; True when it was created."""
    url = make_url(settings.sqlalchemy_url)
    name = url.database or ""
    # SQLAlchemy's dialect turns every multi-host form into libpq's keywords (host=h1,h2 port=p1,p2).
    _, params = url.get_dialect()().create_connect_args(url.set(database="postgres"))
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
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

    revision = in_transaction(analyze)
    answer = {
        "database": make_url(settings.sqlalchemy_url).database,
        "created": created,
        "revision": revision,
    }
    emit(answer, as_json, title="database up to date")


def _revision(session: Session) -> str | None:
    return session.scalar(text("SELECT version_num FROM alembic_version"))


@db.command("current")
@json_option
def db_current(as_json: bool) -> None:
    """Show the database's schema revision and the newest this release knows."""
    settings = load_settings()
    revision = in_transaction(_revision)
    newest = migrate.head(settings)
    answer = {
        "database": make_url(settings.sqlalchemy_url).database,
        "revision": revision,
        "head": newest,
        "up_to_date": revision == newest,
    }
    emit(answer, as_json, title="database schema")


@db.command("downgrade")
@click.argument("revision", metavar="REVISION")
@click.option("--yes", is_flag=True, help="Really downgrade: what newer revisions hold is lost.")
@json_option
def db_downgrade(revision: str, yes: bool, as_json: bool) -> None:
    """Migrate the database back to REVISION (`userdest db current` shows where it is; `base` is
    before the first). Needs --yes: the columns and tables newer revisions added go, with their
    data. Run it with the older release's workers and receivers stopped or already deployed."""
    settings = load_settings()
    if not migrate.known(settings, revision):
        raise click.BadParameter(f"no revision {revision!r} in this release", param_hint="REVISION")
    before = in_transaction(_revision)
    require_yes(yes, f"downgrading from {before} to {revision} drops what the newer revisions hold")
    migrate.downgrade(settings, revision)
    answer = {
        "database": make_url(settings.sqlalchemy_url).database,
        "from": before,
        "revision": in_transaction(_revision),
    }
    emit(answer, as_json, title="database downgraded")
