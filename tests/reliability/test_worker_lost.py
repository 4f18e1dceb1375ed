"""A worker killed mid-message: the message returns to the queue and is applied exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import Engine, text

from shared.celery_app import make_celery
from shared.envelope import Envelope
from shared.queues import APPLY_TASK, INGEST
from shared.settings import Settings
from tests.support.envelopes import sealed
from tests.support.factories import make_app
from tests.support.stack import stack_env, start_worker, wait_for
from workers.apply.store import lock_key


def start_lossy_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A worker whose unacknowledged messages go back to the queue after 4 seconds."""
    return start_worker(
        stack_env(settings) | {"VISIBILITY_TIMEOUT": "4", "TASK_TIME_LIMIT": "3"}, log
    )


def test_killed_worker_message_is_redelivered_and_applied_once(
    clean_db: Engine, settings: Settings, redis_client: object, tmp_path: Path
) -> None:
    with clean_db.begin() as conn:
        app_id = make_app(conn, "lost")
    env = Envelope(
        app_id=app_id,
        received_at="2026-11-28T12:00:00.000Z",
        request_id="r-lost",
        calls=[{"type": "page", "userId": "victim", "properties": {"url": "https://x.example/"}}],
        message_ids=["m-lost"],
    )
    log = tmp_path / "worker.log"
    with clean_db.connect() as blocker:
        # Hold the lock the worker needs for this user, so it is mid-message when we kill it.
        blocker.execute(
            text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(app_id, "user", "victim")}
        )
        worker = start_lossy_worker(settings, log)
        make_celery(settings).send_task(APPLY_TASK, args=[sealed(env)], queue=INGEST)

        def waiting_on_lock() -> bool:
            return bool(
                blocker.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                )
            )

        wait_for(waiting_on_lock, timeout=60, what="the worker to block on the user's lock")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        blocker.execute(text("SELECT pg_advisory_unlock_all()"))
        blocker.commit()

    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM processed_messages")) == 0

    time.sleep(4.5)  # past the visibility timeout, the unacknowledged message is restored
    worker = start_lossy_worker(settings, log)
    try:

        def applied() -> bool:
            with clean_db.connect() as conn:
                return conn.scalar(text("SELECT count(*) FROM processed_messages")) == 1

        wait_for(applied, timeout=60, what="the redelivered message to be applied")
        time.sleep(1)
        with clean_db.connect() as conn:
            assert conn.scalar(text("SELECT page_views FROM users WHERE user_id = 'victim'")) == 1
            assert conn.scalar(text("SELECT count(*) FROM page_views")) == 1
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=20)
