"""`userdest apps`: the tenants."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from ops.cli.common import already_gone, emit, in_transaction, json_option, require_yes
from shared import readmodel, tenancy
from shared.models import App
from shared.timeparse import iso


@click.group()
def apps() -> None:
    """Apps: the tenants that own everything else."""


@apps.command("create")
@click.argument("name")
@json_option
def apps_create(name: str, as_json: bool) -> None:
    """Create the app NAME (names are unique)."""

    def unit(session: Session) -> dict[str, Any]:
        app = tenancy.new_app(session, name)
        return {"name": app.name, "created_at": iso(app.created_at)}

    emit(in_transaction(unit), as_json, title="app created")


@apps.command("list")
@json_option
def apps_list(as_json: bool) -> None:
    """List every app with its count of live keys and trusted domains."""
    emit(in_transaction(readmodel.app_list), as_json, title="apps", empty="no apps")


@apps.command("delete")
@click.argument("name")
@click.option(
    "--yes", is_flag=True, help="Really delete the app and all it owns: there is no undo."
)
@json_option
def apps_delete(name: str, yes: bool, as_json: bool) -> None:
    """Delete the app NAME with everything it owns: keys, domains, definitions, profiles, events,
    page views, companies, dead letters, replay runs. Needs --yes. An app that is not there is
    already deleted (exit 0)."""
    require_yes(yes, f"deleting the app {name!r} deletes everything it owns")

    def unit(session: Session) -> dict[str, Any] | None:
        app = session.scalar(select(App).where(App.name == name).with_for_update())
        if app is None:
            return None
        return {"deleted": name, "rows": tenancy.delete_app(session, app)}

    answer = in_transaction(unit)
    if answer is None:
        already_gone({"deleted": name, "rows": {}}, as_json, title="app", what=f"the app {name!r}")
        return
    emit({**answer, "already_gone": False}, as_json, title="app deleted")
