"""Real workers applying groups of queued messages: killed mid-transaction,
fed poison, starved of Redis memory. Every call is counted: applied exactly once, or kept."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, text

from shared import wire
from shared.celery_app import make_celery
from shared.envelope import Envelope
from shared.publish import Publisher
from shared.queues import INGEST, REPLAY
from shared.settings import Settings
from shared.wire import GROUP_PREFIX, UNACKED
from tests.support.factories import make_app
from tests.support.stack import (
    PrivateRedis,
    free_port,
    log_records,
    stack_env,
    start_worker,
    stop,
    wait_for,
)
from workers.apply.store import lock_key

pytestmark = pytest.mark.e2e


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(sql)) or 0)


def env(app_id: int, calls: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
    return Envelope(
        app_id=app_id,
        received_at="2026-11-28T12:00:00.000Z",
        request_id=request_id or str(uuid.uuid4()),
        calls=calls,
        message_ids=[str(uuid.uuid4()) for _ in calls],
        remote_addr="203.0.113.77",
    ).to_dict()


def page(user: str) -> dict[str, Any]:
    return {"type": "page", "userId": user, "properties": {"url": "https://x.example/"}}


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def waiting_on_lock(engine: Engine) -> bool:
    return bool(
        count(
            engine,
            # pg_locks is the whole server's: other test runs on it wait on advisory locks too.
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    )


def fill(publisher: Publisher, app_id: int) -> int:
    """One-call messages and 100-call messages mixed, every one touching `victim`; the calls."""
    calls = 0
    for i in range(60):
        if i % 20 == 5:
            publisher.publish(
                env(app_id, [page(f"u{j % 13}") for j in range(99)] + [page("victim")]), INGEST
            )
            calls += 100
        else:
            publisher.publish(env(app_id, [page("victim" if i % 2 else f"u{i % 7}")]), INGEST)
            calls += 1
    return calls


@pytest.mark.parametrize("kill", ["the worker process", "the whole worker"])
def test_a_worker_killed_mid_transaction_loses_nothing_and_doubles_nothing(
    kill: str, clean_db: Engine, settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    app_id = make_app(clean_db, "killed")
    publisher = Publisher(make_celery(settings), redis_client, settings)
    calls = fill(publisher, app_id)
    log = tmp_path / "worker.log"
    worker_env = stack_env(settings) | {"VISIBILITY_TIMEOUT": "6", "TASK_TIME_LIMIT": "5"}
    worker = None
    try:
        worker, taken = _kill_mid_transaction(kill, app_id, clean_db, redis_client, worker_env, log)
        assert taken > 10, "the group took many messages"
        assert count(clean_db, "SELECT count(*) FROM processed_messages") == 0
        if kill == "the whole worker":
            time.sleep(6.5)  # past the visibility timeout: a new worker restores what was taken
            worker = start_worker(worker_env, log)
        wait_for(
            lambda: count(clean_db, "SELECT count(*) FROM processed_messages") == calls,
            timeout=90,
            what="every call to be applied",
        )
        wait_for(
            lambda: redis_client.hlen(UNACKED) == 0, timeout=20, what="every message acknowledged"
        )
        time.sleep(1)  # room for a wrong second application to show
    finally:
        if worker is not None:
            stop(worker)
    assert count(clean_db, "SELECT sum(page_views) FROM users") == calls
    assert count(clean_db, "SELECT count(*) FROM page_views") == calls
    assert count(clean_db, "SELECT page_views FROM users WHERE user_id = 'victim'") == 30
    assert count(clean_db, "SELECT count(*) FROM dead_letters") == 0
    assert redis_client.llen(INGEST) == 0 and not redis_client.keys(GROUP_PREFIX + "*")


def _kill_mid_transaction(
    kill: str,
    app_id: int,
    clean_db: Engine,
    redis_client: redis.Redis,
    worker_env: dict[str, str],
    log: Path,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a worker, wait until a group blocks mid-transaction, SIGKILL; (worker, taken)."""
    with clean_db.connect() as blocker:
        # Hold the lock of a user every group needs: the first group blocks mid-transaction.
        blocker.execute(
            text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(app_id, "user", "victim")}
        )
        worker = start_worker(worker_env, log)
        try:
            wait_for(
                lambda: waiting_on_lock(clean_db),
                timeout=60,
                what="a group to block mid-transaction",
            )
            assert redis_client.keys(GROUP_PREFIX + "*"), "the blocked transaction holds a group"
            taken = redis_client.hlen(UNACKED)
            if kill == "the worker process":
                [child] = children(worker.pid)
                os.kill(child, signal.SIGKILL)
            else:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
        except BaseException:
            stop(worker)
            raise
        finally:
            blocker.execute(text("SELECT pg_advisory_unlock_all()"))
            blocker.commit()
    return worker, taken


