"""`userdest suppressions`: the erased ids and contacts whose calls are skipped; list and lift."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import text
from sqlalchemy.orm import Session

from ops.cli.common import app_option, emit, in_transaction, json_option, load_settings
from shared import erasure, tenancy
from shared.ids import normalize_id


@click.group()
def suppressions() -> None:
    """Erased people's ids and contacts: calls naming one are skipped until it is lifted."""


@suppressions.command("list")
@app_option
@json_option
def suppressions_list(app_name: str, as_json: bool) -> None:
    """List the app's suppressions: each is a keyed hash (the value cannot be read back), its kind
    and when it was made."""

    def unit(session: Session) -> list[dict[str, Any]]:
        app_id = tenancy.get_app(session, app_name).id
        rows = session.execute(
            text(
                "SELECT key, kind, created_at FROM suppressed_ids WHERE app_id = :app "
                "ORDER BY created_at, key"
            ),
            {"app": app_id},
        )
        return [
            {"key": str(r.key), "kind": r.kind or "id", "created_at": r.created_at.isoformat()}
            for r in rows
        ]

    emit(in_transaction(unit), as_json, title="suppressions", empty="no suppressions")


@suppressions.command("lift")
@app_option
@click.option("--user-id", "user_ids", multiple=True, metavar="ID", help="A userId to lift.")
@click.option("--anonymous-id", "anonymous_ids", multiple=True, metavar="ID")
@click.option("--email", "emails", multiple=True, metavar="ADDRESS")
@click.option("--phone", "phones", multiple=True, metavar="NUMBER")
@click.option("--key", "hashes", multiple=True, metavar="UUID", help="A key `list` shows.")
@json_option
def suppressions_lift(
    app_name: str,
    user_ids: tuple[str, ...],
    anonymous_ids: tuple[str, ...],
    emails: tuple[str, ...],
    phones: tuple[str, ...],
    hashes: tuple[str, ...],
    as_json: bool,
) -> None:
    """Lift suppressions: calls naming these ids or contacts apply again from now on (calls
    skipped before stay skipped). Each value is normalised as the workers match it."""
    keys: set[erasure.IdKey] = set()
    for kind, values, normal in (
        ("user", user_ids, normalize_id),
        ("anonymous", anonymous_ids, normalize_id),
        ("email", emails, erasure.normalize_email),
        ("phone", phones, erasure.normalize_phone),
    ):
        for value in values:
            normalised = normal(value)
            if normalised is None:
                raise click.UsageError(f"{value!r} is not a usable {kind}")
            keys.add((kind, normalised))
    if not keys and not hashes:
        raise click.UsageError(
            "name what to lift: --user-id, --anonymous-id, --email, --phone or --key"
        )
    suppression = erasure.Suppression(load_settings().suppression_secret)

    def unit(session: Session) -> dict[str, Any]:
        app_id = tenancy.get_app(session, app_name).id
        lifted = erasure.lift(session.connection(), app_id, keys, suppression)
        if hashes:
            lifted += (
                session.connection()
                .execute(
                    text(
                        "DELETE FROM suppressed_ids WHERE app_id = :app "
                        "AND CAST(key AS text) = ANY(:keys)"
                    ),
                    {"app": app_id, "keys": [h.strip().lower() for h in hashes]},
                )
                .rowcount
            )
        return {"lifted": lifted, "asked": len(keys) + len(hashes)}

    emit(in_transaction(unit), as_json, title="lifted")
