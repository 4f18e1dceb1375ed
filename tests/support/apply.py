"""Applying one envelope as a worker would, inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from shared.envelope import Envelope
from tests.support.db import SUPPRESSION
from tests.support.envelopes import KEYS
from workers.apply.messages import Outcome, apply_messages, prepare


def apply_envelope(conn: Connection, env: Envelope, delivery_id: str | None = None) -> Outcome:
    """The envelope as a group of one, its bad calls kept as dead letters; the caller commits."""
    return apply_messages(conn, [prepare(env, delivery_id)], suppression=SUPPRESSION)


def apply_queued(conn: Connection, data: Any, delivery_id: str | None = None) -> Outcome:
    """An envelope as taken from a queue: refused (SignatureError) unless the tests'
    ENVELOPE_SECRET signed it, as a worker refuses it, then applied as a group of one."""
    KEYS.verify(data)
    return apply_envelope(conn, Envelope.from_dict(data), delivery_id)
