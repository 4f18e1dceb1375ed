"""`userdest replay`: NDJSON files of Segment calls back onto a queue."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

import click
from rich.console import Console
from rich.text import Text

from ops.cli.common import (
    CONNECT_TIMEOUT,
    EXIT_PARTIAL,
    app_id_of,
    app_option,
    broker,
    celery_app,
    emit,
    in_transaction,
    json_option,
    limit_option,
    load_settings,
    one_line,
    optional_app,
    printable,
)
from shared import tenancy
from shared.db import make_engine
from shared.queues import QUEUES, REPLAY

if TYPE_CHECKING:
    from ops.replay import Source, Summary


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


FILE_COMMAND = "file"


class _ReplayGroup(click.Group):
    """`userdest replay FILE ...` replays a file (the `file` command, implied); `userdest replay
    status RUN` follows a run and `userdest replay list` lists them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = [FILE_COMMAND, *args]
        return super().parse_args(ctx, args)


class _GroupsContext(click.Context):
    """The implied `file` command's context: its usage line and error hints name the group
    (`userdest replay [OPTIONS] FILE|-`), as the operator typed it, not `replay file`."""

    @property
    def command_path(self) -> str:
        return self.parent.command_path if self.parent else super().command_path


class _ImpliedCommand(click.Command):
    context_class = _GroupsContext


@click.group("replay", cls=_ReplayGroup)
def replay_group() -> None:
    """Replay NDJSON files of Segment calls (`userdest replay FILE --app NAME`), list the runs
    (`userdest replay list`) and follow one (`userdest replay status RUN`)."""


@replay_group.command(
    FILE_COMMAND,
    cls=_ImpliedCommand,
    epilog="Runs: `userdest replay list` lists them, newest first; `userdest replay status RUN` "
    "shows how far the workers got with one.",
)
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
@click.option(
    "--any-app",
    is_flag=True,
    help="Replay lines `queue export` wrote for another app too, under this one.",
)
@json_option
def replay_file(
    path: str,
    app_name: str,
    queue: str,
    rate: float | None,
    dry_run: bool,
    any_app: bool,
    as_json: bool,
) -> None:
    """Check NDJSON Segment calls and enqueue the good ones for the app.

    FILE (or - for stdin, gzip or not) holds one call or one {"batch": [...]} body a line. Each line
    is checked as the receiver checks a request; refused lines go to stderr with their number and
    reason. Calls keep their messageId, or get one derived from their content, so replaying the
    same input twice applies nothing twice. A line `queue export` wrote for another app is
    refused (`other_app`) unless --any-app.
    """
    from ops import replay
    from shared.publish import HighWater, Publisher

    settings = load_settings()
    app_id = in_transaction(lambda session: tenancy.get_app(session, app_name).id)

    def run(send: Callable[[dict[str, Any]], None] | None) -> Summary:
        try:
            source = replay.Source(path, _stdin(), settings.max_batch_bytes)
        except OSError as exc:
            raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            with _progress(source) as (on_line, say):
                return replay.replay_lines(
                    source.lines(),
                    app_id=app_id,
                    settings=settings,
                    send=send,
                    app=None if any_app else app_name,
                    rate=rate,
                    on_reject=lambda rejection: say(printable(str(rejection))),
                    on_line=on_line,
                )
        except replay.ReplayError as exc:
            raise click.ClickException(one_line(str(exc))) from None
        finally:
            source.close()

    run_id = None
    if dry_run:
        summary = run(None)
    else:
        from ops.replayruns import RunRecorder

        engine = make_engine(settings, connect_args={"connect_timeout": CONNECT_TIMEOUT})
        try:
            with broker(settings) as client, celery_app(settings) as celery:
                recorder = RunRecorder(engine, app_id, queue, path)
                run_id = recorder.id
                high_water = HighWater(client, settings.redis_high_water)
                send = replay.publisher_send(
                    Publisher(celery, client, settings), queue, high_water, _waiting
                )
                summary = run(recorder.recording(send))
                recorder.finish(summary)
        finally:
            engine.dispose()
    if as_json:
        emit({**summary.answer(), "run": run_id}, True)
    else:
        details = {**summary.answer(), "messages": summary.messages, "queue": queue, "run": run_id}
        title = "dry run: nothing enqueued" if dry_run else f"replayed to {queue}"
        emit(details, False, title=title)
    if summary.rejected:
        # The good lines are enqueued; the exit status tells a script that some were not.
        raise SystemExit(EXIT_PARTIAL)


@replay_group.command("status")
@click.argument("run_id", metavar="RUN")
@json_option
def replay_status(run_id: str, as_json: bool) -> None:
    """How far the workers got with the replay run RUN: its calls applied, already applied before
    it (duplicates, skipped), dead-lettered, and still waiting."""
    from ops.replayruns import run_status

    emit(
        in_transaction(lambda session: run_status(session, run_id)),
        as_json,
        title=f"replay {run_id}",
    )


@replay_group.command("list")
@optional_app
@limit_option
@click.option("--after", metavar="RUN", help="Continue after the run RUN (the last one shown).")
@json_option
def replay_list(app_name: str | None, limit: int, after: str | None, as_json: bool) -> None:
    """List replay runs, newest first: the file, the queue, the lines read, accepted and refused.
    `userdest replay status RUN` shows how far the workers got with one."""
    from ops.replayruns import list_runs

    runs = in_transaction(
        lambda session: list_runs(session, app_id_of(session, app_name), limit, after)
    )
    emit(runs, as_json, title="replay runs", empty="no replay runs")


def _waiting() -> None:
    click.echo("Redis is past REDIS_HIGH_WATER: waiting for the workers to make room", err=True)


def _stdin() -> BinaryIO:
    return sys.stdin.buffer
