"""Envelopes as the receiver makes them, for tests that apply calls directly, and signed as a
worker takes them from a queue."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import orjson

from shared.envelope import Envelope, EnvelopeKeys
from shared.settings import Settings
from tests.support.db import SECRETS

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


KEYS = EnvelopeKeys.of(Settings(**SECRETS))
"""The test settings' envelope keys (every test process's settings carry SECRETS)."""


def sealed(env: Envelope | dict[str, Any], keys: EnvelopeKeys = KEYS) -> dict[str, Any]:
    """The envelope as a worker's task gets it from a queue: signed (its `mac` last) by `keys`,
    the tests' ENVELOPE_SECRET unless given."""
    data = env.to_dict() if isinstance(env, Envelope) else env
    return dict(orjson.loads(keys.seal(data)))
