"""Postgres down: the worker pauses, the backlog waits visible in Redis, and every
message is applied exactly once when Postgres is back.

The test runs a private Postgres of its own (initdb in a temporary directory, on a free port) so it
can stop and start it; the machine's shared Postgres is never touched.
"""

from __future__ import annotations

import base64
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis
from sqlalchemy import Engine, text

from shared.celery_app import make_celery
from shared.db import make_engine
from shared.envelope import Envelope
from shared.migrate import upgrade
from shared.queues import APPLY_TASK, INGEST
from shared.settings import Settings
from tests.support.envelopes import sealed
from tests.support.factories import make_app
from tests.support.stack import (
    free_port,
    log_records,
    stack_env,
    start_worker,
    stop,
    wait_for,
)

PAUSING = "database unreachable, pausing"


class PrivatePostgres:
    """A throwaway Postgres cluster run as the `postgres` OS user, stopped and started at will."""

    def __init__(self, initdb: Path) -> None:
        self.bin = initdb.parent
        self.dir = Path(tempfile.mkdtemp(prefix="userdest-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/userdest"
        self.running = False

    def _as_postgres(self, *args: str) -> None:
        cmd = list(args) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
            "-o", opts, "-w", "start",
        )  # fmt: skip
        self.running = True

    def stop(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
        )
        self.running = False

    def create_database(self) -> None:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE userdest")

    def remove(self) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = Path(found[-1]) if found else None
    if initdb is None:
        which = shutil.which("initdb")
        initdb = Path(which) if which else None
    if initdb is None:
        pytest.skip("no initdb binary to run a private Postgres")
    pg = PrivatePostgres(initdb)
    try:
        pg.init()
        pg.start()
        pg.create_database()
        yield pg
    finally:
        pg.remove()


def log_lines(log: Path, msg: str, request_id: str) -> list[dict[str, Any]]:
    """The worker's JSON log records with this message for this request."""
    found = []
    for line in log.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # Celery's own banner and plain-text lines
        if (
            isinstance(record, dict)
            and record.get("msg") == msg
            and record.get("request_id") == request_id
        ):
            found.append(record)
    return found


def queued_request_ids(client: redis.Redis) -> list[str]:
    """Request ids of the apply messages Redis holds: waiting in the queue or reserved, unacked."""
    raw = [*client.lrange(INGEST, 0, -1), *client.hvals("unacked")]
    ids = []
    for item in raw:
        message = orjson.loads(item)
        if isinstance(message, list):  # unacked entries are [message, exchange, routing_key]
            message = message[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = orjson.loads(body)[0]
        ids.append(args[0]["request_id"])
    return ids


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(sql)) or 0)


def test_postgres_down_message_waits_and_is_applied_once(
    private_pg: PrivatePostgres, settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    pg_settings = replace(settings, database_url=private_pg.url).verify()
    upgrade(pg_settings)
    engine = make_engine(pg_settings)
    worker: subprocess.Popen[bytes] | None = None
    celery = make_celery(pg_settings)
    log = tmp_path / "worker.log"
    try:
        app_id = make_app(engine, "pgdown")
        worker = start_worker(stack_env(settings) | {"DATABASE_URL": private_pg.url}, log)

        # Sanity: the worker applies against the private Postgres (and holds a pooled connection).
        warmup = Envelope(
            app_id=app_id,
            received_at="2026-11-28T12:00:00.000Z",
            request_id="r-warmup",
            calls=[{"type": "identify", "userId": "u0", "traits": {"name": "Zero"}}],
            message_ids=["m-warmup"],
        )
        celery.send_task(APPLY_TASK, args=[sealed(warmup)], queue=INGEST)
        wait_for(
            lambda: count(engine, "SELECT count(*) FROM processed_messages") == 1,
            timeout=30,
            what="the warm-up message to be applied",
        )

        private_pg.stop()
        outage_started = time.monotonic()
        env = Envelope(
            app_id=app_id,
            received_at="2026-11-28T12:00:01.000Z",
            request_id="r-pgdown",
            calls=[
                {"type": "page", "userId": "u1", "properties": {"url": "https://x.example/a"}},
                {"type": "page", "userId": "u1", "properties": {"url": "https://x.example/b"}},
            ],
            message_ids=["m-pgdown-1", "m-pgdown-2"],
        )
        celery.send_task(APPLY_TASK, args=[sealed(env)], queue=INGEST)
        wait_for(
            lambda: any(r.get("msg") == PAUSING for r in log_records(log)),
            timeout=20,
            what="the worker to pause while Postgres is down",
        )
        # The backlog stays visible in Redis: the worker pauses instead of pulling every message
        # into retry timers of its own. It holds at most its prefetch (WORKER_PREFETCH, 4).
        for n in range(20):
            backlog = Envelope(
                app_id=app_id,
                received_at="2026-11-28T12:00:02.000Z",
                request_id=f"r-backlog-{n}",
                calls=[{"type": "page", "userId": f"b{n % 3}"}],
                message_ids=[f"m-backlog-{n}"],
            )
            celery.send_task(APPLY_TASK, args=[sealed(backlog)], queue=INGEST)
        time.sleep(2)
        assert redis_client.llen(INGEST) >= 15, redis_client.llen(INGEST)
        assert not log_lines(log, "message dead-lettered", "r-pgdown")
        assert worker.poll() is None, "the worker died while Postgres was down"
        assert sorted(queued_request_ids(redis_client)).count("r-pgdown") == 1

        time.sleep(max(0.0, 4.0 - (time.monotonic() - outage_started)))
        private_pg.start()

        def applied() -> bool:
            return (
                count(
                    engine,
                    "SELECT count(*) FROM page_views "
                    "WHERE message_id IN ('m-pgdown-1', 'm-pgdown-2')",
                )
                == 2
            )

        wait_for(applied, timeout=90, what="the waiting message to be applied after the restart")
        wait_for(
            lambda: count(engine, "SELECT count(*) FROM processed_messages") == 23,
            timeout=90,
            what="the backlog to be applied",
        )
        wait_for(
            lambda: queued_request_ids(redis_client) == [],
            timeout=10,
            what="Redis to let go of the applied messages",
        )
        time.sleep(1)  # room for a wrong second application to show
        assert count(engine, "SELECT page_views FROM users WHERE user_id = 'u1'") == 2
        assert count(engine, "SELECT count(*) FROM page_views") == 22
        assert count(engine, "SELECT count(*) FROM processed_messages") == 23
        assert count(engine, "SELECT count(*) FROM dead_letters") == 0
        assert len(log_lines(log, "message applied", "r-pgdown")) == 1
        assert not log_lines(log, "message dead-lettered", "r-pgdown")
    finally:
        if worker is not None:
            stop(worker)
        engine.dispose()
        celery.close()
