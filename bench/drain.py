"""How fast one worker drains a backlog of one-call messages: `python -m bench.drain -c 4`.

The part of `make bench` that limits end to end is the workers' rate on one-call messages; this
isolates it to compare worker settings (`-c`, `-P`, WORKER_PREFETCH). It fills the bench's own
Redis database (BENCH_REDIS_DB) with N one-call messages made by the receiver's publisher, starts
`celery -A workers worker -Q ingest` with the given options against the bench's own database
(BENCH_DATABASE, recreated), and prints calls/s from the worker's start to the last call applied.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import uuid
from typing import Any

from sqlalchemy import text

from bench.stack import BIN, ROOT, flush_redis, recreate_database, target_from_env
from shared.celery_app import make_celery
from shared.db import make_engine
from shared.envelope import Envelope
from shared.publish import Publisher
from shared.queues import INGEST

KINDS = ("track",) * 6 + ("page",) * 3 + ("identify",)


def one_call(i: int) -> dict[str, Any]:
    """The bench's mix over 1,000 users: 60 % track, 30 % page, 10 % identify."""
    kind = KINDS[i % len(KINDS)]
    call: dict[str, Any] = {
        "type": kind,
        "userId": f"user-{i % 1000}",
        "anonymousId": f"anon-{i % 1000}",
    }
    if kind == "track":
        call |= {"event": f"Event {i % 5}", "properties": {"amount": str(i)}}
    elif kind == "identify":
        call |= {"traits": {"email": f"user-{i % 1000}@example.com"}}
    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--calls", type=int, default=4000, help="one-call messages (4000)")
    parser.add_argument("worker_args", nargs="*", default=["-c", "4"], help="celery worker options")
    opts = parser.parse_args(argv)

    target = target_from_env(os.environ)
    recreate_database(target)
    client = flush_redis(target)
    engine = make_engine(target.settings())
    with engine.begin() as conn:
        app_id = int(conn.scalar(text("INSERT INTO apps (name) VALUES ('drain') RETURNING id")))
    publisher = Publisher(make_celery(target.settings()), client)
    for i in range(opts.calls):
        env = Envelope(
            app_id=app_id,
            received_at="2026-11-28T12:00:00.000Z",
            request_id=str(i),
            calls=[one_call(i)],
            message_ids=[str(uuid.uuid4())],
        )
        publisher.publish(env.to_dict(), INGEST)

    env_vars = {**os.environ, "DATABASE_URL": target.database_url, "REDIS_URL": target.redis_url}
    command = [str(BIN / "celery"), "-A", "workers", "worker", "-Q", INGEST, *opts.worker_args,
               "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]  # fmt: skip
    started = time.perf_counter()
    worker = subprocess.Popen(  # noqa: S603 (our own venv's celery)
        command, cwd=ROOT, env=env_vars, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        applied = 0
        while applied < opts.calls:
            time.sleep(0.2)
            if worker.poll() is not None:
                print(f"the worker stopped with exit code {worker.returncode}")
                return 1
            with engine.connect() as conn:
                applied = int(conn.scalar(text("SELECT count(*) FROM processed_messages")) or 0)
        seconds = time.perf_counter() - started
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=30)
        engine.dispose()
        client.close()
    print(f"{' '.join(opts.worker_args)}: {opts.calls / seconds:.0f} one-call messages/s "
          f"({opts.calls} in {seconds:.1f} s, worker start included)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
