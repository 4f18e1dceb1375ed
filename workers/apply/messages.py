"""Applying queued messages inside the caller's transaction: a lone message is a group of one.

The calls of every message of one app are applied together, in queue order: one dedupe claim, one
load, the calls in memory, one flush. A worker's first attempt uses no savepoint at all (a
failure aborts the transaction, and the worker rolls back); its next attempt, `isolate=True`,
applies each message in a savepoint of its own and, where one fails, its calls one by one, so that
one bad call never fails its neighbours and becomes a dead letter alone. What to do about an error
is workers/failures.py's decision; errors worth another try always escape to the worker.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from shared.attributes import BUDGET_DEFAULT
from shared.calls import DELETION, routed_away
from shared.envelope import Envelope
from shared.erasure import Suppression
from shared.timeparse import parse_iso, utcnow
from workers.apply import store
from workers.apply.alias import apply_alias
from workers.apply.attributes import Caps
from workers.apply.call import BadCall, Call, parse_call
from workers.apply.deadletters import LetterToKeep, keep, letter_key
from workers.apply.group import apply_group
from workers.apply.identify import apply_identify
from workers.apply.page import apply_page
from workers.apply.state import BatchState
from workers.apply.track import apply_track
from workers.failures import Action, classify, describe

logger = logging.getLogger(__name__)

CallApplier = Callable[[BatchState, Call], None]
"""A function that applies one call type to the in-memory state."""

APPLY: Mapping[str, CallApplier] = {
    "identify": apply_identify,
    "page": apply_page,
    "screen": apply_page,
    "track": apply_track,
    "group": apply_group,
    "alias": apply_alias,
}
"""Where each call type is applied."""


@dataclass
class Outcome:
    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    routed_away: Counter[str] = field(default_factory=Counter)
    """Calls whose `integrations` turned this destination off, by call type."""
    suppressed: Counter[str] = field(default_factory=Counter)
    """Calls skipped because they name an erased person, by call type."""
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
    received_at: datetime | None = None
    """When the receiver took the message (None if its envelope's time does not parse)."""
    duplicates: int = 0
    routed_away: Counter[str] = field(default_factory=Counter)


def prepare(env: Envelope, delivery_id: str | None = None) -> Prepared:
    """Parse a message's calls; its rejected and unparseable calls become dead letters."""
    received = parse_iso(env.received_at)
    received_at = received or utcnow()
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
    prepared = Prepared(env, delivery_id, [], letters, meta, received)
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
                    letter_key("bad", env.app_id, message_id),
                    exc.code,
                    str(exc),
                    raw,
                    message_id,
                    meta,
                )
            )
            continue
        if routed_away(call.body):
            prepared.routed_away[call.type] += 1  # accepted, not applied
            continue
        call.work_out()  # before any lock is taken
        prepared.calls.append(call)
    return prepared


def apply_messages(
    conn: Connection,
    messages: list[Prepared],
    *,
    suppression: Suppression,
    definition_budget: int = BUDGET_DEFAULT,
    isolate: bool = True,
    appliers: Mapping[str, CallApplier] = APPLY,
) -> Outcome:
    """Apply queued messages in the caller's transaction, in queue order; the caller commits.

    Without `isolate`, any error escapes and leaves the transaction to be rolled back: the cheap
    first attempt. With it, a message that fails is applied again alone and then call by call, each
    in a savepoint, and what still fails becomes a dead letter; only errors worth another try
    escape (workers/failures.py). A message whose app no longer exists is dead-lettered whole.
    `appliers` maps each call type to the function that applies it; `suppression` keys the
    hashes of erased people's ids (SUPPRESSION_SECRET); `definition_budget` is the budget of new
    names of the apps without their own (DEFINITION_BUDGET).
    """
    outcome = Outcome()
    by_app: dict[int, list[Prepared]] = {}
    for prepared in messages:
        by_app.setdefault(prepared.env.app_id, []).append(prepared)
        outcome.duplicates += prepared.duplicates
        outcome.routed_away.update(prepared.routed_away)
    for app_id, group in by_app.items():
        try:
            caps = store.app_caps(conn, app_id, definition_budget)
        except store.UnknownApp as exc:
            letters = [
                letter
                for p in group
                for letter in message_letters(
                    p.env.to_dict(), p.delivery_id, "unknown_app", str(exc)
                )
            ]
            _keep(conn, None, letters, outcome)
            outcome.unknown_apps.add(app_id)
            continue
        run = _Run(conn, app_id, caps, outcome, appliers, suppression)
        letters = [letter for p in group for letter in p.letters]
        if isolate:
            for p in group:
                letters.extend(run.isolated(p))
        else:
            run.apply([p.env.key_id for p in group], _distinct_calls(group, outcome))
        _keep(conn, app_id, letters, outcome)
    return outcome


