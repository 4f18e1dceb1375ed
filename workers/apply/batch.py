"""One queued message, applied in one transaction (SPEC 4, 5.8).

The fast path applies every call of the message together: one dedupe insert, one load, the calls
in order in memory, one flush. If that fails for a reason that is not transient, the message is
applied again one call at a time, each in its own savepoint, and the calls that still fail become
dead letters: one bad call never fails its neighbours.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from shared.envelope import Envelope
from shared.timeparse import parse_iso, utcnow
from workers.apply import store
from workers.apply.alias import apply_alias
from workers.apply.attributes import Caps
from workers.apply.call import BadCall, Call, parse_call
from workers.apply.deadletters import DeadLetter
from workers.apply.deadletters import store as store_dead_letters
from workers.apply.group import apply_group
from workers.apply.identify import apply_identify
from workers.apply.page import apply_page
from workers.apply.state import BatchState
from workers.apply.track import apply_track

logger = logging.getLogger(__name__)

APPLY: dict[str, Callable[[BatchState, Call], None]] = {
    "identify": apply_identify,
    "page": apply_page,
    "screen": apply_page,
    "track": apply_track,
    "group": apply_group,
    "alias": apply_alias,
}

# Postgres SQLSTATEs worth another try: serialization failure, deadlock, lock timeout, cancelled.
TRANSIENT_STATES = {"40001", "40P01", "55P03", "57014"}


class CallFailed(Exception):
    """The only call of a message failed for good; the caller rolls back and keeps `letter`.

    A message of one call skips the savepoint that isolates calls of a batch (two round trips of
    its dozen), so its failure aborts the transaction and the dead letter needs a fresh one.
    """

    def __init__(self, letter: DeadLetter) -> None:
        super().__init__(letter.error)
        self.letter = letter


class Retriable(Exception):
    """May succeed later (a deadlock, a lost connection, a race): retry the whole message."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | IntegrityError | store.ProfileVanished):
        # IntegrityError here is a race another transaction won (STYLE 8): retried, not hidden.
        return True
    if isinstance(exc, DBAPIError):
        return getattr(exc.orig, "sqlstate", None) in TRANSIENT_STATES or exc.connection_invalidated
    return False


@dataclass
class Outcome:
    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    ignored: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    event_times: list[datetime] = field(default_factory=list)


def apply_envelope(conn: Connection, env: Envelope, delivery_id: str | None = None) -> Outcome:
    """Apply one message inside the caller's transaction; the caller commits.

    `delivery_id` names the queued message (Celery's task id, the same on every redelivery); the
    receiver's request id stands in for it where there is none, but a client may choose that one.
    """
    outcome = Outcome()
    caps = store.app_caps(conn, env.app_id)
    received_at = parse_iso(env.received_at) or utcnow()
    # What a dead letter needs to be replayed as it was sent: the batch's defaults and sentAt.
    meta: dict[str, Any] = {
        "received_at": env.received_at,
        "request_id": env.request_id,
        "key_id": env.key_id,
        "defaults": env.defaults,
        "sent_at": env.sent_at,
    }
    letters = [
        DeadLetter(
            dedupe_key=f"rejected:{env.app_id}:{delivery_id or env.request_id}:{r.get('index')}",
            reason=_first_code(r.get("errors")),
            error="; ".join(
                str(e.get("message", e)) for e in r.get("errors") or [] if isinstance(e, dict)
            ),
            call=r.get("call"),
            meta=meta,
        )
        for r in env.rejected
    ]

    calls: list[Call] = []
    seen: set[str] = set()
    for index, (raw, message_id) in enumerate(zip(env.calls, env.message_ids, strict=True)):
        if message_id in seen:
            outcome.duplicates += 1
            continue
        seen.add(message_id)
        try:
            calls.append(parse_call(index, raw, message_id, env, received_at))
        except BadCall as exc:
            letters.append(
                DeadLetter(
                    f"bad:{env.app_id}:{message_id}", exc.code, str(exc), raw, message_id, meta
                )
            )

    if len(calls) == 1 and not letters:
        try:
            _apply(conn, env, caps, calls, outcome)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise CallFailed(_failed(env, calls[0], exc, meta)) from exc
    elif calls:
        try:
            with conn.begin_nested():
                _apply(conn, env, caps, calls, outcome)
        except Exception as exc:
            if is_transient(exc):
                raise
            logger.warning(
                "batch failed, isolating its calls",
                extra={"request_id": env.request_id, "error": type(exc).__name__},
            )
            letters.extend(_apply_one_by_one(conn, env, caps, calls, outcome, meta))
    store_dead_letters(conn, env.app_id, letters)
    for letter in letters:
        outcome.dead_letters[letter.reason] += 1
    return outcome


def _apply(
    conn: Connection, env: Envelope, caps: Caps, calls: list[Call], outcome: Outcome
) -> None:
    """Claim the calls' messageIds and apply those never applied before, all or nothing."""
    fresh = store.claim(conn, env.app_id, [c.message_id for c in calls])
    duplicates = len(calls) - len(fresh)
    calls = [c for c in calls if c.message_id in fresh]
    if calls:
        state = store.load(conn, env.app_id, caps, calls)
        for call in calls:
            APPLY[call.type](state, call)
            state.count(call.type)
        store.flush(conn, state, env.key_id)
        outcome.applied.update(state.applied)
        outcome.ignored.update(state.definitions.ignored)
        outcome.event_times.extend(c.time for c in calls)
    outcome.duplicates += duplicates


def _apply_one_by_one(
    conn: Connection,
    env: Envelope,
    caps: Caps,
    calls: list[Call],
    outcome: Outcome,
    meta: dict[str, Any],
) -> list[DeadLetter]:
    letters = []
    for call in calls:
        try:
            with conn.begin_nested():
                _apply(conn, env, caps, [call], outcome)
        except Exception as exc:
            if is_transient(exc):
                raise
            logger.warning(
                "call failed",
                extra={"message_id": call.message_id, "error": type(exc).__name__},
            )
            letters.append(_failed(env, call, exc, meta))
    return letters


def _failed(env: Envelope, call: Call, exc: Exception, meta: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        f"failed:{env.app_id}:{call.message_id}",
        "apply_failed",
        f"{type(exc).__name__}: {exc}"[:2000],
        call.raw,
        call.message_id,
        meta,
    )


def _first_code(errors: object) -> str:
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("code", "rejected"))
    return "rejected"
