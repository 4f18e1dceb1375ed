"""`userdest`, the operator CLI: the database, apps, keys, domains, definitions, profiles, replays,
dead letters and queues.

Every command takes `--json` for a machine answer (indented JSON on stdout) and otherwise prints
tables. A mistake the operator can fix (an unknown app, a bad type, an unreachable database) ends
as one line on stderr and a non-zero exit, never a traceback. Each command is one unit of work:
settings and an engine are made when it runs, so `--help` needs no database.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import click
import orjson
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, null, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from shared import deadletters as dead_letters
from shared import readmodel, tenancy
from shared.db import make_engine, make_sessionmaker
from shared.migrate import upgrade
from shared.models import SCOPES, App, AttributeDefinition, EventDefinition
from shared.queues import QUEUES, REPLAY
from shared.readmodel import NotFound
from shared.settings import Settings, SettingsError
from shared.tenancy import TenancyError
from shared.timeparse import iso
from workers.coerce import normalize_type

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from shared.replay import Source, Summary

T = TypeVar("T")

CONNECT_TIMEOUT = 10
"""Seconds to wait for Postgres before telling the operator it cannot be reached."""


# --- plumbing: settings, one unit of work, one way to print ------------------------------------


def _settings() -> Settings:
    return Settings.from_env().verify()


def work(unit: Callable[[Session], T]) -> T:
    """Run `unit` in one transaction against DATABASE_URL, commit it, and return its answer."""
    engine = make_engine(_settings(), connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        with make_sessionmaker(engine).begin() as session:
            return unit(session)
    finally:
        engine.dispose()


def _in_app(app_name: str, query: Callable[[Session, int], T]) -> Callable[[Session], T]:
    """A unit of work for `work()`: `query(session, app_id)` for the app named `app_name`."""
    return lambda session: query(session, tenancy.get_app(session, app_name).id)


def emit(data: Any, as_json: bool, *, title: str | None = None, empty: str = "none") -> None:
    """Print `data` as indented JSON, else as a table (a list) or key/value panels (a dict)."""
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    if not console.is_terminal:
        # Piped or captured: let tables take their natural width instead of folding at 80 columns.
        console = Console(width=1000)
    if isinstance(data, list):
        console.print(_table(data, title) if data else Text(empty))
        return
    for renderable in _panels(data, title):
        console.print(renderable)


def _cell(value: Any) -> Text:
    # Text, not markup: a value such as "[object Object]" must print as it is.
    if value is None or value == []:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return Text(", ".join(value))
    if isinstance(value, dict | list):
        return Text(orjson.dumps(value).decode())
    return Text(str(value))


def _table(rows: list[dict[str, Any]], title: str | None) -> Table:
    table = Table(title=title, title_justify="left")
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(value) for value in row.values()))
    return table


def _panels(data: dict[str, Any], title: str | None) -> Iterator[Table]:
    """Scalars in one key/value table; each nested object or list of objects in its own table."""
    main = Table(title=title, title_justify="left", show_header=False)
    main.add_column(style="bold")
    main.add_column(overflow="fold")
    nested: list[Table] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            inner = Table(title=key, title_justify="left", show_header=False)
            inner.add_column(style="bold")
            inner.add_column(overflow="fold")
            for name, item in value.items():
                inner.add_row(Text(name), _cell(item))
            nested.append(inner)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            nested.append(_table(value, key))
        else:
            main.add_row(Text(key), _cell(value))
    yield main
    yield from nested


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _database_error(exc: DBAPIError) -> str:
    first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__
    if isinstance(exc.orig, psycopg.errors.UndefinedTable):
        return f"the database is not migrated ({first}); run `userdest db upgrade`"
    if "does not exist" in first and "database" in first:
        return f"{first}; run `userdest db upgrade` to create it"
    if isinstance(exc, OperationalError):
        return f"cannot reach the database: {first}"
    return f"database error: {first}"


class _UsageMistake(click.ClickException):
    exit_code = 2  # what Click's own usage errors exit with


class _Cli(click.Group):
    """The root group: turns every expected failure into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (SettingsError, TenancyError, NotFound) as exc:
            raise click.ClickException(_one_line(str(exc))) from None
        except DBAPIError as exc:
            raise click.ClickException(_one_line(_database_error(exc))) from None
        except psycopg.Error as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise click.ClickException(f"cannot reach the database: {_one_line(message)}") from None
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            # Click prints usage, a hint and the error over four lines; operators get one.
            path = exc.ctx.command_path if exc.ctx else "userdest"
            raise _UsageMistake(
                f"{_one_line(exc.format_message())} (see `{path} --help`)"
            ) from None


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Answer in JSON instead of tables."
)
app_option = click.option("--app", "app_name", required=True, metavar="NAME", help="The app.")


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate userdest: the database, apps, API keys, trusted domains, attributes, profiles,
    replays, dead letters and queues.

    Reads DATABASE_URL (postgresql://user@host:5432/db) and, for replay, deadletters replay and
    queue, REDIS_URL (redis://host:6379/0). Every command takes --json.
    """


# --- db ----------------------------------------------------------------------------------------


@main.group()
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
    settings = _settings()
    created = ensure_database(settings)
    upgrade(settings)
    revision = work(lambda session: session.scalar(text("SELECT version_num FROM alembic_version")))
    answer = {
        "database": make_url(settings.sqlalchemy_url).database,
        "created": created,
        "revision": revision,
    }
    emit(answer, as_json, title="database up to date")


# --- apps --------------------------------------------------------------------------------------


@main.group()
def apps() -> None:
    """Apps: the tenants that own everything else."""


@apps.command("create")
@click.argument("name")
@json_option
def apps_create(name: str, as_json: bool) -> None:
    """Create the app NAME (names are unique)."""

    def unit(session: Session) -> dict[str, Any]:
        app = tenancy.create_app(session, name)
        return {"name": app.name, "created_at": iso(app.created_at)}

    emit(work(unit), as_json, title="app created")


@apps.command("list")
@json_option
def apps_list(as_json: bool) -> None:
    """List every app with its count of live keys and trusted domains."""
    emit(work(readmodel.app_list), as_json, title="apps", empty="no apps")


# --- keys --------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """API keys: the write keys Segment sources send."""


@keys.command("create")
@app_option
@json_option
def keys_create(app_name: str, as_json: bool) -> None:
    """Create an API key for the app; its secret is shown this once and never stored."""

    def unit(session: Session) -> dict[str, Any]:
        new = tenancy.create_key(session, tenancy.get_app(session, app_name))
        return {"key_id": new.key_id, "api_key": new.api_key}

    answer = work(unit)
    emit(answer, as_json, title="key created")
    if not as_json:
        click.echo("Copy the api_key now: it cannot be shown again.", err=True)


@keys.command("revoke")
@click.argument("key_id")
@json_option
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke the key KEY_ID; receivers refuse it within seconds. Revoking twice changes nothing."""

    def unit(session: Session) -> dict[str, Any]:
        key = tenancy.revoke_key(session, key_id)
        return {"key_id": key.id, "revoked_at": iso(key.revoked_at) if key.revoked_at else None}

    emit(work(unit), as_json, title="key revoked")


@keys.command("list")
@app_option
@json_option
def keys_list(app_name: str, as_json: bool) -> None:
    """List the app's keys: ids, prefixes and times, never a secret."""
    emit(
        work(_in_app(app_name, readmodel.key_list)),
        as_json,
        title=f"keys of {app_name}",
        empty="no keys",
    )


# --- domains -----------------------------------------------------------------------------------


@main.group()
def domains() -> None:
    """Trusted domains: the hosts browsers may send from.

    Exact (shop.example.com) or wildcard (*.example.com); an app with none trusts every host.
    """


@domains.command("add")
@app_option
@click.argument("host")
@json_option
def domains_add(app_name: str, host: str, as_json: bool) -> None:
    """Trust HOST (shop.example.com, or *.example.com for its sub-domains) for the app."""

    def unit(session: Session) -> dict[str, Any]:
        added = tenancy.add_domain(session, tenancy.get_app(session, app_name), host)
        return {"app": app_name, "host": added}

    emit(work(unit), as_json, title="domain trusted")


@domains.command("remove")
@app_option
@click.argument("host")
@json_option
def domains_remove(app_name: str, host: str, as_json: bool) -> None:
    """Stop trusting HOST for the app."""

    def unit(session: Session) -> dict[str, Any]:
        removed = tenancy.remove_domain(session, tenancy.get_app(session, app_name), host)
        return {"app": app_name, "host": removed}

    emit(work(unit), as_json, title="domain removed")


@domains.command("list")
@app_option
@json_option
def domains_list(app_name: str, as_json: bool) -> None:
    """List the app's trusted domains; an empty list means every host is trusted."""
    emit(
        work(_in_app(app_name, readmodel.domain_list)),
        as_json,
        title=f"domains of {app_name}",
        empty="none: every host is trusted",
    )


# --- webhook secret ----------------------------------------------------------------------------


@main.group("webhook-secret")
def webhook_secret() -> None:
    """The secret that signs POST /webhook bodies.

    Segment's Webhooks destination sends X-Signature, the hex HMAC-SHA1 of the body.
    """


@webhook_secret.command("set")
@app_option
@click.argument("value", metavar="SECRET", required=False)
@click.option("--clear", is_flag=True, help="Remove the secret: /webhook takes unsigned bodies.")
@json_option
def webhook_secret_set(app_name: str, value: str | None, clear: bool, as_json: bool) -> None:
    """Set the app's webhook SECRET (`-` reads it from stdin), or remove it with --clear."""
    if clear == (value is not None):
        raise click.ClickException("give either SECRET or --clear")
    if value == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    if value is not None and not value.strip():
        raise click.ClickException("the webhook secret must not be empty")

    def unit(session: Session) -> dict[str, Any]:
        tenancy.get_app(session, app_name).webhook_secret = value
        return {"app": app_name, "webhook_secret_set": value is not None}

    emit(work(unit), as_json, title="webhook secret")


# --- attributes --------------------------------------------------------------------------------


@main.group()
def attributes() -> None:
    """Attribute definitions: how values are typed."""


def _normalize_type(name: str) -> str:
    try:
        return normalize_type(name)  # the workers' rule, so both sides agree on synonyms
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _parse_choices(raw: str | None, kind: str, multiple: bool) -> list[str] | None:
    if kind != "fixed":
        if raw is not None or multiple:
            raise click.ClickException("--choices and --multiple apply to the fixed type only")
        return None
    choices = list(dict.fromkeys(c.strip() for c in (raw or "").split(",") if c.strip()))
    if not choices:
        raise click.ClickException("the fixed type needs --choices a,b,...")
    return choices


def _check_event(scope: str, event: str | None) -> str:
    if scope != "event":
        if event is not None:
            raise click.ClickException("--event applies to the event scope only")
        return ""
    if event is None or not event.strip():
        raise click.ClickException("the event scope needs --event EVENT")
    return event


def _check_room(session: Session, app: App, scope: str, event: str, name: str) -> None:
    """Refuse a new name past the app's cap: traffic drops such names, an operator is told."""
    same_scope = (
        AttributeDefinition.app_id == app.id,
        AttributeDefinition.scope == scope,
        AttributeDefinition.event == event,
    )
    if session.scalar(
        select(AttributeDefinition.id).where(*same_scope, AttributeDefinition.name == name)
    ):
        return
    if scope == "event":
        exists = session.scalar(
            select(EventDefinition.id).where(
                EventDefinition.app_id == app.id, EventDefinition.name == event
            )
        )
        events = session.scalar(
            select(func.count())
            .select_from(EventDefinition)
            .where(EventDefinition.app_id == app.id)
        )
        if exists is None and (events or 0) >= app.max_event_names:
            raise click.ClickException(
                f"{app.name!r} already has {app.max_event_names} events, its cap"
            )
    cap = {
        "user": app.max_user_attributes,
        "company": app.max_company_attributes,
        "event": app.max_event_attributes,
    }[scope]
    count = select(func.count()).select_from(AttributeDefinition).where(*same_scope)
    if (session.scalar(count) or 0) >= cap:
        where = f"event {event!r}" if scope == "event" else f"the {scope} scope"
        raise click.ClickException(f"{app.name!r} already has {cap} attributes in {where}, its cap")


def define_attribute(
    session: Session,
    app: App,
    scope: str,
    event: str,
    name: str,
    kind: str,
    choices: list[str] | None,
    multiple: bool,
) -> dict[str, Any]:
    """Create or redefine one definition as the operator's: traffic never changes it after this."""
    _check_room(session, app, scope, event, name)
    if scope == "event":
        session.execute(
            insert(EventDefinition)
            .values(app_id=app.id, name=event, origin="operator")
            .on_conflict_do_update(index_elements=["app_id", "name"], set_={"origin": "operator"})
        )
    values = {
        "type": kind,
        "choices": null() if choices is None else choices,
        "multiple": multiple,
        "origin": "operator",
    }
    row = session.execute(
        insert(AttributeDefinition)
        .values(app_id=app.id, scope=scope, event=event, name=name, **values)
        .on_conflict_do_update(index_elements=["app_id", "scope", "event", "name"], set_=values)
        .returning(
            AttributeDefinition.scope,
            AttributeDefinition.event,
            AttributeDefinition.name,
            AttributeDefinition.type,
            AttributeDefinition.choices,
            AttributeDefinition.origin,
        )
    ).one()
    return readmodel.definition(row)


@attributes.command("define")
@app_option
@click.option("--scope", type=click.Choice(SCOPES), required=True, help="Whose attribute it is.")
@click.option("--event", metavar="EVENT", help="The event name (event scope only).")
@click.argument("attr")
@click.argument("type_", metavar="TYPE")
@click.option("--choices", metavar="A,B", help="The allowed values of a fixed attribute.")
@click.option("--multiple", is_flag=True, help="A fixed attribute holding a list of choices.")
@json_option
def attributes_define(
    app_name: str,
    scope: str,
    event: str | None,
    attr: str,
    type_: str,
    choices: str | None,
    multiple: bool,
    as_json: bool,
) -> None:
    """Define ATTR as TYPE: string, integer, float (number), boolean, date, datetime, fixed, json.

    Redefining an attribute, whoever defined it, changes its type and makes it the operator's.
    Values already stored stay as they are; later calls are coerced to the new type.
    """
    if not 1 <= len(attr) <= 64 or not attr.strip():
        raise click.ClickException("an attribute name is 1 to 64 characters")
    kind = _normalize_type(type_)
    parsed = _parse_choices(choices, kind, multiple)
    event_name = _check_event(scope, event)

    def unit(session: Session) -> dict[str, Any]:
        app = tenancy.get_app(session, app_name)
        return define_attribute(session, app, scope, event_name, attr, kind, parsed, multiple)

    emit(work(unit), as_json, title="attribute defined")


@attributes.command("list")
@app_option
@json_option
def attributes_list(app_name: str, as_json: bool) -> None:
    """List the app's attribute definitions, operator's and those traffic made."""
    emit(
        work(_in_app(app_name, readmodel.attribute_list)),
        as_json,
        title=f"attributes of {app_name}",
        empty="no attributes",
    )


# --- users and companies -----------------------------------------------------------------------


limit_option = click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="Only the N newest."
)


@main.group()
def users() -> None:
    """User profiles, looked up by userId or anonymousId."""


@users.command("show")
@app_option
@click.argument("id")
@json_option
def users_show(app_name: str, id: str, as_json: bool) -> None:
    """Show the profile that ID (a userId or an anonymousId) names."""
    profile = work(_in_app(app_name, lambda s, app_id: readmodel.user_profile(s, app_id, id)))
    emit(profile, as_json, title=f"user {id}")


@users.command("events")
@app_option
@click.argument("id")
@limit_option
@json_option
def users_events(app_name: str, id: str, limit: int | None, as_json: bool) -> None:
    """List the events the profile ID tracked, newest first."""
    found = work(_in_app(app_name, lambda s, app_id: readmodel.user_events(s, app_id, id, limit)))
    emit(found, as_json, title=f"events of {id}", empty="no events")


@users.command("pageviews")
@app_option
@click.argument("id")
@limit_option
@json_option
def users_pageviews(app_name: str, id: str, limit: int | None, as_json: bool) -> None:
    """List the page and screen views of the profile ID, newest first."""
    found = work(
        _in_app(app_name, lambda s, app_id: readmodel.user_pageviews(s, app_id, id, limit))
    )
    emit(found, as_json, title=f"page views of {id}", empty="no page views")


@main.group()
def companies() -> None:
    """Companies, looked up by groupId."""


@companies.command("show")
@app_option
@click.argument("group_id")
@json_option
def companies_show(app_name: str, group_id: str, as_json: bool) -> None:
    """Show the company GROUP_ID and the users linked to it."""
    found = work(
        _in_app(app_name, lambda s, app_id: readmodel.company_profile(s, app_id, group_id))
    )
    emit(found, as_json, title=f"company {group_id}")


# --- replay, dead letters, queues ---------------------------------------------------------------
#
# These need Redis, Celery's message format and (for replays) the receiver's checks; they import
# them when they run, so the other commands start without loading Flask, Celery or redis-py.


@contextmanager
def _broker(settings: Settings, read_timeout: float | None = None) -> Iterator[redis.Redis]:
    """A Redis client for REDIS_URL that answers now; any Redis failure becomes one line."""
    import redis

    from shared.publish import BrokerUnavailable, make_redis

    client = make_redis(settings, read_timeout)
    try:
        client.ping()
        yield client
    except (redis.RedisError, BrokerUnavailable) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f"cannot reach Redis: {_one_line(first)}") from None
    finally:
        client.close()


