"""The real stack: gunicorn serving the receiver, a Celery worker process, Redis and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.settings import Settings
from tests.support.stack import receiver, stack_env, start_worker, stop


@pytest.fixture
def stack(
    clean_db: Engine, settings: Settings, redis_client: object, tmp_path: Path
) -> Iterator[str]:
    """Start gunicorn and a worker against the test database and Redis; yield the receiver's URL."""
    env = stack_env(settings)
    worker = start_worker(env, tmp_path / "worker.log", "ingest,replay")
    try:
        with receiver(env, tmp_path / "receiver.log", "--workers", "2") as url:
            yield url
    finally:
        stop(worker)
