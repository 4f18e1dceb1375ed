"""Dead letters: calls kept in Postgres with their reason, for an operator to inspect and replay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from shared.db import json_dumps


@dataclass(frozen=True, slots=True)
class LetterToKeep:
    dedupe_key: str
    """One row per failing call however often its message is redelivered; a repeat bumps attempts."""
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


def store(conn: Connection, app_id: int | None, letters: list[LetterToKeep]) -> None:
    if not letters:
        return
    rows = [
        {
            "k": d.dedupe_key,
            "r": d.reason,
            "e": d.error[:2000],
            "c": _storable(d.call),
            "m": _storable(d.meta or {}),
            "mid": d.message_id,
        }
        for d in sorted(letters, key=lambda d: d.dedupe_key)
    ]
    conn.execute(
        text(
            "INSERT INTO dead_letters (app_id, dedupe_key, reason, error, call, meta, message_id) "
            "SELECT :app, r.k, r.r, r.e, CAST(r.c AS jsonb), CAST(r.m AS jsonb), r.mid "
            "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
            "AS r(k text, r text, e text, c text, m text, mid text) "
            "ON CONFLICT (dedupe_key) DO UPDATE SET attempts = dead_letters.attempts + 1, "
            "reason = EXCLUDED.reason, error = EXCLUDED.error, updated_at = now()"
        ),
        {"app": app_id, "rows": json_dumps(rows)},
    )
