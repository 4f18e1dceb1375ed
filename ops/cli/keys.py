"""`userdest keys`: API keys."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.orm import Session

from ops.cli.common import app_option, emit, in_app, in_transaction, json_option
from shared import readmodel, tenancy
from shared.timeparse import iso


@click.group()
def keys() -> None:
    """API keys: write keys Segment sources send, read keys the read API takes."""


@keys.command("create")
@app_option
@click.option(
    "--label",
    metavar="TEXT",
    help="What the key is for (the source that sends with it), shown by `keys list`.",
)
@click.option(
    "--scope",
    type=click.Choice(tenancy.KEY_SCOPES),
    default="write",
    show_default=True,
    help="write: senders send calls with it; read: a server reads through the read API.",
)
@json_option
def keys_create(app_name: str, label: str | None, scope: str, as_json: bool) -> None:
    """Create an API key for the app; its secret is shown this once and never stored."""

    def unit(session: Session) -> dict[str, Any]:
        new = tenancy.create_key(session, tenancy.get_app(session, app_name), label, scope)
        return {
            "key_id": new.key_id,
            "api_key": new.api_key,
            "label": label and label.strip(),
            "scope": scope,
        }

    answer = in_transaction(unit)
    emit(answer, as_json, title="key created")
    if not as_json:
        click.echo("Copy the api_key now: it cannot be shown again.", err=True)


@keys.command("revoke")
@click.argument("key_id")
@json_option
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke the key KEY_ID; receivers refuse it within seconds. Revoking twice changes nothing."""

    def unit(session: Session) -> dict[str, Any]:
        key = tenancy.revoke_key(session, key_id)
        return {"key_id": key.id, "revoked_at": iso(key.revoked_at) if key.revoked_at else None}

    emit(in_transaction(unit), as_json, title="key revoked")


@keys.command("list")
@app_option
@json_option
def keys_list(app_name: str, as_json: bool) -> None:
    """List the app's keys: ids, prefixes and times, never a secret."""
    emit(
        in_transaction(in_app(app_name, readmodel.key_list)),
        as_json,
        title=f"keys of {app_name}",
        empty="no keys",
    )
