"""Where one call is: `userdest messages show MID --app A` (was message X applied?).

A call is known by its app and messageId. In order of what settles it:
- applied: its dedupe record (`processed_messages`) says when; a track, page or screen call also
  names its profile through the event or page view it recorded (identify, group and alias calls
  leave no row that names the message, so their profile is not known here);
- skipped: taken like an applied call, but it named an erased person (`skipped_messages`);
- dead-lettered: an open dead letter holds it, with its reason (a call the receiver refused in a
  batch is known by the `messageId` the receiver's answer gave it in `rejected`);
- held by a worker (unacknowledged) or waiting in a queue, found by reading them (a scan of
  every waiting message, bounded by Redis's read timeout: fine for an operator, not for a script
  in a loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from sqlalchemy import and_, or_, select, text
from sqlalchemy.orm import Session

from shared import dedupe, wire
from shared.models import (
    DeadLetter,
    EventOccurrence,
    Identity,
    PageView,
    ProcessedMessage,
    SkippedMessage,
    User,
)
from shared.queues import QUEUES
from shared.timeparse import iso

SCAN_CHUNK = 1000
PROFILE_LOOKUP_TIMEOUT_MS = 10_000
"""events and page_views have no index on message_id (it would slow every write): the profile
lookup scans them, within this bound."""


def in_postgres(session: Session, app_id: int, message_id: str) -> dict[str, Any]:
    """What Postgres knows of the call: when it was applied, to which profile, its dead letters."""
    applied_at = session.scalar(
        select(ProcessedMessage.processed_at).where(
            ProcessedMessage.key == dedupe.key(app_id, message_id)
        )
    )
    profile = skipped = None
    if applied_at is not None:
        skipped = session.execute(
            select(SkippedMessage.reason, SkippedMessage.skipped_at).where(
                SkippedMessage.key == dedupe.key(app_id, message_id)
            )
        ).first()
        if skipped is None:
            profile = _profile(session, app_id, message_id)
    letters = session.execute(
        select(DeadLetter)
        .where(
            DeadLetter.app_id == app_id,
            or_(
                DeadLetter.message_id == message_id,
                # Letters of refused calls kept before those had an id: the call's own messageId.
                and_(
                    DeadLetter.message_id.is_(None),
                    DeadLetter.call["messageId"].astext == message_id,
                ),
            ),
        )
        .order_by(DeadLetter.id)
    ).scalars()
    return {
        "applied_at": iso(applied_at) if applied_at is not None else None,
        "profile": profile,
        # Taken, but not applied: it named an erased person (`userdest suppressions`).
        "skipped": None
        if skipped is None
        else {"reason": skipped.reason, "at": iso(skipped.skipped_at)},
        "dead_letters": [
            {
                "id": letter.id,
                "reason": letter.reason,
                "open": letter.replayed_at is None or letter.updated_at > letter.replayed_at,
                "created_at": iso(letter.created_at),
            }
            for letter in letters
        ],
    }


def _profile(session: Session, app_id: int, message_id: str) -> dict[str, Any] | None:
    session.execute(text(f"SET LOCAL statement_timeout = {PROFILE_LOOKUP_TIMEOUT_MS}"))
    for table, recorded in ((EventOccurrence, "event"), (PageView, "page view")):
        user_pk = session.scalar(
            select(table.user_pk)
            .where(table.app_id == app_id, table.message_id == message_id)
            .limit(1)
        )
        if user_pk is None:
            continue
        user = session.get_one(User, user_pk)
        anonymous = session.scalars(
            select(Identity.value)
            .where(Identity.user_pk == user_pk, Identity.kind == "anonymous")
            .order_by(Identity.value)
        ).all()
        return {"user_id": user.user_id, "anonymous_ids": list(anonymous), "recorded_as": recorded}
    return None


def _holding(envelope_raw: bytes, app_id: int, message_id: str) -> str | None:
    """The envelope's received_at when it carries this app's message, else None."""
    try:
        envelope = wire.decode_envelope(envelope_raw)
    except wire.ForeignMessage:
        return None
    if envelope.app_id == app_id and message_id in envelope.message_ids:
        return envelope.received_at
    return None


def _queued(client: redis.Redis, queue: str) -> Iterator[bytes]:
    length = int(client.llen(queue))
    for start in range(0, length, SCAN_CHUNK):
        chunk: list[bytes] = client.lrange(queue, start, start + SCAN_CHUNK - 1)  # type: ignore[assignment]
        yield from chunk


def in_redis(client: redis.Redis, app_id: int, message_id: str) -> list[dict[str, Any]]:
    """Where the call's message sits in Redis: held by a worker (unacked) or waiting in a queue."""
    found: list[dict[str, Any]] = []
    for _tag, value in wire.unacked_entries(client, SCAN_CHUNK):
        entry = wire.unacked_entry(value)
        if entry is None:
            continue
        message, queue = entry
        received = _holding(wire.encode(message), app_id, message_id)
        if received is not None:
            found.append({"where": "unacked", "queue": str(queue), "received_at": received})
    for queue in QUEUES:
        for raw in _queued(client, queue):
            received = _holding(raw, app_id, message_id)
            if received is not None:
                found.append({"where": "waiting", "queue": queue, "received_at": received})
    return found


def settled(postgres: dict[str, Any]) -> bool:
    """Whether Postgres alone says where the call is: applied, or held by an open dead letter."""
    return postgres["applied_at"] is not None or any(
        letter["open"] for letter in postgres["dead_letters"]
    )


def state(postgres: dict[str, Any], redis_places: list[dict[str, Any]] | None) -> str:
    """One word for where the call is: applied, skipped, dead_letter, unacked, waiting or unknown."""
    if postgres.get("skipped") is not None:
        return "skipped"
    if postgres["applied_at"] is not None:
        return "applied"
    if any(letter["open"] for letter in postgres["dead_letters"]):
        return "dead_letter"
    for place in ("unacked", "waiting"):
        if any(p["where"] == place for p in redis_places or []):
            return place
    return "unknown"
