"""`userdest users`: profiles and their history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ops import readmodel
from ops.cli.common import (
    app_option,
    emit,
    in_app,
    json_option,
    limit_option,
    work,
)

if TYPE_CHECKING:
    pass


@click.group()
def users() -> None:
    """User profiles, looked up by userId or anonymousId."""


@users.command("show")
@app_option
@click.argument("id")
@json_option
def users_show(app_name: str, id: str, as_json: bool) -> None:
    """Show the profile that ID (a userId or an anonymousId) names."""
    profile = work(in_app(app_name, lambda s, app_id: readmodel.user_profile(s, app_id, id)))
    emit(profile, as_json, title=f"user {id}")


@users.command("events")
@app_option
@click.argument("id")
@limit_option
@json_option
def users_events(app_name: str, id: str, limit: int | None, as_json: bool) -> None:
    """List the events the profile ID tracked, newest first."""
    found = work(in_app(app_name, lambda s, app_id: readmodel.user_events(s, app_id, id, limit)))
    emit(found, as_json, title=f"events of {id}", empty="no events")


@users.command("pageviews")
@app_option
@click.argument("id")
@limit_option
@json_option
def users_pageviews(app_name: str, id: str, limit: int | None, as_json: bool) -> None:
    """List the page and screen views of the profile ID, newest first."""
    found = work(in_app(app_name, lambda s, app_id: readmodel.user_pageviews(s, app_id, id, limit)))
    emit(found, as_json, title=f"page views of {id}", empty="no page views")