@contextmanager
def _celery(settings: Settings) -> Iterator[Celery]:
    from shared.celery_app import make_celery

    app = make_celery(settings)
    try:
        yield app
    finally:
        app.close()


@contextmanager
def _progress(
    source: Source,
) -> Iterator[tuple[Callable[[Summary], None], Callable[[str], None]]]:
    """(on_line, say): a rich progress bar on stderr where stderr is a terminal, else nothing;
    `say` prints a line on stderr without tearing the bar."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield (lambda _summary: None), (lambda message: click.echo(message, err=True))
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn()]
    if source.total is not None:
        columns += [DownloadColumn(), TimeRemainingColumn()]
    columns += [TimeElapsedColumn(), TextColumn("{task.fields[counts]}")]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(os.path.basename(source.name), total=source.total, counts="")
        seen = 0

        def on_line(summary: Summary) -> None:
            nonlocal seen
            seen += 1
            if seen % 200:
                return  # the bar redraws ten times a second; most lines need not touch it
            progress.update(
                task,
                completed=source.position() or 0,
                counts=f"{summary.accepted} ok, {summary.rejected} rejected, "
                f"{summary.duplicates} dup",
            )

        yield on_line, lambda message: progress.console.print(Text(message))
        progress.update(task, completed=source.total or 0)


@main.command("replay")
@click.argument(
    "path",
    metavar="FILE|-",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@app_option
@click.option(
    "--queue",
    type=click.Choice(QUEUES),
    default=REPLAY,
    show_default=True,
    help="The queue to fill; `replay` keeps backfills away from live traffic.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="At most N calls a second.",
)
@click.option("--dry-run", is_flag=True, help="Check and count every line; enqueue nothing.")
@json_option
def replay_file(
    path: str, app_name: str, queue: str, rate: float | None, dry_run: bool, as_json: bool
) -> None:
    """Check NDJSON Segment calls and enqueue the good ones for the app.

    FILE (or - for stdin, gzip or not) holds one call or one {"batch": [...]} body a line. Each line
    is checked as the receiver checks a request; refused lines go to stderr with their number and
    reason. Calls keep their messageId, or get one derived from their content, so replaying the
    same input twice applies nothing twice.
    """
    from shared import replay
    from shared.publish import Publisher

    settings = _settings()
    app_id = work(lambda session: tenancy.get_app(session, app_name).id)

    def run(send: Callable[[dict[str, Any]], None] | None) -> Summary:
        try:
            source = replay.Source(path, _stdin())
        except OSError as exc:
            raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            with _progress(source) as (on_line, say):
                return replay.replay_lines(
                    source.lines(),
                    app_id=app_id,
                    settings=settings,
                    send=send,
                    rate=rate,
                    on_reject=lambda rejection: say(str(rejection)),
                    on_line=on_line,
                )
        except replay.ReplayError as exc:
            raise click.ClickException(_one_line(str(exc))) from None
        finally:
            source.close()

    if dry_run:
        summary = run(None)
    else:
        with _broker(settings) as client, _celery(settings) as celery:
            summary = run(replay.publisher_send(Publisher(celery, client), queue))
    if as_json:
        emit(summary.answer(), True)
        return
    details = {**summary.answer(), "messages": summary.messages, "queue": queue}
    emit(details, False, title="dry run: nothing enqueued" if dry_run else f"replayed to {queue}")


def _stdin() -> BinaryIO:
    return sys.stdin.buffer


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return dead_letters.parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


optional_app = click.option("--app", "app_name", metavar="NAME", help="Only this app's.")
reason_option = click.option("--reason", metavar="CODE", help="Only this reason code.")
older_option = click.option(
    "--older-than",
    metavar="DURATION",
    callback=_duration,
    help="Only those created longer ago than this (30m, 12h, 7d, 1d12h).",
)


def _app_id(session: Session, app_name: str | None) -> int | None:
    return None if app_name is None else tenancy.get_app(session, app_name).id


@main.group()
def deadletters() -> None:
    """Dead letters: batch calls the receiver refused, calls a worker could not apply.

    Listed, shown, replayed after a fix (keeping their messageId) and purged. A replayed letter
    stays, marked, and is listed again only if it fails again.
    """


@deadletters.command("list")
@optional_app
@reason_option
@older_option
@click.option(
    "--newer-than",
    metavar="DURATION",
    callback=_duration,
    help="Only those created at most this long ago.",
)
@click.option("--all", "include_replayed", is_flag=True, help="Include the replayed ones.")
@limit_option
@json_option
def deadletters_list(
    app_name: str | None,
    reason: str | None,
    older_than: timedelta | None,
    newer_than: timedelta | None,
    include_replayed: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """List dead letters, newest first: those not replayed yet unless --all."""

    def unit(session: Session) -> list[dict[str, Any]]:
        where = dead_letters.Filter(
            app_id=_app_id(session, app_name),
            reason=reason,
            older_than=older_than,
            newer_than=newer_than,
            include_replayed=include_replayed,
        )
        return dead_letters.list_letters(session, where, limit)

    letters = work(unit)
    if not as_json:
        # A call can be 32 KB: the table shows its start; `deadletters show ID` shows all of it.
        letters = [{**row, "call": _abbreviated(row["call"])} for row in letters]
    emit(letters, as_json, title="dead letters", empty="no dead letters")


def _abbreviated(value: Any, width: int = 60) -> str:
    text_ = orjson.dumps(value).decode()
    return text_ if len(text_) <= width else text_[: width - 1] + "…"


@deadletters.command("show")
@click.argument("letter_id", metavar="ID", type=int)
@json_option
def deadletters_show(letter_id: int, as_json: bool) -> None:
    """Show the dead letter ID with its raw call and everything kept about it."""
    letter = work(lambda session: dead_letters.show_letter(session, letter_id))
    emit(letter, as_json, title=f"dead letter {letter_id}")


@deadletters.command("replay")
@optional_app
@reason_option
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@json_option
def deadletters_replay(
    app_name: str | None, reason: str | None, ids: tuple[int, ...], as_json: bool
) -> None:
    """Enqueue dead letters again on the `replay` queue, after a fix.

    The letters IDs, else every one not replayed yet (of the app, of the reason). Each keeps its
    messageId, so what was applied before is not applied twice. A letter the receiver's checks
    still refuse, or of an unknown app, is skipped and stays listed.
    """
    from shared import replay
    from shared.publish import Publisher

    settings = _settings()
    with _broker(settings) as client, _celery(settings) as celery:
        publisher = Publisher(celery, client)

        def unit(session: Session) -> dict[str, Any]:
            return replay.replay_dead_letters(
                session,
                publisher,
                REPLAY,
                app_id=_app_id(session, app_name),
                ids=ids,
                reason=reason,
                size=min(settings.replay_batch_size, settings.max_batch_calls),
            )

        try:
            answer = work(unit)
        except replay.ReplayError as exc:
            raise click.ClickException(_one_line(str(exc))) from None
    emit(answer, as_json, title="dead letters replayed")


@deadletters.command("purge")
@optional_app
@reason_option
@older_option
@click.option("--replayed", "replayed_only", is_flag=True, help="Only those already replayed.")
@click.option("--yes", is_flag=True, help="Really delete them: there is no undo.")
@json_option
def deadletters_purge(
    app_name: str | None,
    reason: str | None,
    older_than: timedelta | None,
    replayed_only: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete dead letters for good: all of them, or the app's, reason's, age's. Needs --yes."""

    def unit(session: Session) -> dict[str, Any]:
        where = dead_letters.Filter(
            app_id=_app_id(session, app_name),
            reason=reason,
            older_than=older_than,
            include_replayed=True,
            replayed_only=replayed_only,
        )
        if not yes:
            count = dead_letters.count_letters(session, where)
            raise click.ClickException(
                f"this would delete {count} dead letters for good; add --yes to do it"
            )
        return {"deleted": dead_letters.purge(session, where)}

    emit(work(unit), as_json, title="dead letters purged")


