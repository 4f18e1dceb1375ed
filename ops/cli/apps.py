"""`userdest apps`: the tenants."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.orm import Session

from ops import readmodel
from ops.cli.common import emit, json_option, work
from shared import tenancy
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

    emit(work(unit), as_json, title="app created")


@apps.command("list")
@json_option
def apps_list(as_json: bool) -> None:
    """List every app with its count of live keys and trusted domains."""
    emit(work(readmodel.app_list), as_json, title="apps", empty="no apps")
