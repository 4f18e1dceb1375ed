"""The operator's side of dead letters: listing, showing, exporting, editing, counting and purging
them.

Workers write dead letters (workers/apply/deadletters.py); `userdest deadletters replay` puts them
back on a queue (ops/replay.py) and stamps `replayed_at`. A letter is *open* while it was never
replayed, or failed again after its last replay: the worker's upsert moves `updated_at` past
`replayed_at` then. Lists and counts show open letters unless asked for all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from shared.models import App, DeadLetter, DeadLetterDefaults
from shared.readmodel import NotFound
from shared.timeparse import iso

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `7d`, `1w` or sums of them (`1d12h`); plain digits are seconds."""
    value = text.strip().lower()
    if value.isdigit():
        return timedelta(seconds=int(value))
    parts = _DURATION.findall(value)
    if not parts or _DURATION.sub("", value).strip():
        raise ValueError(f"{text!r} is not a duration such as 30m, 12h, 7d or 1d12h")
    total = timedelta()
    for amount, unit in parts:
        total += timedelta(**{_UNITS[unit]: int(amount)})
    return total


def is_open() -> ColumnElement[bool]:
    """Never replayed, or failed again after its last replay."""
    return DeadLetter.is_open()


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters a command means."""

    app_id: int | None = None
    reason: str | None = None
    older_than: timedelta | None = None
    """Created longer ago than this."""
    newer_than: timedelta | None = None
    """Created at most this long ago."""
    include_replayed: bool = False
    replayed_only: bool = False

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.app_id is not None:
            clauses.append(DeadLetter.app_id == self.app_id)
        if self.reason is not None:
            clauses.append(DeadLetter.reason == self.reason)
        if self.older_than is not None:
            clauses.append(DeadLetter.created_at < func.now() - self.older_than)
        if self.newer_than is not None:
            clauses.append(DeadLetter.created_at >= func.now() - self.newer_than)
        if self.replayed_only:
            clauses.append(~is_open())
        elif not self.include_replayed:
            clauses.append(is_open())
        return clauses


def list_letters(
    session: Session, where: Filter, limit: int | None, after_id: int | None = None
) -> list[dict[str, Any]]:
    """Dead letters, newest first, older than the letter `after_id` where given: `{"id", "app",
    "reason", "error", "attempts", "created_at", "call"}`."""
    after = [] if after_id is None else [DeadLetter.id < after_id]
    query = (
        select(DeadLetter, App.name)
        .outerjoin(App, App.id == DeadLetter.app_id)
        .where(*where.where(), *after)
        .order_by(DeadLetter.id.desc())
        .limit(limit)
    )
    return [_summary(letter, app) for letter, app in session.execute(query)]


def _summary(letter: DeadLetter, app: str | None) -> dict[str, Any]:
    """What `deadletters list --json` answers for one letter."""
    return {
        "id": letter.id,
        "app": app,
        "reason": letter.reason,
        "error": letter.error,
        "attempts": letter.attempts,
        "created_at": iso(letter.created_at),
        "call": letter.call,
    }


def show_letter(session: Session, letter_id: int) -> dict[str, Any]:
    """One dead letter with everything kept about it."""
    row = session.execute(
        select(DeadLetter, App.name)
        .outerjoin(App, App.id == DeadLetter.app_id)
        .where(DeadLetter.id == letter_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no dead letter {letter_id}")
    letter, app = row
    return {
        **_summary(letter, app),
        "updated_at": iso(letter.updated_at),
        "replayed_at": None if letter.replayed_at is None else iso(letter.replayed_at),
        "message_id": letter.message_id,
        "meta": metas(session, [letter])[letter.id],
    }


def metas(session: Session, letters: Sequence[DeadLetter]) -> dict[int, dict[str, Any]]:
    """Each letter's meta as the worker had it, its batch's defaults put back (they are kept once
    in dead_letter_defaults for all the letters of a batch)."""
    digests = {letter.defaults_digest for letter in letters if letter.defaults_digest}
    found: dict[str, Any] = {}
    if digests:
        rows = session.execute(
            select(DeadLetterDefaults.digest, DeadLetterDefaults.defaults).where(
                DeadLetterDefaults.digest.in_(sorted(digests))
            )
        )
        found = {row[0]: row[1] for row in rows}
    out = {}
    for letter in letters:
        meta = letter.meta if isinstance(letter.meta, dict) else {}
        if letter.defaults_digest in found:
            meta = {**meta, "defaults": found[letter.defaults_digest]}
        out[letter.id] = meta
    return out


def count_letters(session: Session, where: Filter) -> int:
    """How many dead letters `where` names."""
    query = select(func.count()).select_from(DeadLetter).where(*where.where())
    return session.scalar(query) or 0


def count_open(session: Session) -> int:
    """How many dead letters wait for an operator."""
    return count_letters(session, Filter())


def purge(session: Session, where: Filter) -> int:
    """Delete the dead letters `where` names, replayed or not unless it says; how many went."""
    result = session.execute(
        delete(DeadLetter).where(*where.where()).execution_options(synchronize_session=False)
    )
    # Defaults no letter names any more go with their last letter.
    session.execute(
        delete(DeadLetterDefaults)
        .where(
            ~select(DeadLetter.id)
            .where(DeadLetter.defaults_digest == DeadLetterDefaults.digest)
            .exists()
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


EXPORT_PAGE = 1000


def export_letters(session: Session, where: Filter) -> Iterator[dict[str, Any]]:
    """Every letter `where` names, newest first, as `list` shows it plus its `message_id`: one
    NDJSON line each for `deadletters export`, to fix and give back to `deadletters replay
    --from`."""
    after: int | None = None
    while True:
        query = (
            select(DeadLetter, App.name)
            .outerjoin(App, App.id == DeadLetter.app_id)
            .where(*where.where(), *([] if after is None else [DeadLetter.id < after]))
            .order_by(DeadLetter.id.desc())
            .limit(EXPORT_PAGE)
        )
        rows = session.execute(query).all()
        for letter, app in rows:
            yield {**_summary(letter, app), "message_id": letter.message_id}
        if len(rows) < EXPORT_PAGE:
            return
        after = rows[-1][0].id


class EditError(ValueError):
    """A line of fixed dead letters that cannot be read."""


def read_edits(lines: Iterable[bytes]) -> dict[int, Any]:
    """The fixed calls of an edited export, by letter id: each line an object with the letter's
    `id` and its `call` (other keys, such as `reason`, are ignored). Blank lines are skipped."""
    edits: dict[int, Any] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise EditError(f"line {number}: not JSON ({exc})") from None
        if not isinstance(row, dict) or type(row.get("id")) is not int or "call" not in row:
            raise EditError(f'line {number}: needs the letter\'s "id" and its "call"')
        if row["id"] in edits:
            raise EditError(f"line {number}: dead letter {row['id']} is given twice")
        edits[row["id"]] = row["call"]
    return edits


def edit_letters(session: Session, edits: dict[int, Any], app_id: int | None = None) -> None:
    """Put the fixed calls in their letters, in the caller's transaction. The call first kept is
    moved to the letter's meta (`original_call`) the first time it is changed, so the letter still
    shows what was received."""
    if not edits:
        return
    scope = [] if app_id is None else [DeadLetter.app_id == app_id]
    letters = {
        letter.id: letter
        for letter in session.scalars(
            select(DeadLetter).where(DeadLetter.id.in_(sorted(edits)), *scope).with_for_update()
        )
    }
    missing = [i for i in sorted(edits) if i not in letters]
    if missing:
        where = " for this app" if app_id is not None else ""
        raise NotFound(f"no dead letter {', '.join(map(str, missing))}{where}")
    for letter_id, call in edits.items():
        letter = letters[letter_id]
        if letter.call == call:
            continue
        meta = dict(letter.meta) if isinstance(letter.meta, dict) else {}
        meta.setdefault("original_call", letter.call)
        letter.meta = meta
        letter.call = call
    session.flush()
