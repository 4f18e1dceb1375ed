"""`userdest messages`: where one call is (applied, dead-lettered, held, waiting)."""

from __future__ import annotations

import click
import redis

from ops.cli.common import (
    app_option,
    broker,
    emit,
    in_app,
    in_transaction,
    json_option,
    load_settings,
)


@click.group()
def messages() -> None:
    """One call, by its messageId: applied, dead-lettered, or still in Redis."""


@messages.command("show")
@click.argument("message_id", metavar="MESSAGE_ID")
@app_option
@json_option
def messages_show(message_id: str, app_name: str, as_json: bool) -> None:
    """Say whether the app's call MESSAGE_ID was applied (when, to which profile), is a dead
    letter, or waits in Redis (held by a worker, or in a queue).

    MESSAGE_ID is the call's messageId, or for a call of a batch the receiver refused, the
    `messageId` its answer gave in `rejected`. The answer's `state` is one of applied,
    dead_letter, unacked, waiting and unknown (never seen, or applied longer ago than
    DEDUPE_DAYS). Redis is read only when Postgres does not settle it; without Redis then, the
    command fails (exit 1) rather than answer unknown.
    """
    from shared import messages as where

    found = in_transaction(
        in_app(app_name, lambda s, app_id: (app_id, where.in_postgres(s, app_id, message_id)))
    )
    app_id, postgres = found
    places = None
    if not where.settled(postgres):
        settings = load_settings()
        try:
            with broker(settings, read_timeout=max(30.0, settings.broker_timeout)) as client:
                places = where.in_redis(client, app_id, message_id)
        except (click.ClickException, redis.RedisError) as exc:
            # Neither applied nor an open dead letter: waiting, held or never seen, which only
            # Redis can tell. `unknown` here would be a guess a script could act on.
            message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            raise click.ClickException(
                f"{message}; the call is neither applied nor a dead letter, and only Redis can "
                "say whether it waits"
            ) from None
    answer = {
        "message_id": message_id,
        "app": app_name,
        "state": where.state(postgres, places),
        **postgres,
        "in_redis": places,
    }
    emit(answer, as_json, title=f"message {message_id}")
