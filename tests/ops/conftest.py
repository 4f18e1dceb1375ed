"""Fixtures for the operator side: the CLI against the run's database and Redis, and an app."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import Engine

from shared.settings import Settings
from tests.support.cli import Invoke, invoker
from tests.support.factories import make_app


@pytest.fixture
def invoke(settings: Settings) -> Invoke:
    return invoker(settings)


@pytest.fixture
def shop(clean_db: Engine, redis_client: redis.Redis) -> int:
    """The id of an app named `shop`, with the run's Redis database emptied."""
    return make_app(clean_db, "shop")
