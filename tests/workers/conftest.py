"""Fixtures for applying envelopes to the test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Connection, Engine

from shared.envelope import Envelope
from shared.settings import Settings
from tests.support.envelopes import envelope
from tests.support.factories import make_app
from workers.apply.batch import Outcome, apply_envelope
from workers.tasks import Applier


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
    return make_app(conn, "acme")


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


@pytest.fixture
def applier(clean_db: Engine, settings: Settings, redis_client: redis.Redis) -> Iterator[Applier]:
    """A worker process's applier against the committed test database and the run's Redis."""
    applier = Applier(settings)
    yield applier
    applier.close()
