"""Fixtures for the receiver: a committed tenant, the app against the run's Redis and Postgres."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from api import create_app
from api.views import Receiver
from shared.settings import Settings
from tests.support.receiver import Tenant, basic, jdump, make_tenant, queued


@pytest.fixture
def tenant(clean_db: Engine) -> Tenant:
    return make_tenant(clean_db)


@pytest.fixture
def make_receiver(settings: Settings) -> Iterator[Callable[..., Flask]]:
    """Builds receiver apps (settings may be overridden) and closes their pools afterwards."""
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app(Settings(**{**_fields(settings), **overrides}))
        made.append(app)
        return app

    yield make
    for app in made:
        receiver: Receiver = app.extensions["userdest"]
        receiver.close()


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


@pytest.fixture
def receiver_app(make_receiver: Callable[..., Flask]) -> Flask:
    return make_receiver()


@pytest.fixture
def client(receiver_app: Flask, redis_client: redis.Redis) -> FlaskClient:
    """A test client; the run's Redis database is emptied first (redis_client)."""
    return receiver_app.test_client()


@pytest.fixture
def send(client: FlaskClient, tenant: Tenant) -> Callable[..., Any]:
    """POST a JSON body with the tenant's key in Basic auth (unless headers say otherwise)."""

    def post(path: str, body: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        all_headers = {**basic(tenant.api_key), **(headers or {})}
        data = body if isinstance(body, bytes) else jdump(body)
        return client.post(path, data=data, headers=all_headers, **kwargs)

    return post


@pytest.fixture
def ingest_queue(redis_client: redis.Redis) -> Callable[[], list[dict[str, Any]]]:
    """The envelopes waiting on the `ingest` queue, oldest first."""
    return lambda: queued(redis_client)
