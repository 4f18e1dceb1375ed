"""The real stack: gunicorn serving the receiver, a Celery worker process, Redis and Postgres."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.settings import Settings
from tests.support.stack import BIN, ROOT, answers, free_port, stack_env, start_worker, wait_for


@pytest.fixture
def stack(
    clean_db: Engine, settings: Settings, redis_client: object, tmp_path: Path
) -> Iterator[str]:
    """Start gunicorn and a worker against the test database and Redis; yield the receiver's URL."""
    port = free_port()
    env = stack_env(settings)
    with (tmp_path / "receiver.log").open("wb") as log:
        receiver = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:api.gunicorn_conf", "-b", f"127.0.0.1:{port}", "-w", "2", "api:create_app()"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    procs = [receiver, start_worker(env, tmp_path / "worker.log", "ingest,replay")]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url + "/healthz"), what="the receiver")
        yield url
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
