"""`userdest apps`: the tenants."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from ops.cli.common import already_gone, emit, in_transaction, json_option, require_yes
from shared import readmodel, tenancy
from shared.attributes import CAP_MAX
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
    """List every app with its count of live keys and trusted domains, and its caps."""
    emit(in_transaction(readmodel.app_list), as_json, title="apps", empty="no apps")


class _Budget(click.ParamType):
    """A budget: a number of new names an hour, or `default` for DEFINITION_BUDGET."""

    name = "N|default"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() == "default":
            return _DEFAULT
        try:
            number = int(value)
        except ValueError:
            number = -1
        if not 0 <= number <= CAP_MAX:
            self.fail(f"{value!r} is not a number from 0 to {CAP_MAX}, nor `default`", param, ctx)
        return number


_DEFAULT = "default"
_CAP = click.IntRange(0, CAP_MAX)


@apps.command("caps")
@click.argument("name")
@click.option("--user-attributes", type=_CAP, metavar="N", help="Cap on user attributes.")
@click.option("--company-attributes", type=_CAP, metavar="N", help="Cap on company attributes.")
@click.option("--event-names", type=_CAP, metavar="N", help="Cap on event names.")
@click.option("--event-attributes", type=_CAP, metavar="N", help="Cap on attributes per event.")
@click.option(
    "--budget",
    type=_Budget(),
    help="New names traffic may define per scope in any hour; `default`: DEFINITION_BUDGET.",
)
@json_option
def apps_caps(name: str, as_json: bool, **given: Any) -> None:
    """Show the app NAME's caps on definitions and its budget of new names, or change those given.

    A cap counts the names defined, whoever defined them; traffic's new names past it are ignored
    and counted, an operator's are refused. The budget counts only the names traffic defined in the
    last hour. Lowering a cap below what is defined keeps those names and refuses new ones.
    """
    changes = {
        key: None if value == _DEFAULT else value
        for key, value in given.items()
        if value is not None
    }

    def unit(session: Session) -> dict[str, Any]:
        app = tenancy.get_app(session, name)
        if changes:
            tenancy.set_caps(session, app, changes)
        return {"name": app.name, **readmodel.app_caps(app)}

    emit(in_transaction(unit), as_json, title="caps changed" if changes else "caps")


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
