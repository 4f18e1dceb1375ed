"""Fixtures for applying envelopes to the test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Connection, Engine

from shared.envelope import Envelope
from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.envelopes import envelope
from tests.support.factories import make_app
from tests.support.tasks import FakeClock
from workers.applier import Applier
from workers.apply.messages import Outcome


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
def clock() -> FakeClock:
    """The appliers' clock: their waits pass at once and are recorded in `clock.sleeps`."""
    return FakeClock()


@pytest.fixture
def make_applier(
    clean_db: Engine, settings: Settings, redis_client: redis.Redis, clock: FakeClock
) -> Iterator[Callable[..., Applier]]:
    """Appliers against the committed test database and the run's Redis, with the test's clock
    and whatever other seams a test passes (`apply_group`, `keep_letters`, `engine`), and the
    test settings unless given `with_settings`."""
    made: list[Applier] = []

    def make(with_settings: Settings | None = None, **seams: Any) -> Applier:
        seams.setdefault("clock", clock)
        made.append(Applier(with_settings or settings, **seams))
        return made[-1]

    yield make
    for applier in made:
        applier.close()


@pytest.fixture
def applier(make_applier: Callable[..., Applier]) -> Applier:
    """A worker process's applier, as a worker makes it, with the test's clock."""
    return make_applier()
