"""`userdest users`: profiles and their history, a person's export and erasure."""

from __future__ import annotations

from typing import Any

import click
import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from ops.cli.common import (
    after_option,
    app_option,
    broker,
    emit,
    in_app,
    in_transaction,
    json_option,
    limit_option,
    load_settings,
    private_file,
)
from shared import erasure, readmodel, search, tenancy
from shared.envelope import EnvelopeKeys
from shared.erasure import Suppression
from shared.ids import lock_key


@click.group()
def users() -> None:
    """User profiles, looked up by userId or anonymousId."""


@users.command("show")
@app_option
@click.argument("id")
@json_option
def users_show(app_name: str, id: str, as_json: bool) -> None:
    """Show the profile that ID (a userId or an anonymousId) names."""
    profile = in_transaction(
        in_app(app_name, lambda s, app_id: readmodel.user_profile(s, app_id, id))
    )
    emit(profile, as_json, title=f"user {id}")


@users.command("find")
@app_option
@click.option("--email", metavar="ADDRESS", help="Profiles with this email address (any case).")
@click.option("--phone", metavar="NUMBER", help="Profiles with this phone number.")
@limit_option
@after_option
@json_option
def users_find(
    app_name: str,
    email: str | None,
    phone: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List the profiles with an email address or a phone number (several people may share one)."""
    if (email is None) == (phone is None):
        raise click.UsageError("give one of --email or --phone")
    field, value = ("email", email) if email is not None else ("phone", phone or "")
    found = in_transaction(
        in_app(
            app_name,
            lambda s, app_id: readmodel.users_by_contact(s, app_id, field, value, limit, after),
        )
    )
    _emit_page(found, limit, as_json, title=f"users with {field} {value}", empty="nobody")


@users.command("list")
@app_option
@click.option(
    "--where",
    "wheres",
    multiple=True,
    metavar="COMPARISON",
    help="field=value, !=, <, >, ~ (contains) or field? (set); fields: standard ones, "
    "first_seen, last_seen, updated_at, page_views, company, attributes.NAME. Repeat to combine.",
)
@click.option("--any", "any_", is_flag=True, help="Match any --where instead of all of them.")
@limit_option
@after_option
@json_option
def users_list(
    app_name: str,
    wheres: tuple[str, ...],
    any_: bool,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List the app's profiles, those matching --where only, a page at a time."""
    where = {"or" if any_ else "and": [search.parse_where(w) for w in wheres]} if wheres else None
    found = in_transaction(
        in_app(app_name, lambda s, app_id: readmodel.user_list(s, app_id, where, limit, after))
    )
    _emit_page(found, limit, as_json, title="users", empty="nobody")


@users.command("events")
@app_option
@click.argument("id")
@limit_option
@after_option
@json_option
def users_events(app_name: str, id: str, limit: int, after: str | None, as_json: bool) -> None:
    """List the events the profile ID tracked, newest first, a page at a time."""
    found = in_transaction(
        in_app(app_name, lambda s, app_id: readmodel.user_events(s, app_id, id, limit, after))
    )
    _emit_page(found, limit, as_json, title=f"events of {id}", empty="no events")


@users.command("pageviews")
@app_option
@click.argument("id")
@limit_option
@after_option
@json_option
def users_pageviews(app_name: str, id: str, limit: int, after: str | None, as_json: bool) -> None:
    """List the page and screen views of the profile ID, newest first, a page at a time."""
    found = in_transaction(
        in_app(app_name, lambda s, app_id: readmodel.user_pageviews(s, app_id, id, limit, after))
    )
    _emit_page(found, limit, as_json, title=f"page views of {id}", empty="no page views")


def _emit_page(
    rows: list[dict[str, Any]], limit: int, as_json: bool, title: str, empty: str
) -> None:
    """A page of rows; a person reading a table gets the next page's option instead of cursors."""
    if as_json:
        emit(rows, as_json)
        return
    emit(
        [{k: v for k, v in r.items() if k != "cursor"} for r in rows],
        False,
        title=title,
        empty=empty,
    )
    if len(rows) == limit:
        click.echo(f"more: --after {rows[-1]['cursor']}", err=True)


@users.command("export")
@app_option
@click.argument("id")
@click.option("--out", type=click.Path(dir_okay=False), help="Write to this file, not stdout.")
def users_export(app_name: str, id: str, out: str | None) -> None:
    """Write everything held about the person ID as one JSON document (an access request): what
    Postgres holds and their calls still waiting in Redis."""
    from ops.queues import calls_naming  # Redis only for the commands that need it

    app_id, (found, person) = in_transaction(
        in_app(app_name, lambda s, app_id: (app_id, readmodel.user_export(s, app_id, id, False)))
    )
    with broker(load_settings()) as client:
        found["queued"] = calls_naming(client, app_id, person.ids | person.contacts)
    if not person.found and not found["queued"]:
        raise readmodel.NotFound(f"no one with userId, anonymousId or email {id!r}")
    data = orjson.dumps(found, option=orjson.OPT_INDENT_2)
    if out is None:
        click.echo(data.decode())
    else:
        with private_file(out) as handle:
            handle.write(data)


@users.command("delete")
@app_option
@click.argument("id")
@click.option("--yes", is_flag=True, help="Really erase: there is no undo.")
@click.option(
    "--keep-queued",
    is_flag=True,
    help="Leave their calls waiting in Redis (workers skip them) instead of removing them now.",
)
@click.option(
    "--ids-only",
    is_flag=True,
    help="Suppress the person's ids only, not their email and phone (they may sign up again).",
)
@click.option(
    "--rewrite-aof",
    is_flag=True,
    help="Then have Redis rewrite its append-only file, so it no longer holds removed calls.",
)
@json_option
def users_delete(
    app_name: str,
    id: str,
    yes: bool,
    keep_queued: bool,
    ids_only: bool,
    rewrite_aof: bool,
    as_json: bool,
) -> None:
    """Erase the person ID names (a userId, anonymousId or email): profiles, ids, events, page
    views, company links, dead letters and the traces in shared rows; later calls naming any of
    their ids, their email or phone are skipped. Their calls waiting in Redis are removed."""
    from ops.queues import calls_naming, drop_person, rewrite_append_only_file  # Redis: here only

    if not yes:
        raise click.UsageError("erasing a person cannot be undone: add --yes")
    settings = load_settings()
    suppression = Suppression(settings.suppression_secret)
    found: dict[str, Any] = {}

    def unit(session: Session) -> dict[str, object]:
        app_id = tenancy.get_app(session, app_name).id
        person = readmodel.person_of(session, app_id, id, must_exist=False)
        if not person.found:
            # Someone whose calls only wait in a queue yet: erased all the same (suppressed).
            with broker(settings) as client:
                if not calls_naming(client, app_id, person.ids | person.contacts):
                    raise readmodel.NotFound(f"no one with userId, anonymousId or email {id!r}")
        # The workers' locks on these ids: no message applies to the person meanwhile; then look
        # again, now that nothing can add to what was found.
        locks = sorted({lock_key(app_id, kind, value) for kind, value in person.ids})
        session.execute(
            text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:l AS bigint[])) AS k"),
            {"l": locks},
        )
        person = readmodel.person_of(session, app_id, id, must_exist=False)
        erased = erasure.erase(session.connection(), person, suppression, contacts=not ids_only)
        # Their queued calls go by every id and contact, suppressed or not.
        found.update(app_id=app_id, keys=person.ids | person.contacts)
        return {"erased": id, "rows": erased.rows, "suppressed": len(erased.ids)}

    answer = in_transaction(unit)
    if not keep_queued or rewrite_aof:
        with broker(settings) as client:
            if not keep_queued:
                answer["queued"] = drop_person(
                    client, found["app_id"], found["keys"], EnvelopeKeys.of(settings)
                )
            if rewrite_aof:
                answer["aof_rewrite"] = rewrite_append_only_file(client)
    emit(answer, as_json, title="erased")
