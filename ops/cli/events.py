"""`userdest events`: the event names an app has seen."""

from __future__ import annotations

import click

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
from shared import readmodel


@click.group()
def events() -> None:
    """Event names: what track calls have recorded."""


@events.command("list")
@app_option
@json_option
def events_list(app_name: str, as_json: bool) -> None:
    """List the event names the app has seen, with their counts, most frequent first.

    Names turned away by the app's cap are not events; `attributes ignored` counts them.
    """
    emit(
        in_transaction(in_app(app_name, readmodel.event_list)),
        as_json,
        title=f"events of {app_name}",
        empty="no events",
    )


@events.group("definitions")
def events_definitions() -> None:
    """Event names as definitions: deleting one the app no longer wants."""


@events_definitions.command("delete")
@app_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Really delete it and its occurrences: there is no undo.")
@json_option
def events_definitions_delete(app_name: str, name: str, yes: bool, as_json: bool) -> None:
    """Delete the event name NAME with every occurrence of it and its attribute definitions. The
    occurrences go in batches of a short transaction each, then the name. Needs --yes.

    Traffic may record the name again later, as a new name (within the app's cap and budget). A
    name that is not there is already deleted (exit 0).
    """
    require_yes(yes, f"deleting the event {name!r} deletes every occurrence of it")
    with database() as engine:
        done = definitions.delete_event(engine, app_name, name)
    answer = {
        "app": app_name,
        "event": name,
        "origin": done.origin,
        "occurrences_deleted": done.occurrences_deleted,
        "attributes_deleted": done.attributes_deleted,
    }
    if done.origin is None:
        already_gone(answer, as_json, title="event", what=f"the event {name!r}")
        return
    emit({**answer, "already_gone": False}, as_json, title="event deleted")
