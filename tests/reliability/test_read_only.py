"""A worker pointed at a node that takes no writes (a standby, a primary demoted in a failover)
waits for a primary as for an outage: no hot loop, no dead letter, everything applied once the
node takes writes again. The node is the test's own database set read-only for new sessions, as
a standby answers: SQLSTATE 25006 on the first write."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from shared.celery_app import make_celery
from shared.publish import Publisher
from shared.queues import INGEST
from shared.settings import Settings
from tests.support.envelopes import envelope
from tests.support.receiver import make_tenant
from tests.support.stack import log_records, stack_env, start_worker, stop, wait_for

pytestmark = pytest.mark.e2e


def _read_only(engine: Engine, on: bool) -> None:
    with engine.connect() as conn:
        name = conn.scalar(text("SELECT current_database()"))
        value = "on" if on else "off"
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}'))
        conn.commit()


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        conn.execute(text("SET default_transaction_read_only = off"))
        return int(conn.scalar(text(sql)) or 0)


def test_a_worker_on_a_read_only_node_waits_without_spinning(
    clean_db: Engine, settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    tenant = make_tenant(clean_db)
    publisher = Publisher(make_celery(settings), redis_client, settings)
    calls = [{"type": "track", "userId": f"u{i}", "event": "Paid"} for i in range(10)]
    publisher.publish_many([envelope(tenant.app_id, [c]).to_dict() for c in calls], INGEST)
    log = tmp_path / "worker.log"
    _read_only(clean_db, True)
    worker = None
    try:
        worker = start_worker(stack_env(settings), log)
        wait_for(
            lambda: any(r.get("msg", "").endswith("pausing") for r in log_records(log)),
            timeout=60,
            what="the worker to pause",
        )
        time.sleep(10)  # what it does meanwhile is counted below
        attempts = [r for r in log_records(log) if r.get("levelname", r.get("level")) != "INFO"]
        _read_only(clean_db, False)
        wait_for(
            lambda: _count(clean_db, "SELECT count(*) FROM processed_messages") == 10,
            timeout=60,
            what="every message to be applied",
        )
        assert worker.poll() is None
    finally:
        _read_only(clean_db, False)
        if worker is not None:
            stop(worker)
    # One pause, its probes quiet: not thousands of failures in a loop.
    assert len(attempts) < 20, [r.get("msg") for r in attempts][:30]
    assert _count(clean_db, "SELECT count(*) FROM dead_letters") == 0
    assert _count(clean_db, "SELECT count(*) FROM events") == 10
