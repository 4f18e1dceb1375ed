"""`userdest events`: the event names an app has seen."""

from __future__ import annotations

import click

from ops.cli.common import app_option, emit, in_app, in_transaction, json_option
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
