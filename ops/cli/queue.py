"""`userdest queue`: queue depths and exports."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any, BinaryIO

import click
import orjson
import psycopg
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from ops import deadletters as dead_letters
from ops.cli.common import (
    broker,
    database_error,
    emit,
    in_transaction,
    json_option,
    load_settings,
    one_line,
    optional_app,
    parse_duration_option,
    printable,
    private_file,
)
from shared import tenancy
from shared.envelope import EnvelopeKeys
from shared.models import App
from shared.queues import QUEUES


@click.group()
def queue() -> None:
    """The Redis queues: how much waits, and a copy of it."""


@queue.command("stats")
@json_option
def queue_stats(as_json: bool) -> None:
    """Each queue's waiting and unacknowledged messages and lag, and the open dead letters.

    The lag is the age in seconds of the oldest waiting message. Without Postgres the dead-letter
    count is null (and a warning goes to stderr): the queues are what to look at in an outage.
    """
    from ops import queues

    settings = load_settings()
    with broker(settings) as client:
        stats_by_queue = queues.queue_stats(client)
    dead: int | None
    try:
        dead = in_transaction(dead_letters.count_open)
    except (DBAPIError, psycopg.Error) as exc:
        reason = database_error(exc) if isinstance(exc, DBAPIError) else str(exc)
        click.echo(f"Warning: dead letters not counted: {one_line(reason)}", err=True)
        dead = None
    lags = [q["lag_seconds"] for q in stats_by_queue.values() if q["lag_seconds"] is not None]
    answer = {
        "queues": stats_by_queue,
        "dead_letters": dead,
        "lag_seconds": max(lags, default=None),
    }
    if as_json:
        emit(answer, True)
        return
    emit(
        [{"queue": name, **stats} for name, stats in stats_by_queue.items()], False, title="queues"
    )
    click.echo(f"dead letters not replayed: {'unknown' if dead is None else dead}")


@queue.command("requeue")
@click.option(
    "--older-than",
    metavar="DURATION",
    required=True,
    callback=parse_duration_option,
    help="Only messages delivered longer ago than this (10m, 1h): longer than any message takes.",
)
@json_option
def queue_requeue(older_than: timedelta, as_json: bool) -> None:
    """Put unacknowledged messages delivered longer ago than --older-than back on their queue.

    A worker killed outright leaves the messages it held unacknowledged, and Redis hands them to
    another worker only after VISIBILITY_TIMEOUT (15 minutes by default). Once that worker is known to
    be gone, this gives them back now, first in line. A message still held by a live worker is
    applied twice, which changes nothing (each messageId is applied once).
    """
    from ops import queues
    from shared.redisconn import NotReplicated, replicated

    settings = load_settings()
    with broker(settings) as client:
        moved = queues.requeue_unacked(client, older_than.total_seconds())
        try:
            replicated(client, settings)
        except NotReplicated as exc:
            # Nothing is lost either way: a message not yet moved on a replica is still in its
            # `unacked` there, and comes back after VISIBILITY_TIMEOUT or a second requeue.
            raise click.ClickException(
                f"requeued {sum(moved.values())} messages, but {exc}: run it again if Redis "
                "fails over now"
            ) from None
    answer = {"requeued": moved, "older_than_seconds": older_than.total_seconds()}
    if as_json:
        emit(answer, True)
        return
    emit([{"queue": q, "requeued": n} for q, n in moved.items()], False, title="requeued")


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
    call once and with its event time. Calls the receiver refused travel in the same messages
    (a worker stores them as dead letters): they are exported too, last in their line and as
    sent, and a replay names them again. A message not signed with ENVELOPE_SECRET is skipped
    (a worker keeps it as a dead letter), so that a replay never signs what nobody vouched for.
    A queue holds every app's messages and `replay --app` puts a file under one app: each line
    names its app (`userdestApp`) and a replay refuses the lines of another; export one app at a
    time with --app. The summary goes to stdout with --out, else to stderr.
    """
    import gzip

    from ops import queues

    settings = load_settings()
    app_id = None if app_name is None else in_transaction(lambda s: tenancy.get_app(s, app_name).id)
    # Each line names its app, so that `replay --app` can refuse the lines of another.
    names: dict[int, str] = in_transaction(
        lambda s: {row.id: row.name for row in s.execute(select(App.id, App.name))}
    )
    # One LRANGE answers the whole queue: give it longer than a publish gets.
    with broker(settings, read_timeout=max(60.0, settings.broker_timeout)) as client:
        target: Any
        raw: BinaryIO | None = None
        if out is None:
            target = sys.stdout.buffer
        else:
            target = raw = private_file(out)
            if out.endswith(".gz"):
                target = gzip.GzipFile(fileobj=raw, mode="wb", filename="")
        try:
            summary = queues.export_queue(
                client,
                name,
                target.write,
                max_bytes=settings.max_batch_bytes,
                max_calls=settings.max_batch_calls,
                keys=EnvelopeKeys.of(settings),
                app_id=app_id,
                app_name=names.get,
            )
        finally:
            if out is None:
                target.flush()
            else:
                target.close()
                if raw is not None:
                    raw.close()  # a GzipFile leaves the file it writes open
    for skipped in summary.skipped:
        click.echo(
            printable(f"message {skipped['position']}: skipped: {skipped['error']}"), err=True
        )
    if len(summary.app_ids) > 1:
        click.echo(
            f"Warning: the export holds the calls of {len(summary.app_ids)} apps; "
            "`userdest replay --app NAME` replays only NAME's lines; export each with --app NAME",
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
