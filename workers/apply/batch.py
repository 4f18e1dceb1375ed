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
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.calls import DELETION, routed_away
from shared.envelope import Envelope
from shared.timeparse import parse_iso, utcnow
from workers.apply import store
from workers.apply.alias import apply_alias
from workers.apply.attributes import Caps
from workers.apply.call import BadCall, Call, parse_call
from workers.apply.deadletters import LetterToKeep
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

# Postgres SQLSTATEs worth another try: serialization failure, deadlock, lock timeout, a statement
# cancelled by its timeout, and the races STYLE 8 says to retry rather than hide: a unique key or a
# foreign key that another transaction changed first. Anything else (a value too long for an index,
# a bad value) fails the same way every time: the call is isolated and kept as a dead letter.
TRANSIENT_STATES = {"40001", "40P01", "55P03", "57014", "23505", "23503"}
# The server is going away or not up yet.
UNREACHABLE_STATES = {"57P01", "57P02", "57P03"}


class CallFailed(Exception):
    """The only call of a message failed for good; the caller rolls back and keeps `letter`.

    A message of one call skips the savepoint that isolates calls of a batch (two round trips of
    its dozen), so its failure aborts the transaction and the dead letter needs a fresh one.
    """

    def __init__(self, letter: LetterToKeep) -> None:
        super().__init__(letter.error)
        self.letter = letter


class Retriable(Exception):
    """May succeed later (a deadlock, a lost connection, a race): retry the whole message."""


def sqlstate(exc: BaseException) -> str | None:
    """The Postgres SQLSTATE behind a SQLAlchemy error, if the server sent one."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def is_unreachable(exc: BaseException) -> bool:
    """Postgres cannot be reached at all (down, restarting, network): worth retrying without end."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = sqlstate(exc)
    if state in UNREACHABLE_STATES or (state or "").startswith("08"):
        return True
    # No SQLSTATE on an OperationalError: the client never got an answer. (A client-side
    # DataError has none either, and is not a reason to wait.)
    return state is None and isinstance(exc, OperationalError)


def is_transient(exc: BaseException) -> bool:
    """May succeed if the whole message is tried again later."""
    if isinstance(exc, store.ProfileVanished):
        return True
    return is_unreachable(exc) or sqlstate(exc) in TRANSIENT_STATES


def describe(exc: BaseException) -> str:
    """An error's kind and SQLSTATE, for logs: never its message, which may quote values."""
    state = sqlstate(exc)
    return f"{type(exc).__name__} (SQLSTATE {state})" if state else type(exc).__name__


@dataclass
class Outcome:
    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    routed_away: Counter[str] = field(default_factory=Counter)
    """Calls whose `integrations` turned this destination off, by call type."""
    ignored: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    unknown_apps: set[int] = field(default_factory=set)
    """Apps named by messages of the group that no longer exist: those were dead-lettered whole."""


@dataclass
class Prepared:
    """One message's calls, parsed, and the dead letters found before touching Postgres."""

    env: Envelope
    delivery_id: str | None
    calls: list[Call]
    letters: list[LetterToKeep]
    meta: dict[str, Any]
    duplicates: int = 0
    routed_away: Counter[str] = field(default_factory=Counter)


def prepare(env: Envelope, delivery_id: str | None = None) -> Prepared:
    """Parse a message's calls; its rejected and unparseable calls become dead letters."""
    received_at = parse_iso(env.received_at) or utcnow()
    # What a dead letter needs to be replayed as it was sent: the batch's defaults and sentAt.
    meta: dict[str, Any] = {
        "received_at": env.received_at,
        "request_id": env.request_id,
        "key_id": env.key_id,
        "defaults": env.defaults,
        "sent_at": env.sent_at,
    }
    rejected = env.rejected if isinstance(env.rejected, list) else [env.rejected]
    letters = [_rejected(env, delivery_id, r, meta) for r in rejected]
    prepared = Prepared(env, delivery_id, [], letters, meta)
    seen: set[str] = set()
    for index, (raw, message_id) in enumerate(zip(env.calls, env.message_ids, strict=True)):
        if message_id in seen:
            prepared.duplicates += 1
            continue
        seen.add(message_id)
        try:
            call = parse_call(index, raw, message_id, env, received_at)
        except BadCall as exc:
            letters.append(
                LetterToKeep(
                    f"bad:{env.app_id}:{message_id}", exc.code, str(exc), raw, message_id, meta
                )
            )
            continue
        if routed_away(call.body):
            prepared.routed_away[call.type] += 1  # accepted, not applied (SPEC 3, v2)
            continue
        prepared.calls.append(call)
    return prepared


