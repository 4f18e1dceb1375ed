"""Dead letters: calls kept in Postgres with their reason, for an operator to inspect and replay."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, text

from shared.db import json_dumps


@dataclass(frozen=True, slots=True)
class LetterToKeep:
    dedupe_key: str
    """One row per failing call however often its message is redelivered (letter_key)."""
    reason: str
    error: str
    call: Any
    message_id: str | None = None
    meta: dict[str, Any] | None = None


def _storable(value: Any) -> str:
    try:
        return json_dumps(value)
    except TypeError:  # not JSON at all (a foreign message): keep what can be read of it
        return json_dumps(repr(value))


class _Defaults:
    """A batch's defaults, moved out of each letter's meta and kept once by their digest (the dead
    letters of a batch keep its defaults once, not once per rejected call)."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self._seen: dict[int, str | None] = {}

    def split(self, meta: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
        """The meta without its defaults, and their digest (None where there are none)."""
        meta = meta or {}
        defaults = meta.get("defaults")
        if not isinstance(defaults, dict) or not defaults:
            return meta, None
        # The letters of one message share one defaults object: hash it once.
        key = id(defaults)
        if key not in self._seen:
            try:
                canonical = orjson.dumps(defaults, option=orjson.OPT_SORT_KEYS)
            except TypeError:  # not JSON (a foreign message): stays in the letter's meta
                self._seen[key] = None
            else:
                digest = hashlib.sha256(canonical).hexdigest()
                self.rows[digest] = json_dumps(defaults)
                self._seen[key] = digest
        found = self._seen[key]
        if found is None:
            return meta, None
        return {k: v for k, v in meta.items() if k != "defaults"}, found


def letter_key(kind: str, *parts: object) -> str:
    """A dead letter's dedupe key, `kind:part:part...`: the same failing call, however often its
    message is redelivered, makes one letter whose `attempts` count up. `kind` is the reason or
    the stage that found it (`bad`, `rejected`, `failed`); parts name the app, message and call."""
    return ":".join([kind, *map(str, parts)])


def keep(conn: Connection, app_id: int | None, letters: list[LetterToKeep]) -> None:
    """Insert the letters (of `app_id`, None where the app is unknown) in the caller's
    transaction; a letter already kept counts one more attempt."""
    if not letters:
        return
    defaults = _Defaults()
    rows = []
    for d in sorted(letters, key=lambda d: d.dedupe_key):
        meta, digest = defaults.split(d.meta)
        rows.append(
            {
                "k": d.dedupe_key,
                "r": d.reason,
                "e": d.error[:2000],
                "c": _storable(d.call),
                "m": _storable(meta),
                "mid": d.message_id,
                "d": digest,
            }
        )
    if defaults.rows:
        conn.execute(
            text(
                "INSERT INTO dead_letter_defaults (digest, defaults) "
                "SELECT r.d, CAST(r.v AS jsonb) FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS r(d text, v text) ORDER BY r.d ON CONFLICT (digest) DO NOTHING"
            ),
            {"rows": json_dumps([{"d": k, "v": v} for k, v in sorted(defaults.rows.items())])},
        )
    conn.execute(
        text(
            "INSERT INTO dead_letters "
            "(app_id, dedupe_key, reason, error, call, meta, message_id, defaults_digest) "
            "SELECT :app, r.k, r.r, r.e, CAST(r.c AS jsonb), CAST(r.m AS jsonb), r.mid, r.d "
            "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
            "AS r(k text, r text, e text, c text, m text, mid text, d text) "
            "ON CONFLICT (dedupe_key) DO UPDATE SET attempts = dead_letters.attempts + 1, "
            "reason = EXCLUDED.reason, error = EXCLUDED.error, updated_at = now()"
        ),
        {"app": app_id, "rows": json_dumps(rows)},
    )
