"""The apply path's own cost, without Celery or Redis: `python -m bench.apply`.

Applies rounds of 10,000 calls of the bench's mix over 2,000 users through `apply_messages`, in
groups of five messages of 100 calls, one transaction a group (as a worker's first attempt applies
them), in one process against the bench's own database (BENCH_DATABASE, made anew). Prints the
seconds of each round and the median of all but the first (which creates the profiles). Run it
before and after a change to the apply path, in the same sitting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from sqlalchemy import text

from bench.stack import bench_suppression, recreate_database, target_from_env
from bench.workload import generate
from shared.db import make_engine
from shared.envelope import Envelope
from workers.apply.messages import apply_messages, prepare

CALLS = 10_000
USERS = 2_000
PER_MESSAGE = 100
PER_GROUP = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 10,000 calls (5)")
    args = parser.parse_args()
    target = target_from_env(os.environ)
    recreate_database(target)
    engine = make_engine(target.settings())
    suppression = bench_suppression()
    seconds = []
    try:
        with engine.begin() as conn:
            app_id = int(conn.scalar(text("INSERT INTO apps (name) VALUES ('apply') RETURNING id")))
        for round_ in range(args.rounds):
            calls = generate(100 + round_, USERS, CALLS)
            messages = [calls[i : i + PER_MESSAGE] for i in range(0, CALLS, PER_MESSAGE)]
            started = time.perf_counter()
            for i in range(0, len(messages), PER_GROUP):
                group = [
                    prepare(
                        Envelope(
                            app_id=app_id,
                            received_at="2026-11-28T12:00:00.000Z",
                            request_id=f"r{round_}-{i + k}",
                            calls=m,
                            message_ids=[c["messageId"] for c in m],
                        )
                    )
                    for k, m in enumerate(messages[i : i + PER_GROUP])
                ]
                with engine.begin() as conn:
                    apply_messages(conn, group, suppression=suppression, isolate=False)
            seconds.append(time.perf_counter() - started)
    finally:
        engine.dispose()
    median = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    print({"rounds_s": [round(s, 3) for s in seconds], "median_s": round(median, 3),
           "calls_per_s": round(CALLS / median)})  # fmt: skip


if __name__ == "__main__":
    main()
