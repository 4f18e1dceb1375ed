"""The parts' ceilings and the baseline, measured in the bench's process after the stack stopped.

- Redis: LPUSH of the run's own queue messages into a scratch list, from one connection, each push
  waiting for its answer as the receiver's does (and, for comparison, pipelined 100 at a time).
- Postgres: the run's calls as rows of a scratch table shaped like `events`, 100 rows per plain
  multi-row INSERT, each statement its own transaction, from one connection.
- Baseline: the workers' own `apply_messages`, one call per envelope and per transaction, in this
  process on one connection.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import psycopg
import redis
from sqlalchemy import text

from api.publish import HighWater, Publisher
from bench.load import Request
from bench.stack import bench_suppression
from shared.celery_app import make_celery
from shared.db import make_engine
from shared.envelope import Envelope
from shared.queues import INGEST
from shared.settings import Settings
from shared.timeparse import iso, utcnow
from workers.apply.messages import apply_messages, prepare

SCRATCH_LIST = "bench:scratch"
SCRATCH_TABLE = "bench_scratch_rows"
PIPELINE = 100
"""Pushes per round trip in the pipelined Redis measurement."""
ROWS_PER_INSERT = 100
"""Rows per multi-row INSERT: the size of one batch of the workload."""


def queue_messages(
    settings: Settings, client: redis.Redis, app_id: int, key_id: str, requests: list[Request]
) -> list[bytes]:
    """The bytes the receiver LPUSHes for each request, made by its own `Publisher.message`.

    The envelope is the one the receiver builds for these bodies (a single call's type comes from
    its path as `defaults`; these batches have no top-level context, integrations or sentAt), so
    only the random task, delivery and request ids and the time stamps differ from the live run.
    """
    publisher = Publisher(
        make_celery(settings),
        client,
        settings.retry_after_seconds,
        HighWater(client, settings.redis_high_water),
        settings,
    )
    messages = []
    for req in requests:
        body = orjson.loads(req.body)
        if req.path == "/v1/batch":
            calls, defaults = body["batch"], {}
        else:
            calls, defaults = [body], {"type": req.path.rsplit("/", 1)[1]}
        envelope = Envelope(
            app_id=app_id,
            received_at=iso(utcnow()),
            request_id=str(uuid.uuid4()),
            calls=calls,
            message_ids=[c["messageId"] for c in calls],
            key_id=key_id,
            remote_addr="127.0.0.1",
            source="http",
            sent_at=None,
            defaults=defaults,
        )
        messages.append(publisher.message(envelope.to_dict(), INGEST))
    return messages


def redis_pushes(client: redis.Redis, messages: list[bytes], pipeline: int) -> dict[str, Any]:
    """LPUSH every message into a scratch list; `pipeline` > 1 sends that many per round trip."""
    client.delete(SCRATCH_LIST)
    started = time.perf_counter()
    if pipeline <= 1:
        for message in messages:
            client.lpush(SCRATCH_LIST, message)
    else:
        for i in range(0, len(messages), pipeline):
            pipe = client.pipeline(transaction=False)
            for message in messages[i : i + pipeline]:
                pipe.lpush(SCRATCH_LIST, message)
            pipe.execute()
    seconds = time.perf_counter() - started
    pushed = client.llen(SCRATCH_LIST)
    client.delete(SCRATCH_LIST)
    if pushed != len(messages):
        raise RuntimeError(f"the scratch list holds {pushed} of {len(messages)} messages")
    return {
        "messages": len(messages),
        "bytes": sum(len(m) for m in messages),
        "mean_message_bytes": round(sum(len(m) for m in messages) / max(1, len(messages))),
        "seconds": round(seconds, 3),
        "pushes_per_s": round(len(messages) / seconds, 1),
        "mode": "unpipelined" if pipeline <= 1 else f"pipelined, {pipeline} per round trip",
    }


def event_rows(app_id: int, calls: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """One row per call, as `events` holds one: app, user, name, properties, time, messageId."""
    return [
        (
            app_id,
            call["userId"],
            call.get("event") or call["type"],
            orjson.dumps(call.get("properties") or call.get("traits") or {}).decode(),
            call["timestamp"],
            call["messageId"],
        )
        for call in calls
    ]


def postgres_inserts(database_url: str, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Insert `rows` into a fresh scratch table, ROWS_PER_INSERT per statement and transaction."""
    one = "(%s, %s, %s, %s::jsonb, %s::timestamptz, %s)"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        conn.execute(
            f"CREATE TABLE {SCRATCH_TABLE} (id bigserial PRIMARY KEY, app_id bigint NOT NULL, "
            "user_id text NOT NULL, name text NOT NULL, properties jsonb NOT NULL, "
            "occurred_at timestamptz NOT NULL, message_id text NOT NULL)"
        )
        columns = "app_id, user_id, name, properties, occurred_at, message_id"
        chunks = [rows[i : i + ROWS_PER_INSERT] for i in range(0, len(rows), ROWS_PER_INSERT)]
        statements = {
            # A constant table name and placeholders; the values are bound parameters.
            n: f"INSERT INTO {SCRATCH_TABLE} ({columns}) VALUES " + ", ".join([one] * n)  # noqa: S608
            for n in {len(c) for c in chunks}
        }
        params = [[v for row in chunk for v in row] for chunk in chunks]
        started = time.perf_counter()
        for chunk, values in zip(chunks, params, strict=True):
            conn.execute(statements[len(chunk)], values)
        seconds = time.perf_counter() - started
        stored = conn.execute(f"SELECT count(*) FROM {SCRATCH_TABLE}").fetchone()  # noqa: S608
        conn.execute(f"DROP TABLE {SCRATCH_TABLE}")
    if stored is None or stored[0] != len(rows):
        raise RuntimeError(f"the scratch table holds {stored} of {len(rows)} rows")
    return {
        "rows": len(rows),
        "rows_per_insert": ROWS_PER_INSERT,
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(rows) / seconds, 1),
        "mode": f"{ROWS_PER_INSERT} rows per INSERT, one transaction each, one connection",
    }


def baseline(
    settings: Settings, app_id: int, key_id: str, calls: list[dict[str, Any]]
) -> dict[str, Any]:
    """Apply each call as its own one-call envelope in its own transaction, as a naive worker would."""
    envelopes = [
        Envelope(
            app_id=app_id,
            received_at=iso(utcnow()),
            request_id=str(uuid.uuid4()),
            calls=[call],
            message_ids=[call["messageId"]],
            key_id=key_id,
            remote_addr="127.0.0.1",
            source="http",
        )
        for call in calls
    ]
    engine = make_engine(settings, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # the connection is open before the clock starts
        applied = dead = 0
        started = time.perf_counter()
        for env in envelopes:
            with engine.begin() as conn:
                outcome = apply_messages(
                    conn, [prepare(env)], isolate=False, suppression=bench_suppression()
                )
            applied += sum(outcome.applied.values())
            dead += sum(outcome.dead_letters.values())
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return {
        "calls": len(calls),
        "applied": applied,
        "dead_letters": dead,
        "seconds": round(seconds, 3),
        "calls_per_s": round(applied / seconds, 1),
        "mode": "apply_messages, one call per envelope and transaction, one process",
    }