def _distinct_calls(group: list[Prepared], outcome: Outcome) -> list[Call]:
    """The group's calls in order, each messageId once: the same call in two messages is a
    client's retry, counted as a duplicate."""
    calls: list[Call] = []
    seen: set[str] = set()
    for p in group:
        for call in p.calls:
            if call.message_id in seen:
                outcome.duplicates += 1
            else:
                seen.add(call.message_id)
                calls.append(call)
    return calls


def _keep(
    conn: Connection, app_id: int | None, letters: list[LetterToKeep], outcome: Outcome
) -> None:
    keep(conn, app_id, letters)
    for letter in letters:
        outcome.dead_letters[letter.reason] += 1


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
            dedupe_key=letter_key(reason, app_id, delivery_id or request_id, i, mid),
            reason=reason,
            error=error,
            call=call,
            message_id=mid if isinstance(mid, str) else None,
            meta=meta,
        )
        for i, (call, mid) in enumerate(zip(calls, ids, strict=True))
    ]


def _rejected(
    env: Envelope, delivery_id: str | None, entry: Any, meta: dict[str, Any]
) -> LetterToKeep:
    """The dead letter of a call the receiver rejected; a malformed entry keeps what it has."""
    if not isinstance(entry, dict):
        entry = {"call": entry}
    errors = entry.get("errors")
    errors = errors if isinstance(errors, list) else []
    message_id = entry.get("message_id")  # what the receiver answered for it
    return LetterToKeep(
        dedupe_key=letter_key(
            "rejected", env.app_id, delivery_id or env.request_id, entry.get("index")
        ),
        reason=_first_code(errors),
        error="; ".join(str(e.get("message", e)) for e in errors if isinstance(e, dict)),
        call=entry.get("call"),
        message_id=message_id if isinstance(message_id, str) else None,
        meta=meta,
    )


@dataclass(slots=True)
class _Run:
    """Applying one app's calls within one transaction."""

    conn: Connection
    app_id: int
    caps: Caps
    outcome: Outcome
    appliers: Mapping[str, CallApplier]
    suppression: Suppression

    def apply(self, key_ids: list[str | None], calls: list[Call]) -> None:
        """Claim the calls' messageIds and apply those never applied before, all or nothing."""
        if not calls:
            return
        conn, outcome = self.conn, self.outcome
        fresh = store.claim(conn, self.app_id, [c.message_id for c in calls])
        outcome.duplicates += len(calls) - len(fresh)
        calls = [c for c in calls if c.message_id in fresh]
        if not calls:
            return
        state = store.load(conn, self.app_id, self.caps, calls, self.suppression)
        store.erase_requested(conn, state, calls, self.suppression)
        skipped = []
        for call in calls:
            if call.type == DELETION:
                state.count(call.type)
            elif store.suppressed(state, call):
                skipped.append(call)
            else:
                self.appliers[call.type](state, call)
                state.count(call.type)
        store.record_skipped(conn, self.app_id, skipped)
        store.flush(conn, state, key_ids)
        outcome.applied.update(state.applied)
        outcome.suppressed.update(call.type for call in skipped)
        outcome.ignored.update(state.definitions.ignored)

    def isolated(self, prepared: Prepared) -> list[LetterToKeep]:
        """A message's calls in one savepoint, else one savepoint each; the dead letters of those
        that still fail."""
        env = prepared.env
        try:
            with self.conn.begin_nested():
                self.apply([env.key_id], prepared.calls)
            return []
        except Exception as exc:
            if classify(exc) is not Action.ISOLATE:
                raise
            logger.warning(
                "message failed, isolating its calls",
                extra={"app_id": env.app_id, "request_id": env.request_id, "error": describe(exc)},
            )
        letters = []
        for call in prepared.calls:
            try:
                with self.conn.begin_nested():
                    self.apply([env.key_id], [call])
            except Exception as exc:
                if classify(exc) is not Action.ISOLATE:
                    raise
                logger.warning(
                    "call failed", extra={"message_id": call.message_id, "error": describe(exc)}
                )
                letters.append(_failed(env, call, exc, prepared.meta))
        return letters


def _failed(env: Envelope, call: Call, exc: Exception, meta: dict[str, Any]) -> LetterToKeep:
    return LetterToKeep(
        letter_key("failed", env.app_id, call.message_id),
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
