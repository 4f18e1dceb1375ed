"""Envelopes as the receiver makes them, for tests that apply calls directly."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from shared.envelope import Envelope

_counter = itertools.count()


def envelope(
    app_id: int, calls: list[Any], received_at: str = "2026-11-28T12:00:00.000Z", **kw: Any
) -> Envelope:
    """An envelope as the receiver makes it; calls without a messageId get a fresh one."""
    ids = [
        c.get("messageId")
        if isinstance(c, dict) and isinstance(c.get("messageId"), str)
        else str(uuid.uuid4())
        for c in calls
    ]
    return Envelope(
        app_id=app_id,
        received_at=received_at,
        request_id=f"req-{next(_counter)}",
        calls=calls,
        message_ids=ids,
        **kw,
    )
