"""What every command group shares: settings, one unit of work, one way to print, the options."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import click
import orjson
import psycopg
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from ops import deadletters as dead_letters
from shared import tenancy
from shared.db import make_engine, make_sessionmaker
from shared.readmodel import DEFAULT_LIMIT
from shared.settings import Settings

if TYPE_CHECKING:
    import redis
    from celery import Celery


T = TypeVar("T")

CONNECT_TIMEOUT = 10
"""Seconds to wait for Postgres before telling the operator it cannot be reached."""


EXIT_OK = 0
"""Done, or nothing was left to do: deleting what is already gone is done."""
EXIT_ERROR = 1
"""Not done: an unknown name, a refused value, a store that cannot be reached, or an answer the
command cannot know (`messages show` without Redis)."""
EXIT_USAGE = 2
"""The command line: a missing or bad option or argument, and a destructive command without
--yes (what Click exits with for its own usage errors)."""
EXIT_PARTIAL = 3
"""Done in part: `replay` enqueued the good lines and refused some."""


def require_yes(yes: bool, consequence: str) -> None:
    """A destructive command's confirmation. Without --yes nothing is done, and the command ends as
    a command-line mistake (EXIT_USAGE) that says what it would have done."""
    if not yes:
        raise click.UsageError(
            f"{consequence}: add --yes to do it", ctx=click.get_current_context(silent=True)
        )


def already_gone(answer: dict[str, Any], as_json: bool, *, title: str, what: str) -> None:
    """A delete whose target is not there: it is done already (EXIT_OK), said on stderr, and the
    answer carries `"already_gone": true`, so a script that deletes can safely run twice."""
    click.echo(f"{printable(what)} is already gone: nothing to delete", err=True)
    emit({**answer, "already_gone": True}, as_json, title=title)


def load_settings() -> Settings:
    return Settings.from_env().verify()


def in_transaction(unit: Callable[[Session], T]) -> T:
    """Run `unit` in one transaction against DATABASE_URL, commit it, and return its answer."""
    engine = make_engine(load_settings(), connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        with make_sessionmaker(engine).begin() as session:
            return unit(session)
    finally:
        engine.dispose()


@contextmanager
def database() -> Iterator[Engine]:
    """An engine on DATABASE_URL for a command that works in several transactions of its own
    (a sweep in bounded batches), disposed of when it is done."""
    engine = make_engine(load_settings(), connect_args={"connect_timeout": CONNECT_TIMEOUT})
    try:
        yield engine
    finally:
        engine.dispose()


def in_app(app_name: str, query: Callable[[Session, int], T]) -> Callable[[Session], T]:
    """A unit of work for `in_transaction()`: `query(session, app_id)` for the app named `app_name`."""
    return lambda session: query(session, tenancy.get_app(session, app_name).id)


def emit(data: Any, as_json: bool, *, title: str | None = None, empty: str = "none") -> None:
    """Print `data` as indented JSON, else as a table (a list) or key/value panels (a dict)."""
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    if not console.is_terminal:
        # Piped or captured: plain columns, one row a line, for grep, awk and cut.
        for line in plain(data, title, empty):
            click.echo(line)
        return
    if isinstance(data, list):
        console.print(_table(data, title) if data else Text(empty))
        return
    for renderable in _panels(data, title):
        console.print(renderable)


_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]"
)
"""What a terminal acts on instead of showing: C0 and C1 controls (ESC starts OSC 52 clipboard
writes, OSC 8 links that show one address and open another, screen clears), and the invisible
format characters that reorder or hide text (bidi overrides, zero-width ones)."""


def printable(text: str) -> str:
    """`text` with every control or invisible format character shown as its escape (`\\x1b`),
    for any human-readable output of a value a sender chose (terminal escapes)."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _text(value: Any) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return printable(", ".join(value))
    if isinstance(value, dict | list):
        # orjson escapes controls in strings; the format characters it leaves as they are.
        return printable(orjson.dumps(value).decode())
    return printable(str(value))


def _cell(value: Any) -> Text:
    # Text, not markup: a value such as "[object Object]" must print as it is.
    return Text(_text(value), style="dim" if value is None or value == [] else "")


