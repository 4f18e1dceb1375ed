"""How long a flush takes to write its history rows: `python -m bench.history`.

One worker transaction of 500 calls of the bench's mix writes about 300 events and 126 page views.
This writes the same rows in the bench's own database (BENCH_DATABASE, made anew), in rolled-back transactions, both the way
the workers write them (one `INSERT ... SELECT FROM jsonb_to_recordset` per table) and as one INSERT
per row (SQLAlchemy's executemany, how they were written before), alternating the two so that the
machine's other work weighs on both alike, and prints each one's median and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, text

from bench.stack import recreate_database, target_from_env
from shared.db import make_engine
from shared.models import PAGE_FIELDS, EventOccurrence, PageView
from workers.apply import store


def _rows(user_pk: int, event_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    now = datetime.now(UTC)
    pages = [
        {"user_pk": user_pk, "kind": "page", **{f: f"{f}-{i}" for f in PAGE_FIELDS},
         "properties": {"x": i}, "occurred_at": now - timedelta(seconds=i),
         "message_id": str(uuid.uuid4())}
        for i in range(126)
    ]  # fmt: skip
    events = [
        {"user_pk": user_pk, "event_id": event_id, "properties": {"amount": i, "sku": f"s{i}"},
         "occurred_at": now - timedelta(seconds=i), "message_id": str(uuid.uuid4())}
        for i in range(300)
    ]  # fmt: skip
    return pages, events


def measure(engine: Engine, app_id: int, rounds: int) -> dict[str, float]:
    with engine.begin() as conn:
        user_pk = conn.scalar(
            text("INSERT INTO users (app_id, user_id) VALUES (:a, 'u') RETURNING id"), {"a": app_id}
        )
        event_id = conn.scalar(
            text("INSERT INTO event_definitions (app_id, name) VALUES (:a, 'E') RETURNING id"),
            {"a": app_id},
        )
    pages, events = _rows(user_pk, event_id)

    def per_row(conn: Connection) -> None:
        conn.execute(insert(PageView), [{**r, "app_id": app_id} for r in pages])
        conn.execute(insert(EventOccurrence), [{**r, "app_id": app_id} for r in events])

    def set_based(conn: Connection) -> None:
        store.write_history(conn, app_id, pages, events)

    ways: dict[str, Callable[[Connection], None]] = {"set_based": set_based, "per_row": per_row}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(rounds + 5):
        for name in sorted(ways, reverse=bool(round_ % 2)):
            with engine.connect() as conn, conn.begin() as transaction:
                started = time.perf_counter()
                ways[name](conn)
                elapsed = time.perf_counter() - started
                transaction.rollback()
            if round_ >= 5:  # the first rounds warm the caches and the plans
                seconds[name].append(elapsed)
    medians = {f"{name}_ms": statistics.median(s) * 1000 for name, s in seconds.items()}
    return {**medians, "per_row_over_set_based": medians["per_row_ms"] / medians["set_based_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="measured rounds of each (40)")
    args = parser.parse_args()
    target = target_from_env(os.environ)
    recreate_database(target)  # the bench's own database (BENCH_DATABASE), as `make bench` does
    engine = make_engine(target.settings())
    try:
        with engine.begin() as conn:
            app_id = int(
                conn.scalar(text("INSERT INTO apps (name) VALUES ('history') RETURNING id"))
            )
        result = measure(engine, app_id, args.rounds)
    finally:
        engine.dispose()
    print({k: round(v, 2) for k, v in result.items()})


if __name__ == "__main__":
    main()
