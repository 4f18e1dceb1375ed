"""Storage per call, by table: apply the seeded bench workload through the workers' apply code
into a fresh database and divide each table's pg_total_relation_size by the calls applied.

    python -m bench.storage [--calls 50000] [--users 10000] [--batch 100]

The same command measured the schema before migration 0005 (docs/data.md has both runs).
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import replace
from typing import Any

import psycopg
from sqlalchemy import text

from bench.scale import app_with_definitions
from bench.stack import bench_suppression
from bench.workload import generate
from shared.db import make_engine
from shared.envelope import Envelope
from shared.migrate import upgrade
from shared.settings import Settings
from workers.apply.messages import apply_messages, prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--database", default="issue11_storage")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    base = args.admin_url.rsplit("/", 1)[0]
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')  # type: ignore[arg-type,unused-ignore]
        admin.execute(f'CREATE DATABASE "{args.database}"')  # type: ignore[arg-type,unused-ignore]
    settings = replace(Settings.from_env(), database_url=f"{base}/{args.database}").verify()
    upgrade(settings)
    engine = make_engine(settings)
    app_id = app_with_definitions(engine)
    calls = generate(7, args.users, args.calls)
    started = time.perf_counter()
    for i in range(0, len(calls), args.batch):
        chunk = calls[i : i + args.batch]
        env = Envelope(
            app_id=app_id,
            received_at="2026-01-05T09:00:00.000Z",
            request_id=str(uuid.uuid4()),
            calls=chunk,
            message_ids=[c["messageId"] for c in chunk],
        )
        with engine.begin() as conn:
            apply_messages(conn, [prepare(env)], suppression=bench_suppression())
    seconds = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    with engine.connect() as conn:
        rows: Any = conn.execute(
            text(
                "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid),"
                " coalesce((SELECT sum(pg_relation_size(i.indexrelid)) FROM pg_index i"
                " WHERE i.indrelid = c.oid), 0), c.reltuples::bigint"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
                " AND c.relispartition = false"
                " ORDER BY 2 DESC"
            )
        ).all()
        sizes = []
        for name, total, heap, index, _tuples in rows:
            if total == 0 or name == "alembic_version":
                # a partitioned parent holds nothing: add its partitions up
                total, heap, index = conn.execute(
                    text(
                        "SELECT coalesce(sum(pg_total_relation_size(relid)),0),"
                        " coalesce(sum(pg_relation_size(relid)),0),"
                        " coalesce(sum(pg_indexes_size(relid)),0)"
                        " FROM pg_partition_tree(CAST(:t AS regclass))"
                    ),
                    {"t": name},
                ).one()
            if total:
                sizes.append((name, int(total), int(heap), int(index)))
    n = len(calls)
    print(f"{n} calls over {args.users} users in batches of {args.batch}: {seconds:.1f} s")
    print(f"{'table':<24}{'total B/call':>14}{'heap B/call':>13}{'index B/call':>14}")
    for name, total, heap, index in sorted(sizes, key=lambda r: -r[1]):
        print(f"{name:<24}{total / n:>14.1f}{heap / n:>13.1f}{index / n:>14.1f}")
    print(f"{'all':<24}{sum(r[1] for r in sizes) / n:>14.1f}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