@main.group()
def queue() -> None:
    """The Redis queues: how much waits, and a copy of it."""


@queue.command("stats")
@json_option
def queue_stats(as_json: bool) -> None:
    """Each queue's waiting and unacknowledged messages and lag, and the open dead letters.

    The lag is the age in seconds of the oldest waiting message. Without Postgres the dead-letter
    count is null (and a warning goes to stderr): the queues are what to look at in an outage.
    """
    from shared import queue_tools

    settings = _settings()
    with _broker(settings) as client:
        queues = queue_tools.queue_stats(client)
    dead: int | None
    try:
        dead = work(dead_letters.count_open)
    except (DBAPIError, psycopg.Error) as exc:
        reason = _database_error(exc) if isinstance(exc, DBAPIError) else str(exc)
        click.echo(f"Warning: dead letters not counted: {_one_line(reason)}", err=True)
        dead = None
    lags = [q["lag_seconds"] for q in queues.values() if q["lag_seconds"] is not None]
    answer = {"queues": queues, "dead_letters": dead, "lag_seconds": max(lags, default=None)}
    if as_json:
        emit(answer, True)
        return
    emit([{"queue": name, **stats} for name, stats in queues.items()], False, title="queues")
    click.echo(f"dead letters not replayed: {'unknown' if dead is None else dead}")


