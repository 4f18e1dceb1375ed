"""How fast a worker drains a backlog: `python -m bench.drain [--batch 100] -- -c 2`.

`make bench` runs it twice on the same calls after its stack has stopped, once as one-call messages
and once as batches of 100 (a call must cost about the same either way), and reports the
ratio of the two rates and the batch rate's ratio to the Postgres ceiling. A worker
(`celery -A workers worker -Q ingest`, WORKER_PROCESSES processes unless told otherwise) is started
against the bench's own database and Redis database and warmed up on another app; then the
messages, made by the receiver's own publisher, are pushed at once (pipelined) and the clock runs
from the first push to the last call applied (polling `processed_messages`).

Alone, it recreates the bench's database (BENCH_DATABASE) and Redis database (BENCH_REDIS_DB),
generates N calls of the bench's mix, and prints the rate and, with --ceiling, the Postgres
ceiling of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench import ceilings
from bench.load import Request, batch_requests, single_requests
from bench.stack import (
    BIN,
    ROOT,
    WORKER_PROCESSES,
    BenchError,
    Target,
    flush_redis,
    recreate_database,
    target_from_env,
)
from bench.workload import generate
from shared.db import make_engine
from shared.queues import INGEST
from shared.tenancy import create_key
from shared.tenancy import new_app as create_app

PUSH_PIPELINE = 1000
POLL_SECONDS = 0.05


def new_app(engine: Engine, name: str) -> tuple[int, str]:
    with Session(engine) as session:
        app = create_app(session, name)
        key = create_key(session, app)
        session.commit()
        return app.id, key.key_id


def drain(
    target: Target,
    engine: Engine,
    client: redis.Redis,
    requests: list[Request],
    name: str,
    logs: Path,
    worker_args: tuple[str, ...] = ("-c", str(WORKER_PROCESSES)),
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Push `requests` as the receiver would queue them, for a fresh app, onto a warm worker; the
    calls per second from the first push to the last call applied."""
    settings = target.settings()
    app_id, key_id = new_app(engine, f"drain-{name}")
    warm_id, warm_key = new_app(engine, f"drain-{name}-warmup")
    messages = ceilings.queue_messages(settings, client, app_id, key_id, requests)
    warm = single_requests(generate(7, 5, 5))
    warm_messages = ceilings.queue_messages(settings, client, warm_id, warm_key, warm)
    calls = sum(r.calls for r in requests)
    client.delete(INGEST)
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DATABASE_URL": target.database_url, "REDIS_URL": target.redis_url}
    command = [str(BIN / "celery"), "-A", "workers", "worker", "-Q", INGEST, *worker_args,
               "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]  # fmt: skip
    with (logs / f"drain-{name}-worker.log").open("wb") as log:
        worker = subprocess.Popen(  # noqa: S603 (our own venv's celery)
            command, cwd=ROOT, env=env | {"LOG_LEVEL": "WARNING"}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        # Dedupe records are keyed by a hash (shared/dedupe.py), not by app: count them all, from
        # what earlier runs left.
        before = _applied(engine)
        client.lpush(INGEST, *warm_messages)
        _wait(engine, worker, before + len(warm_messages), timeout)
        started = time.perf_counter()
        for i in range(0, len(messages), PUSH_PIPELINE):
            client.lpush(INGEST, *messages[i : i + PUSH_PIPELINE])
        _wait(engine, worker, before + len(warm_messages) + calls, timeout)
        seconds = time.perf_counter() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
    return {
        "calls": calls,
        "messages": len(messages),
        "seconds": round(seconds, 3),
        "calls_per_s": round(calls / seconds, 1),
        "worker": " ".join(worker_args),
        "mode": "backlog pushed at once onto a warm worker; first push to last call applied",
    }


def _applied(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM processed_messages")) or 0)


def _wait(engine: Engine, worker: subprocess.Popen[bytes], expected: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        if _applied(engine) >= expected:
            return
        if worker.poll() is not None:
            raise BenchError(f"the drain worker stopped with exit code {worker.returncode}")
        if time.perf_counter() > deadline:
            raise BenchError(
                f"the drain worker did not apply {expected:,} calls in {timeout:.0f} s"
            )
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--calls", type=int, default=4000, help="calls (4000)")
    parser.add_argument("--batch", type=int, default=1, help="calls per message (1)")
    parser.add_argument("--ceiling", action="store_true", help="also the Postgres ceiling")
    parser.add_argument(
        "--users", type=int, default=1000, help="users the calls are spread over (1000)"
    )
    parser.add_argument("worker_args", nargs="*", default=["-c", str(WORKER_PROCESSES)])
    opts = parser.parse_args(argv)

    target = target_from_env(os.environ)
    recreate_database(target)
    client = flush_redis(target)
    engine = make_engine(target.settings(), pool_size=1)
    calls = generate(20260105, opts.users, opts.calls)
    requests = single_requests(calls) if opts.batch == 1 else batch_requests(calls, opts.batch)
    try:
        figures = drain(target, engine, client, requests, f"b{opts.batch}",
                        ROOT / "bench-results" / "logs", tuple(opts.worker_args))  # fmt: skip
        if opts.ceiling:
            rows = ceilings.event_rows(0, calls)
            figures["postgres_rows_per_s"] = ceilings.postgres_inserts(target.database_url, rows)[
                "rows_per_s"
            ]
    finally:
        engine.dispose()
        client.close()
    print(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
