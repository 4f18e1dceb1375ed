"""Applying one envelope as a worker would, inside the caller's transaction."""

from __future__ import annotations

from sqlalchemy import Connection

from shared.envelope import Envelope
from tests.support.db import SUPPRESSION
from workers.apply.messages import Outcome, apply_messages, prepare


def apply_envelope(conn: Connection, env: Envelope, delivery_id: str | None = None) -> Outcome:
    """The envelope as a group of one, its bad calls kept as dead letters; the caller commits."""
    return apply_messages(conn, [prepare(env, delivery_id)], suppression=SUPPRESSION)
