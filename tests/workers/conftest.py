"""Fixtures for applying envelopes to the test database."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from shared.envelope import Envelope
from workers.apply.batch import Outcome, apply_envelope

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
_counter = itertools.count()


def fixture_call(name: str) -> dict[str, Any]:
    """A call from ../shared/fixtures without its `_about`."""
    call = json.loads((FIXTURES / name).read_text())
    call.pop("_about", None)
    return call


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


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction rolled back after the test."""
    with engine.connect() as connection:
        trans = connection.begin()
        try:
            yield connection
        finally:
            trans.rollback()


@pytest.fixture
def app_id(conn: Connection) -> int:
    return int(conn.scalar(text("INSERT INTO apps (name) VALUES ('acme') RETURNING id")))


@pytest.fixture
def apply(conn: Connection, app_id: int) -> Callable[..., Outcome]:
    """Apply calls (or an Envelope) to the test app, as a worker would."""

    def run(*calls: Any, **kw: Any) -> Outcome:
        env = (
            calls[0]
            if calls and isinstance(calls[0], Envelope)
            else envelope(app_id, list(calls), **kw)
        )
        return apply_envelope(conn, env)

    return run