def test_poison_messages_are_set_aside_and_the_worker_lives(
    clean_db: Engine, settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    app_id = make_app(clean_db, "poison")
    publisher = Publisher(make_celery(settings), redis_client, settings)

    def poison() -> list[bytes]:
        """Eight messages a worker cannot apply, each with ids of its own; one good call."""
        foreign = orjson.loads(publisher.message(env(app_id, [page("x")]), INGEST))
        foreign["headers"]["task"] = "someone.else"
        bad_body = orjson.loads(publisher.message(env(app_id, [page("y")]), INGEST))
        bad_body["body"] = "bm90IGpzb24gczNjcjN0LWJvZHk="  # base64 of 'not json s3cr3t-body'
        return [
            b"not json s3cr3t-raw",
            b'["s3cr3t-array"]',
            b'{"headers": "s3cr3t-shape"}',
            orjson.dumps(foreign),
            orjson.dumps(bad_body),
            publisher.message({**env(app_id, [page("v2")]), "v": 2}, INGEST),
            publisher.message(env(424242, [page("gone")]), INGEST),
            publisher.message({**env(app_id, [page("ok")]), "rejected": [["s3cr3t-rej"]]}, INGEST),
        ]

    log = tmp_path / "worker.log"
    worker = start_worker(stack_env(settings), log, "ingest,replay")
    try:
        # Each alone (a leader, through Celery) and then all together (taken into groups).
        for item in poison():
            redis_client.lpush(INGEST, item)
            time.sleep(0.3)
        publisher.publish(env(app_id, [page("ok-1")]), INGEST)
        wait_for(
            lambda: count(clean_db, "SELECT count(*) FROM processed_messages") == 2,
            timeout=60,
            what="the good messages",
        )
        redis_client.lpush(INGEST, *poison())
        publisher.publish(env(app_id, [page("ok-3")]), REPLAY)
        wait_for(
            lambda: count(clean_db, "SELECT count(*) FROM dead_letters") >= 16,
            timeout=60,
            what="the poison kept",
        )
        wait_for(
            lambda: count(clean_db, "SELECT count(*) FROM processed_messages") == 4,
            timeout=60,
            what="the good messages",
        )
        time.sleep(1)
        assert worker.poll() is None, "the worker died"
    finally:
        stop(worker)
    with clean_db.connect() as conn:
        reasons = sorted(r[0] for r in conn.execute(text("SELECT reason FROM dead_letters")))
    assert reasons == sorted(
        ["not_json", "not_json", "not_ours", "not_ours", "not_ours", "envelope_version",
         "unknown_app", "rejected"] * 2
    )  # fmt: skip
    text_log = log.read_text()
    assert "s3cr3t" not in text_log and "203.0.113.77" not in text_log
    assert "Unrecoverable error" not in text_log
    applied = [r for r in log_records(log) if r.get("msg") == "message applied"]
    assert applied and all(r.get("app_id") == app_id and r.get("message_ids") for r in applied)


def test_a_real_worker_refuses_forged_messages_and_applies_signed_ones(
    clean_db: Engine, settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Through Celery (a leader) and taken behind one: a deletion pushed into Redis without the
    secret erases nobody; a signed call holding what kombu's JSON would turn into a datetime
    applies."""
    app_id = make_app(clean_db, "victim")
    publisher = Publisher(make_celery(settings), redis_client, settings)
    celery = make_celery(settings)
    identify = {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}
    deletion = {**env(app_id, [{"type": "delete", "userId": "u1"}]), "source": "webhook"}

    def forged() -> bytes:
        """A task message of its own (LPUSHed by someone with Redis's password)."""
        return wire.encode(wire.task_message(celery, deletion, INGEST, "[x]"))

    typed = {"__type__": "datetime", "__value__": "2020-01-01T00:00:00"}
    odd = {"type": "track", "userId": "u2", "event": "E", "properties": {"when": typed}}

    log = tmp_path / "worker.log"
    worker = start_worker(stack_env(settings), log, "ingest")
    try:
        publisher.publish(env(app_id, [identify]), INGEST)
        wait_for(
            lambda: count(clean_db, "SELECT count(*) FROM users") == 1,
            timeout=60,
            what="the person to exist",
        )
        redis_client.lpush(INGEST, forged())  # alone: the leader Celery delivers
        publisher.publish(env(app_id, [odd]), INGEST)
        wait_for(
            lambda: count(clean_db, "SELECT count(*) FROM processed_messages") == 2,
            timeout=60,
            what="the signed messages",
        )
        redis_client.lpush(
            INGEST,
            publisher.message(env(app_id, [page("u3")]), INGEST),
            forged(),  # taken behind a leader this time
            publisher.message(env(app_id, [page("u4")]), INGEST),
        )
        wait_for(
            lambda: (
                count(clean_db, "SELECT count(*) FROM processed_messages") == 4
                and count(clean_db, "SELECT count(*) FROM dead_letters") == 2
            ),
            timeout=60,
            what="the rest",
        )
    finally:
        stop(worker)
        celery.close()
    assert count(clean_db, "SELECT count(*) FROM users WHERE user_id = 'u1'") == 1
    assert count(clean_db, "SELECT count(*) FROM suppressed_ids") == 0
    with clean_db.connect() as conn:
        reasons = [r[0] for r in conn.execute(text("SELECT reason FROM dead_letters"))]
    assert reasons == ["unsigned_envelope"] * 2
    refused = [r for r in log_records(log) if str(r.get("msg", "")).startswith("message refused")]
    assert len(refused) == 2 and all(r.get("app_id") == app_id for r in refused)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode:
        pytest.skip("no redis-server to run a private Redis")
    server = PrivateRedis(free_port(), tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_a_full_redis_loses_no_message_a_worker_takes(
    private_redis: PrivateRedis, clean_db: Engine, settings: Settings, tmp_path: Path
) -> None:
    app_id = make_app(clean_db, "full")
    full = replace(settings, redis_url=private_redis.url).verify()
    publisher = Publisher(make_celery(full), private_redis.client, full)
    for i in range(40):
        publisher.publish(env(app_id, [page(f"u{i % 5}")]), INGEST)
    private_redis.fill_to_the_limit()
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        private_redis.client.lpush("probe", b"x")
    log = tmp_path / "worker.log"
    worker = start_worker(stack_env(full), log)
    try:
        wait_for(
            lambda: count(clean_db, "SELECT count(*) FROM processed_messages") == 40,
            timeout=90,
            what="every message applied",
        )
        time.sleep(1)
        assert worker.poll() is None, "the worker died"
    finally:
        stop(worker)
    assert count(clean_db, "SELECT sum(page_views) FROM users") == 40
    assert private_redis.client.llen(INGEST) == 0 and private_redis.client.hlen(UNACKED) == 0
    assert "OutOfMemoryError" not in log.read_text() or "Unrecoverable" not in log.read_text()