def apply_envelope(conn: Connection, env: Envelope, delivery_id: str | None = None) -> Outcome:
    """Apply one message inside the caller's transaction; the caller commits.

    `delivery_id` names the queued message (Celery's task id, the same on every redelivery); the
    receiver's request id stands in for it where there is none, but a client may choose that one.
    """
    outcome = Outcome()
    caps = store.app_caps(conn, env.app_id)
    prepared = prepare(env, delivery_id)
    outcome.duplicates += prepared.duplicates
    outcome.routed_away.update(prepared.routed_away)
    calls, letters, meta = prepared.calls, prepared.letters, prepared.meta
    if len(calls) == 1 and not letters:
        try:
            _apply(conn, env.app_id, [env.key_id], caps, calls, outcome)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise CallFailed(_failed(env, calls[0], exc, meta)) from exc
    elif calls:
        letters.extend(_isolated(conn, prepared, caps, outcome))
    store_dead_letters(conn, env.app_id, letters)
    for letter in letters:
        outcome.dead_letters[letter.reason] += 1
    return outcome


def apply_messages(conn: Connection, messages: list[Prepared]) -> Outcome:
    """Apply several queued messages in the caller's transaction (SPEC 5.9); the caller commits.

    The calls of every message of one app are applied together: one claim, one load, one flush,
    as if they had come in one batch, in queue order. If that fails for a reason that is not
    transient, each message is applied again in a savepoint of its own (and its calls one by one
    where needed), so a bad call or message is isolated alone. A message whose app no longer
    exists is dead-lettered alone. Transient errors escape: the caller retries the whole group.
    """
    outcome = Outcome()
    by_app: dict[int, list[Prepared]] = {}
    for prepared in messages:
        by_app.setdefault(prepared.env.app_id, []).append(prepared)
        outcome.duplicates += prepared.duplicates
        outcome.routed_away.update(prepared.routed_away)
    for app_id, group in by_app.items():
        try:
            caps = store.app_caps(conn, app_id)
        except store.UnknownApp as exc:
            letters = [
                letter
                for p in group
                for letter in message_letters(
                    p.env.to_dict(), p.delivery_id, "unknown_app", str(exc)
                )
            ]
            store_dead_letters(conn, None, letters)
            outcome.unknown_apps.add(app_id)
            outcome.dead_letters["unknown_app"] += len(letters)
            continue
        letters = [letter for p in group for letter in p.letters]
        calls: list[Call] = []
        seen: set[str] = set()
        for p in group:
            for call in p.calls:
                if call.message_id in seen:  # the same call in two messages: a client's retry
                    outcome.duplicates += 1
                else:
                    seen.add(call.message_id)
                    calls.append(call)
        if calls:
            key_ids = [p.env.key_id for p in group]
            try:
                with conn.begin_nested():
                    _apply(conn, app_id, key_ids, caps, calls, outcome)
            except Exception as exc:
                if is_transient(exc):
                    raise
                logger.warning(
                    "group failed, isolating its messages",
                    extra={"app_id": app_id, "messages": len(group), "error": type(exc).__name__},
                )
                for p in group:
                    if p.calls:
                        letters.extend(_isolated(conn, p, caps, outcome))
        store_dead_letters(conn, app_id, letters)
        for letter in letters:
            outcome.dead_letters[letter.reason] += 1
    return outcome


