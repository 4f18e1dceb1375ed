"""`userdest domains`: trusted domains."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.orm import Session

from ops.cli.common import already_gone, app_option, emit, in_app, in_transaction, json_option
from shared import readmodel, tenancy


@click.group()
def domains() -> None:
    """Trusted domains: the hosts browsers may send from.

    Exact (shop.example.com) or wildcard (*.example.com); an app with none trusts every host.
    """


@domains.command("add")
@app_option
@click.argument("host")
@json_option
def domains_add(app_name: str, host: str, as_json: bool) -> None:
    """Trust HOST (shop.example.com, or *.example.com for its sub-domains) for the app."""

    def unit(session: Session) -> dict[str, Any]:
        added = tenancy.add_domain(session, tenancy.get_app(session, app_name), host)
        return {"app": app_name, "host": added}

    emit(in_transaction(unit), as_json, title="domain trusted")


@domains.command("remove")
@app_option
@click.argument("host")
@json_option
def domains_remove(app_name: str, host: str, as_json: bool) -> None:
    """Stop trusting HOST for the app. A host the app does not trust is already removed
    (exit 0)."""

    def unit(session: Session) -> tuple[dict[str, Any], bool]:
        stored, removed = tenancy.remove_domain(session, tenancy.get_app(session, app_name), host)
        return {"app": app_name, "host": stored}, removed

    answer, removed = in_transaction(unit)
    if not removed:
        already_gone(answer, as_json, title="domain", what=f"the trusted domain {answer['host']!r}")
        return
    emit({**answer, "already_gone": False}, as_json, title="domain removed")


@domains.command("list")
@app_option
@json_option
def domains_list(app_name: str, as_json: bool) -> None:
    """List the app's trusted domains; an empty list means every host is trusted."""
    emit(
        in_transaction(in_app(app_name, readmodel.domain_list)),
        as_json,
        title=f"domains of {app_name}",
        empty="none: every host is trusted",
    )
