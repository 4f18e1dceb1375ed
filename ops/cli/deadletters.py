"""`userdest deadletters`: list, show, replay and purge dead letters."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, BinaryIO

import click
import orjson
from sqlalchemy.orm import Session

from ops import deadletters as dead_letters
from ops.cli.common import (
    app_id_of,
    broker,
    celery_app,
    emit,
    in_transaction,
    json_option,
    limit_option,
    load_settings,
    older_option,
    one_line,
    optional_app,
    parse_duration_option,
    private_file,
    reason_option,
    require_yes,
)
from shared.queues import REPLAY


@click.group()
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
    callback=parse_duration_option,
    help="Only those created at most this long ago.",
)
@click.option("--all", "include_replayed", is_flag=True, help="Include the replayed ones.")
@limit_option
@click.option(
    "--after", "after_id", type=int, metavar="ID", help="Continue after the letter ID (older ones)."
)
@json_option
def deadletters_list(
    app_name: str | None,
    reason: str | None,
    older_than: timedelta | None,
    newer_than: timedelta | None,
    include_replayed: bool,
    limit: int,
    after_id: int | None,
    as_json: bool,
) -> None:
    """List dead letters, newest first (a page: --limit, then --after the last id shown): those
    not replayed yet unless --all."""

    def unit(session: Session) -> list[dict[str, Any]]:
        where = dead_letters.Filter(
            app_id=app_id_of(session, app_name),
            reason=reason,
            older_than=older_than,
            newer_than=newer_than,
            include_replayed=include_replayed,
        )
        return dead_letters.list_letters(session, where, limit, after_id)

    letters = in_transaction(unit)
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
    letter = in_transaction(lambda session: dead_letters.show_letter(session, letter_id))
    emit(letter, as_json, title=f"dead letter {letter_id}")


@deadletters.command("export")
@optional_app
@reason_option
@older_option
@click.option("--all", "include_replayed", is_flag=True, help="Include the replayed ones.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file, not stdout.")
def deadletters_export(
    app_name: str | None,
    reason: str | None,
    older_than: timedelta | None,
    include_replayed: bool,
    out: str | None,
) -> None:
    """Write dead letters as NDJSON, newest first, one letter a line as `list --json` shows it
    plus its message_id: to fix the calls (an editor, jq) and give the file to `deadletters
    replay --from`. Open letters only unless --all."""

    def unit(session: Session) -> int:
        where = dead_letters.Filter(
            app_id=app_id_of(session, app_name),
            reason=reason,
            older_than=older_than,
            include_replayed=include_replayed,
        )
        written = 0
        handle = private_file(out) if out else click.open_file("-", "wb")
        with handle:
            for row in dead_letters.export_letters(session, where):
                handle.write(orjson.dumps(row) + b"\n")
                written += 1
        return written

    written = in_transaction(unit)
    click.echo(f"exported {written} dead letters" + (f" to {out}" if out else ""), err=True)


@deadletters.command("replay")
@optional_app
@reason_option
@click.option(
    "--from",
    "edited",
    type=click.File("rb"),
    metavar="FILE|-",
    help="Replay the letters of this file (a `deadletters export`, fixed) with their calls as "
    "the file has them; - reads stdin.",
)
@click.option(
    "--vouch",
    is_flag=True,
    help="Also replay letters whose message was not signed with ENVELOPE_SECRET "
    "(unsigned_envelope, bad_envelope_mac): you vouch for their calls, which are signed anew.",
)
@click.argument("ids", metavar="[ID]...", nargs=-1, type=int)
@json_option
def deadletters_replay(
    app_name: str | None,
    reason: str | None,
    edited: BinaryIO | None,
    vouch: bool,
    ids: tuple[int, ...],
    as_json: bool,
) -> None:
    """Enqueue dead letters again on the `replay` queue, after a fix.

    The letters IDs, else every one not replayed yet (of the app, of the reason). With --from,
    the letters of an edited `deadletters export` (each line's `id` and `call`): each letter takes
    its fixed call (the one received stays in its meta as original_call) and is replayed. Each
    keeps its messageId, so what was applied before is not applied twice. A letter the receiver's
    checks still refuse, or of an unknown app, is skipped and stays listed; so is one whose
    message was not signed with ENVELOPE_SECRET (it may be forged), unless --vouch.

    For example: userdest deadletters export --reason missing_event | jq -c '.call.event =
    "Unknown"' | userdest deadletters replay --from -
    """
    from ops import replay
    from shared.publish import HighWater, Publisher

    edits: dict[int, Any] = {}
    if edited is not None:
        if ids:
            raise click.UsageError("give either IDs or --from, not both")
        try:
            edits = dead_letters.read_edits(edited)
        except dead_letters.EditError as exc:
            raise click.ClickException(one_line(str(exc))) from None
        if not edits:
            raise click.ClickException("the --from file holds no dead letter")
        ids = tuple(edits)
    settings = load_settings()
    with broker(settings) as client, celery_app(settings) as celery:
        publisher = Publisher(celery, client, settings)
        high_water = HighWater(client, settings.redis_high_water)

        def unit(session: Session) -> dict[str, Any]:
            app_id = app_id_of(session, app_name)
            dead_letters.edit_letters(session, edits, app_id)
            return replay.replay_dead_letters(
                session,
                publisher,
                REPLAY,
                app_id=app_id,
                ids=ids,
                reason=reason,
                size=min(settings.replay_batch_size, settings.max_batch_calls),
                high_water=high_water,
                vouch=vouch,
                on_wait=lambda: click.echo(
                    "Redis is past REDIS_HIGH_WATER: waiting for the workers to make room",
                    err=True,
                ),
            )

        try:
            answer = in_transaction(unit)
        except replay.ReplayError as exc:
            raise click.ClickException(one_line(str(exc))) from None
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
            app_id=app_id_of(session, app_name),
            reason=reason,
            older_than=older_than,
            include_replayed=True,
            replayed_only=replayed_only,
        )
        if not yes:
            count = dead_letters.count_letters(session, where)
            require_yes(False, f"this would delete {count} dead letters for good")
        return {"deleted": dead_letters.purge(session, where)}

    emit(in_transaction(unit), as_json, title="dead letters purged")