def message_letters(
    payload: Any, delivery_id: str | None, reason: str, error: str
) -> list[LetterToKeep]:
    """Every call of a message that cannot be applied at all, as dead letters with `reason`;
    a payload that is not an envelope at all is kept whole, as one."""
    calls = payload.get("calls") if isinstance(payload, dict) else None
    ids = payload.get("message_ids") if isinstance(payload, dict) else None
    if not isinstance(calls, list):
        calls = [payload]
    if not isinstance(ids, list) or len(ids) != len(calls):
        ids = [None] * len(calls)
    request_id = payload.get("request_id") if isinstance(payload, dict) else None
    app_id = payload.get("app_id") if isinstance(payload, dict) else None
    kept = ("request_id", "received_at", "defaults", "sent_at")
    meta = {k: payload.get(k) for k in kept} if isinstance(payload, dict) else {}
    return [
        LetterToKeep(
            dedupe_key=f"{reason}:{app_id}:{delivery_id or request_id}:{i}:{mid}",
            reason=reason,
            error=error,
            call=call,
            message_id=mid if isinstance(mid, str) else None,
            meta=meta,
        )
        for i, (call, mid) in enumerate(zip(calls, ids, strict=True))
    ]


def _isolated(
    conn: Connection, prepared: Prepared, caps: Caps, outcome: Outcome
) -> list[LetterToKeep]:
    """A message's calls in one savepoint, else one savepoint each; the dead letters of those
    that still fail."""
    env = prepared.env
    try:
        with conn.begin_nested():
            _apply(conn, env.app_id, [env.key_id], caps, prepared.calls, outcome)
        return []
    except Exception as exc:
        if is_transient(exc):
            raise
        logger.warning(
            "batch failed, isolating its calls",
            extra={"app_id": env.app_id, "request_id": env.request_id, "error": type(exc).__name__},
        )
    return _apply_one_by_one(conn, env, caps, prepared.calls, outcome, prepared.meta)


def _rejected(
    env: Envelope, delivery_id: str | None, entry: Any, meta: dict[str, Any]
) -> LetterToKeep:
    """The dead letter of a call the receiver rejected; a malformed entry keeps what it has."""
    if not isinstance(entry, dict):
        entry = {"call": entry}
    errors = entry.get("errors")
    errors = errors if isinstance(errors, list) else []
    return LetterToKeep(
        dedupe_key=f"rejected:{env.app_id}:{delivery_id or env.request_id}:{entry.get('index')}",
        reason=_first_code(errors),
        error="; ".join(str(e.get("message", e)) for e in errors if isinstance(e, dict)),
        call=entry.get("call"),
        meta=meta,
    )


def _apply(
    conn: Connection,
    app_id: int,
    key_ids: list[str | None],
    caps: Caps,
    calls: list[Call],
    outcome: Outcome,
) -> None:
    """Claim the calls' messageIds and apply those never applied before, all or nothing."""
    fresh = store.claim(conn, app_id, [c.message_id for c in calls])
    duplicates = len(calls) - len(fresh)
    calls = [c for c in calls if c.message_id in fresh]
    if calls:
        state = store.load(conn, app_id, caps, calls)
        store.erase_requested(conn, state, calls)
        for call in calls:
            if call.type == DELETION:
                state.count(call.type)
            elif not store.suppressed(state, call):
                APPLY[call.type](state, call)
                state.count(call.type)
        store.flush(conn, state, key_ids)
        outcome.applied.update(state.applied)
        outcome.ignored.update(state.definitions.ignored)
    outcome.duplicates += duplicates


def _apply_one_by_one(
    conn: Connection,
    env: Envelope,
    caps: Caps,
    calls: list[Call],
    outcome: Outcome,
    meta: dict[str, Any],
) -> list[LetterToKeep]:
    letters = []
    for call in calls:
        try:
            with conn.begin_nested():
                _apply(conn, env.app_id, [env.key_id], caps, [call], outcome)
        except Exception as exc:
            if is_transient(exc):
                raise
            logger.warning(
                "call failed",
                extra={"message_id": call.message_id, "error": type(exc).__name__},
            )
            letters.append(_failed(env, call, exc, meta))
    return letters


def _failed(env: Envelope, call: Call, exc: Exception, meta: dict[str, Any]) -> LetterToKeep:
    return LetterToKeep(
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
