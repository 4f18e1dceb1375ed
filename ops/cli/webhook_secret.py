"""`userdest webhook-secret`: the secret that signs /webhook bodies."""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlalchemy.orm import Session

from ops.cli.common import app_option, emit, in_transaction, json_option
from shared import tenancy


@click.group("webhook-secret")
def webhook_secret() -> None:
    """The secret that signs POST /webhook bodies.

    Segment's Webhooks destination sends X-Signature, the hex HMAC-SHA1 of the body.
    """


@webhook_secret.command("set")
@app_option
@click.argument("value", metavar="SECRET", required=False)
@click.option("--clear", is_flag=True, help="Remove the secret: /webhook takes unsigned bodies.")
@json_option
def webhook_secret_set(app_name: str, value: str | None, clear: bool, as_json: bool) -> None:
    """Set the app's webhook SECRET (`-` reads it from stdin), or remove it with --clear."""
    if clear == (value is not None):
        raise click.ClickException("give either SECRET or --clear")
    if value == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    if value is not None and not value.strip():
        raise click.ClickException("the webhook secret must not be empty")

    def unit(session: Session) -> dict[str, Any]:
        tenancy.get_app(session, app_name).webhook_secret = value
        return {"app": app_name, "webhook_secret_set": value is not None}

    emit(in_transaction(unit), as_json, title="webhook secret")
