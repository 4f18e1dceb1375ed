"""`userdest attributes`: attribute definitions."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import func, null, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ops import definitions
from ops.cli.common import (
    already_gone,
    app_option,
    database,
    emit,
    in_app,
    in_transaction,
    json_option,
    require_yes,
)
from shared import readmodel, tenancy
from shared.attributes import NAME_MAX, SCOPES, normalize_type, valid_name
from shared.models import App, AttributeDefinition, EventDefinition


@click.group()
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
        if exists is None and (events or 0) >= app.caps.event_names:
            raise click.ClickException(
                f"{app.name!r} already has {app.caps.event_names} events, its cap"
            )
    cap = app.caps.for_scope(scope)
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
    """Define ATTR as TYPE: string, integer, float, number, boolean, date, datetime, fixed, json.

    number keeps integral values integral (123, not 123.0); float stores every value as a float.

    Redefining an attribute, whoever defined it, changes its type and makes it the operator's.
    Values already stored stay as they are; later calls are coerced to the new type.
    """
    if not valid_name(attr) or not attr.strip():
        raise click.ClickException(f"an attribute name is 1 to {NAME_MAX} characters")
    kind = _normalize_type(type_)
    parsed = _parse_choices(choices, kind, multiple)
    event_name = _check_event(scope, event)

    def unit(session: Session) -> dict[str, Any]:
        app = tenancy.get_app(session, app_name)
        return define_attribute(session, app, scope, event_name, attr, kind, parsed, multiple)

    emit(in_transaction(unit), as_json, title="attribute defined")


@attributes.command("delete")
@app_option
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default="user",
    show_default=True,
    help="Whose attribute it is.",
)
@click.option("--event", metavar="EVENT", help="The event name (event scope only).")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Really delete it and its values: there is no undo.")
@json_option
def attributes_delete(
    app_name: str, scope: str, event: str | None, name: str, yes: bool, as_json: bool
) -> None:
    """Delete the attribute NAME and its values: from every profile (user scope) or company
    (company scope), in batches of a short transaction each. Needs --yes.

    An event's recorded properties stay as they were sent. Traffic may define the name again
    later, as a new name (within the app's cap and budget). An attribute that is not there is
    already deleted (exit 0), and its values are swept all the same: run the command again to
    finish one that was interrupted.
    """
    event_name = _check_event(scope, event)
    where = f"{scope} attribute {name!r}" + (f" of event {event_name!r}" if event_name else "")
    require_yes(yes, f"deleting the {where} removes its values from every profile or company")
    with database() as engine:
        done = definitions.delete_attribute(engine, app_name, scope, event_name, name)
    answer = {
        "app": app_name,
        "scope": scope,
        "event": event_name or None,
        "name": name,
        "origin": done.origin,
        "values_removed": done.values_removed,
    }
    if done.origin is None:
        already_gone(answer, as_json, title="attribute", what=f"the {where}")
        return
    emit({**answer, "already_gone": False}, as_json, title="attribute deleted")


@attributes.command("list")
@app_option
@json_option
def attributes_list(app_name: str, as_json: bool) -> None:
    """List the app's attribute definitions, operator's and those traffic made."""
    emit(
        in_transaction(in_app(app_name, readmodel.attribute_list)),
        as_json,
        title=f"attributes of {app_name}",
        empty="no attributes",
    )


@attributes.command("ignored")
@app_option
@json_option
def attributes_ignored(app_name: str, as_json: bool) -> None:
    """Values the workers ignored or stored cut, by attribute and reason, most frequent first.

    uncoercible: a value its attribute's type could not take (the stored value stayed);
    truncated: a string stored cut to 255 characters; json_too_long: an object or array too long
    for a string attribute, not stored (define the attribute as json to keep it);
    unknown_choices: a list stored without its members that are not choices; over_cap: a
    new attribute or event name past the app's cap; over_budget: a new name past the app's budget
    of new names for the hour; bad_name: a name over 64 characters.
    Senders are never told, so this is where such losses show.
    """
    emit(
        in_transaction(in_app(app_name, readmodel.ignored_list)),
        as_json,
        title=f"values ignored in {app_name}",
        empty="nothing ignored or cut",
    )