def _columns(rows: list[list[str]]) -> Iterator[str]:
    """Rows as lines of left-aligned columns two spaces apart; nothing folded or cut."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()


def plain(data: Any, title: str | None = None, empty: str = "none") -> Iterator[str]:
    """`emit`'s tables without a terminal: no box drawing, one row a line, each value whole (a
    line break inside a value is shown as a space)."""

    def flat(value: Any) -> str:
        return " ".join(_text(value).splitlines())

    if isinstance(data, list) and not data:
        yield empty
        return
    if title:
        yield title
    if isinstance(data, list):
        yield from _columns([list(data[0])] + [[flat(v) for v in row.values()] for row in data])
        return
    scalars = [[key, flat(value)] for key, value in data.items() if not _nested(value)]
    if scalars:
        yield from _columns(scalars)
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield ""
            yield from plain([{"name": k, "value": v} for k, v in value.items()], key)
        elif _nested(value):
            yield ""
            yield from plain(value, key)


def _nested(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value)) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _table(rows: list[dict[str, Any]], title: str | None) -> Table:
    table = Table(title=title and printable(title), title_justify="left")
    for column in rows[0]:
        table.add_column(printable(column), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(value) for value in row.values()))
    return table


def _panels(data: dict[str, Any], title: str | None) -> Iterator[Table]:
    """Scalars in one key/value table; each nested object or list of objects in its own table."""
    main = Table(title=title and printable(title), title_justify="left", show_header=False)
    main.add_column(style="bold")
    main.add_column(overflow="fold")
    nested: list[Table] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            inner = Table(title=printable(key), title_justify="left", show_header=False)
            inner.add_column(style="bold")
            inner.add_column(overflow="fold")
            for name, item in value.items():
                inner.add_row(Text(printable(name)), _cell(item))
            nested.append(inner)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            nested.append(_table(value, key))
        else:
            main.add_row(Text(printable(key)), _cell(value))
    yield main
    yield from nested


def one_line(message: str) -> str:
    """A message on one line, safe for a terminal (database errors quote the values they met)."""
    return printable(" ".join(message.split()))


def database_error(exc: DBAPIError) -> str:
    first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__
    if isinstance(exc.orig, psycopg.errors.UndefinedTable):
        return f"the database is not migrated ({first}); run `userdest db upgrade`"
    if "does not exist" in first and "database" in first:
        return f"{first}; run `userdest db upgrade` to create it"
    if isinstance(exc, OperationalError):
        return f"cannot reach the database: {first}"
    return f"database error: {first}"


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Answer in JSON instead of tables."
)
app_option = click.option("--app", "app_name", required=True, metavar="NAME", help="The app.")


limit_option = click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIMIT,
    show_default=True,
    metavar="N",
    help="At most N rows: every list is a page.",
)
after_option = click.option(
    "--after",
    metavar="CURSOR",
    help="Continue after the row whose `cursor` this is (the last row of the previous page).",
)


#
# These need Redis, Celery's message format and (for replays) the receiver's checks; they import
# them when they run, so the other commands start without loading Flask, Celery or redis-py.


@contextmanager
def broker(settings: Settings, read_timeout: float | None = None) -> Iterator[redis.Redis]:
    """A Redis client for REDIS_URL that answers now; any Redis failure becomes one line."""
    import redis

    from shared.publish import BrokerUnavailable
    from shared.redisconn import make_redis

    client = make_redis(settings, read_timeout)
    try:
        client.ping()
        yield client
    except (redis.RedisError, BrokerUnavailable) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f"cannot reach Redis: {one_line(first)}") from None
    finally:
        client.close()


@contextmanager
def celery_app(settings: Settings) -> Iterator[Celery]:
    """The Celery app that publishes replays; Celery is imported only by commands that need it."""
    from shared.celery_app import make_celery

    app = make_celery(settings)
    try:
        yield app
    finally:
        app.close()


def parse_duration_option(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> timedelta | None:
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
    callback=parse_duration_option,
    help="Only those created longer ago than this (30m, 12h, 7d, 1d12h).",
)


def app_id_of(session: Session, app_name: str | None) -> int | None:
    return None if app_name is None else tenancy.get_app(session, app_name).id


def private_file(path: str) -> BinaryIO:
    """`path` opened for writing by its owner alone (0600: an export holds trait values and
    emails), never through a symbolic link (one planted at the name would send them elsewhere).
    Every command's --out file goes through here."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise click.ClickException(
                f"{path} is a symbolic link: not writing through it"
            ) from None
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_TRUNC
    return os.fdopen(fd, "wb")