@queue.command("export")
@click.option(
    "--queue", "name", type=click.Choice(QUEUES), required=True, help="The queue to copy."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write here instead of stdout; a name ending in .gz is gzipped.",
)
@optional_app
@json_option
def queue_export(name: str, out: str | None, app_name: str | None, as_json: bool) -> None:
    """Write the messages waiting in a queue as NDJSON, leaving them on the queue.

    One {"batch": [...]} body a line, oldest first; each call carries its messageId and
    receivedAt, so `userdest replay` of the file, here or on another deployment, applies each
    call once and with its event time. Calls the receiver refused are dead letters, not exported.
    A queue holds every app's messages and `replay --app` puts a file under one app: export one
    app at a time with --app. The summary goes to stdout with --out, else to stderr.
    """
    import gzip

    from shared import queue_tools

    settings = _settings()
    app_id = None if app_name is None else work(lambda s: tenancy.get_app(s, app_name).id)
    # One LRANGE answers the whole queue: give it longer than a publish gets.
    with _broker(settings, read_timeout=max(60.0, settings.broker_timeout)) as client:
        target: Any
        if out is None:
            target = sys.stdout.buffer
        elif out.endswith(".gz"):
            target = gzip.open(out, "wb")  # noqa: SIM115 (closed below)
        else:
            target = open(out, "wb")  # noqa: SIM115 (closed below)
        try:
            summary = queue_tools.export_queue(
                client,
                name,
                target.write,
                max_bytes=settings.max_batch_bytes,
                max_calls=settings.max_batch_calls,
                app_id=app_id,
            )
        finally:
            if out is None:
                target.flush()
            else:
                target.close()
    for skipped in summary.skipped:
        click.echo(f"message {skipped['position']}: skipped: {skipped['error']}", err=True)
    if len(summary.app_ids) > 1:
        click.echo(
            f"Warning: the export holds the calls of {len(summary.app_ids)} apps and "
            "`userdest replay --app` puts a whole file under one; export each with --app NAME",
            err=True,
        )
    answer = {**summary.answer(), "out": out}
    if out is not None:
        emit(answer, as_json, title=f"exported {name}")
    elif as_json:
        click.echo(orjson.dumps(answer).decode(), err=True)
    else:
        click.echo(
            f"exported {summary.messages} messages ({summary.calls} calls) from {name}", err=True
        )
