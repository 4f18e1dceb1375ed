"""What user agents cost a worker: `python -m bench.useragents`.

Applies, in one worker process, a batch of identify calls that all carry one browser's user agent
(what a normal batch holds) and batches whose every call carries a user agent never seen before (a
sender who wants to make the shared workers slow), each inside a transaction that is rolled back,
against the bench's own database (BENCH_DATABASE, recreated). Prints the worker seconds per batch
of each and their ratio; the same run measures both, so the ratio holds on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import random
import string
import time
import uuid
from typing import Any

from sqlalchemy import text

from bench.stack import bench_suppression, recreate_database, target_from_env
from shared.db import make_engine
from shared.envelope import Envelope
from workers.apply.messages import apply_messages, prepare
from workers.useragents import parse_user_agent

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36"
)


def junk_agent(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(string.ascii_letters + " ;/()._-") for _ in range(size))


def batch(app_id: int, agents: list[str]) -> Envelope:
    calls: list[dict[str, Any]] = [
        {"type": "identify", "userId": f"ua-{i}", "context": {"userAgent": agent}}
        for i, agent in enumerate(agents)
    ]
    return Envelope(
        app_id=app_id,
        received_at="2026-11-28T12:00:00.000Z",
        request_id=str(uuid.uuid4()),
        calls=calls,
        message_ids=[str(uuid.uuid4()) for _ in calls],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.useragents", description=__doc__)
    parser.add_argument("--calls", type=int, default=100, help="calls per batch (100)")
    parser.add_argument("--batches", type=int, default=5, help="batches of each kind (5)")
    parser.add_argument("--size", type=int, default=1000, help="characters of a junk agent (1000)")
    opts = parser.parse_args(argv)

    target = target_from_env(os.environ)
    recreate_database(target)
    engine = make_engine(target.settings())
    with engine.begin() as conn:
        app_id = int(conn.scalar(text("INSERT INTO apps (name) VALUES ('ua') RETURNING id")))
    rng = random.Random(8)  # noqa: S311 (junk, not secrets)
    parse_user_agent(CHROME)  # load the parser's rules once, outside the timings

    def seconds(agents: list[str]) -> float:
        env = batch(app_id, agents)
        with engine.connect() as conn, conn.begin() as transaction:
            started = time.process_time()
            apply_messages(conn, [prepare(env)], suppression=bench_suppression())
            spent = time.process_time() - started
            transaction.rollback()
        return spent

    normal, unique = [], []
    for _ in range(opts.batches):
        normal.append(seconds([CHROME] * opts.calls))
        unique.append(seconds([junk_agent(rng, opts.size) for _ in range(opts.calls)]))
    engine.dispose()
    median = sorted(normal)[len(normal) // 2], sorted(unique)[len(unique) // 2]
    print(
        f"worker CPU seconds per batch of {opts.calls} identify calls (median of "
        f"{opts.batches}): one user agent {median[0]:.3f} s; every agent new "
        f"({opts.size} chars) {median[1]:.3f} s; ratio {median[1] / median[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
