"""`make bench-scale`: does the apply path keep its speed as the database grows, and does the
dedupe table stay bounded?

1. A batch of 100 calls (the bench mix over a fixed set of users) applied through the workers'
   apply code, timed at an empty database and again after bulk-loading `--calls` calls' worth of
   rows (events, page views, dedupe records, profiles and ids) with generate_series; before and
   after ANALYZE. The ratio empty/loaded is the figure (target >= 0.8).
2. Storage per call, by table, after the load.
3. Dedupe records left after a simulated 31 days at `--rate` calls/s with the maintenance job's
   pruning run once a simulated day; one record stands for `--dedupe-scale` calls, so a month fits
   on this machine. Target: only the last 30 days' records left.

Runs against its own database (BENCH_SCALE_DATABASE, default userdest_bench_scale) on the Postgres
server of DATABASE_URL; writes bench-results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench.stack import bench_suppression
from bench.workload import DEFINED, generate
from shared import dedupe
from shared.db import make_engine
from shared.envelope import Envelope
from shared.migrate import upgrade
from shared.models import App
from shared.readmodel import encode_cursor
from shared.settings import Settings
from workers.apply import store
from workers.apply.messages import apply_messages, prepare

HISTORY_PROFILES = 300
"""Bulk profiles topped up past 100 history rows, which the history-page reads ask for."""
FULL_PAGES = ("events_page_100", "change_feed_page")
"""Reads whose every answer must hold a full page of 100 rows (else the figure measures less)."""
TABLES = ("processed_messages", "events", "page_views", "users", "identities", "memberships")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--calls", type=int, default=10_000_000, help="calls' worth of rows to load"
    )
    parser.add_argument("--users", type=int, default=1_000, help="users the timed batches touch")
    parser.add_argument("--batches", type=int, default=40, help="timed batches of 100 per phase")
    parser.add_argument("--rate", type=int, default=100, help="calls/s of the dedupe simulation")
    parser.add_argument("--dedupe-scale", type=int, default=100, help="calls one record stands for")
    parser.add_argument("--reads", type=int, default=300, help="timed requests per read kind")
    parser.add_argument("--out", default="bench-results/scale.json")
    args = parser.parse_args(argv)

    settings, engine = _fresh_database()
    app_id = app_with_definitions(engine)
    report: dict[str, Any] = {"calls_loaded": args.calls, "started": datetime.now(UTC).isoformat()}
    # Warm up: every user exists before anything is timed (creating a profile costs more than
    # updating one, and the loaded phases would otherwise only update), then time.
    _apply_calls(engine, app_id, [_first_sight(u) for u in range(args.users)])
    _batches(engine, app_id, args.users, seed=1, count=10)
    empty = _batches(engine, app_id, args.users, seed=2, count=args.batches)
    started = time.perf_counter()
    _bulk_load(engine, app_id, args.calls)
    report["load_seconds"] = round(time.perf_counter() - started, 1)
    unanalyzed = _batches(engine, app_id, args.users, seed=3, count=args.batches)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    analyzed = _batches(engine, app_id, args.users, seed=4, count=args.batches)
    report["batch_of_100_ms"] = {
        "empty": empty,
        "loaded_before_analyze": unanalyzed,
        "loaded": analyzed,
    }
    report["ratio_empty_to_loaded"] = round(empty["median"] / analyzed["median"], 3)
    report["ratio_empty_to_loaded_before_analyze"] = round(
        empty["median"] / unanalyzed["median"], 3
    )
    report["drain_with_change_feed"] = _feed_cost(engine, app_id, args.users, args.batches)
    report["reads_ms"] = _reads(settings, engine, app_id, args.calls, args.reads)
    report["bytes_per_call"] = _storage(engine, args.calls)
    report["dedupe_month"] = _dedupe_month(engine, args.rate, args.dedupe_scale)
    engine.dispose()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    _print(report)
    return 0


def _fresh_database() -> tuple[Settings, Engine]:
    base = Settings.from_env().database_url.rsplit("/", 1)[0]
    name = os.environ.get("BENCH_SCALE_DATABASE", "userdest_bench_scale")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type,unused-ignore]
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type,unused-ignore]
    settings = replace(Settings.from_env(), database_url=f"{base}/{name}").verify()
    upgrade(settings)
    return settings, make_engine(settings)


def app_with_definitions(engine: Engine) -> int:
    """A new app with the workload's operator definitions, as `attributes define` makes them."""
    with engine.begin() as conn:
        app_id = int(conn.scalar(text("INSERT INTO apps (name) VALUES ('bench') RETURNING id")))
        for a in DEFINED:
            conn.execute(
                text(
                    "INSERT INTO attribute_definitions (app_id, scope, event, name, type, choices,"
                    " origin) VALUES (:app, :s, :e, :n, :t, CAST(:c AS jsonb), 'operator')"
                ),
                {"app": app_id, "s": a.scope, "e": a.event, "n": a.name, "t": a.type,
                 "c": json.dumps(list(a.choices)) if a.choices else None},
            )  # fmt: skip
    return app_id


def _first_sight(user: int) -> dict[str, Any]:
    """The call that creates the workload's user `user` (the workload's own ids)."""
    return {"type": "identify", "userId": f"user-{user:05d}", "anonymousId": f"anon-{user:05d}",
            "messageId": f"first-sight-{user}"}  # fmt: skip


def _apply_calls(engine: Engine, app_id: int, calls: list[dict[str, Any]]) -> list[float]:
    """Apply `calls` 100 at a time, each batch in its own transaction; the milliseconds each took."""
    times = []
    for i in range(0, len(calls), 100):
        chunk = calls[i : i + 100]
        env = Envelope(
            app_id=app_id,
            received_at=datetime.now(UTC).isoformat(),
            request_id=str(uuid.uuid4()),
            calls=chunk,
            message_ids=[c["messageId"] for c in chunk],
        )
        started = time.perf_counter()
        with engine.begin() as conn:
            apply_messages(conn, [prepare(env)], suppression=bench_suppression())
        times.append((time.perf_counter() - started) * 1000)
    return times


def _batches(engine: Engine, app_id: int, users: int, seed: int, count: int) -> dict[str, float]:
    """Apply `count` batches of 100 calls of the bench mix, timed."""
    times = _apply_calls(engine, app_id, generate(seed, users, count * 100))
    return {
        "median": round(statistics.median(times), 2),
        "p90": round(sorted(times)[int(len(times) * 0.9)], 2),
    }


def _bulk_load(engine: Engine, app_id: int, calls: int) -> None:
    """`calls` calls' worth of rows in the bench mix (60 % track, 25 % page), 100 calls a user,
    received over the last 30 days, loaded server-side."""
    users = max(calls // 100, 1)
    with engine.connect() as conn:
        # Bulk load without per-row foreign-key triggers (the rows are consistent by construction).
        conn.execute(text("SET session_replication_role = replica"))
        conn.execute(text("SET maintenance_work_mem = '256MB'"))
        first = int(conn.scalar(text("SELECT nextval('users_id_seq')")))
        conn.execute(text("SELECT setval('users_id_seq', :v)"), {"v": first + users})
        event_id = conn.scalar(
            text("INSERT INTO event_definitions (app_id, name) VALUES (:a, 'Bulk Event') "
                 "RETURNING id"),
            {"a": app_id},
        )  # fmt: skip
        steps = [
            (
                "INSERT INTO users (id, app_id, user_id, email, page_views, first_seen, last_seen,"
                " field_times) SELECT :first + g, :a, 'bulk-' || g, 'bulk-' || g || '@example.com',"
                " 25, now() - interval '30 days', now(),"
                ' jsonb_build_object(to_char(now(), \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'),'
                " jsonb_build_array('email', 'ip_address', 'user_agent', 'os'))"
                " FROM generate_series(0, :users - 1) g"
            ),
            (
                "INSERT INTO identities (app_id, kind, value, user_pk) SELECT :a, k,"
                " CASE k WHEN 'user' THEN 'bulk-' ELSE 'bulk-anon-' END || g, :first + g"
                " FROM generate_series(0, :users - 1) g, (VALUES ('user'), ('anonymous')) v(k)"
            ),
            (
                "INSERT INTO events (app_id, user_pk, event_id, properties, occurred_at,"
                " message_id, ingested_at) SELECT :a, :first + g % :users, :ev,"
                " jsonb_build_object('sku', 'sku-' || g % 500, 'price', (g % 200) + 0.99,"
                " 'category', 'books'), t, 'bulk-' || g, t"
                " FROM generate_series(0, :events - 1) g,"
                " LATERAL (SELECT now() - make_interval(secs => (:events - g) * 2592000.0 / :events)"
                " AS t) s"
            ),
            (
                "INSERT INTO page_views (app_id, user_pk, kind, url, path, title, referrer, name,"
                " properties, occurred_at, message_id, ingested_at)"
                " SELECT :a, :first + g % :users, 'page', 'https://www.example.com/docs', '/docs',"
                " 'Example /docs', 'https://www.google.com/', 'Docs', '{}', t, 'bulk-p-' || g, t"
                " FROM generate_series(0, :views - 1) g,"
                " LATERAL (SELECT now() - make_interval(secs => (:views - g) * 2592000.0 / :views)"
                " AS t) s"
            ),
            (
                "INSERT INTO processed_messages (key, processed_at)"
                " SELECT gen_random_uuid(), now() - make_interval(secs => (:calls - g) * 2592000.0"
                " / :calls) FROM generate_series(0, :calls - 1) g"
            ),
        ]
        params = {"a": app_id, "first": first, "users": users, "ev": event_id,
                  "events": calls * 60 // 100, "views": calls * 25 // 100, "calls": calls}  # fmt: skip
        for sql in steps:
            started = time.perf_counter()
            conn.execute(text(sql), params)
            conn.commit()
            print(
                f"  loaded: {sql.split()[2]} in {time.perf_counter() - started:.0f} s", flush=True
            )
        conn.execute(text("SET session_replication_role = DEFAULT"))
        conn.commit()


def _feed_cost(engine: Engine, app_id: int, users: int, count: int) -> dict[str, Any]:
    """Batches of 100 with the change feed written and without, alternating in one run: the
    ratio without/with (target >= 0.9)."""
    record = store._record_changes
    with_feed: list[float] = []
    without: list[float] = []
    for i in range(count):
        calls = generate(100 + i, users, 100)
        # Off: the flush skips its one INSERT of changes (a bench-only switch).
        store._record_changes = record
        with_feed += _apply_calls(engine, app_id, calls)
        store._record_changes = lambda *_: None
        try:
            without += _apply_calls(engine, app_id, generate(10_000 + i, users, 100))
        finally:
            store._record_changes = record
    on, off = statistics.median(with_feed), statistics.median(without)
    return {"median_ms_with": round(on, 2), "median_ms_without": round(off, 2),
            "ratio_without_to_with": round(off / on, 3)}  # fmt: skip


def _reads(settings: Settings, engine: Engine, app_id: int, calls: int, n: int) -> dict[str, Any]:
    """p50/p99 of read API requests (Flask's test client: the whole app and its SQL, no network)
    against the loaded database: a profile by id, by email, a page of 100 of a person's events,
    a filtered list page and a change-feed page from a cursor inside 1M changes."""
    import random

    import readapi
    from shared.tenancy import create_key

    users = max(calls // 100, 1)
    history = min(HISTORY_PROFILES, users)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO changes (app_id, entity, entity_pk, kind, fields) SELECT :a, "
                 "'profile', g % :u + 1, 'updated', '[\"email\"]' FROM generate_series(1, 1000000) g"),
            {"a": app_id, "u": users},
        )  # fmt: skip
        # A bulk profile holds 85 history rows (60 events, 25 page views): the history pages are
        # asked of HISTORY_PROFILES profiles topped up past a full page, so each answer is 100 rows.
        conn.execute(
            text("INSERT INTO events (app_id, user_pk, event_id, properties, occurred_at, message_id,"
                 " ingested_at) SELECT :a, u.id, e.event_id, e.properties, now(), 'top-' || u.id || '-' || g,"
                 " now() FROM users u, LATERAL (SELECT event_id, properties FROM events"
                 " WHERE user_pk = u.id LIMIT 1) e, generate_series(1, :extra) g"
                 " WHERE u.app_id = :a AND u.user_id = ANY(:ids)"),
            {"a": app_id, "ids": [f"bulk-{g}" for g in range(history)], "extra": 40},
        )  # fmt: skip
        conn.execute(text("ANALYZE changes"))
        xid, last = conn.execute(text("SELECT xid, max(id) FROM changes GROUP BY xid")).first()  # type: ignore[misc]
    with Session(engine) as session:
        key = create_key(session, session.get_one(App, app_id), scope="read").api_key
        session.commit()
    # REDIS_URL from the environment: the answers' lag is read from the queues there.
    read_settings = replace(
        settings, read_rate_limit_per_second=0.0, redis_url=Settings.from_env().redis_url
    )
    client = readapi.create_app(read_settings).test_client()
    auth = {"Authorization": f"Bearer {key}"}
    rng = random.Random(7)  # noqa: S311 (which bulk profiles to ask for)
    cursor = encode_cursor(int(xid), int(last) // 2)
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    kinds: dict[str, Any] = {
        "profile_by_id": lambda g: client.get(f"/v1/users/bulk-{g}", headers=auth),
        "profile_by_email": lambda g: client.post(
            "/v1/users/lookup", json={"email": f"bulk-{g}@example.com"}, headers=auth),
        "events_page_100": lambda g: client.get(
            f"/v1/users/bulk-{g % history}/timeline?limit=100", headers=auth),
        "filtered_list_page": lambda g: client.post("/v1/users/search", headers=auth, json={
            "limit": 100, "filter": {"and": [{"field": "email", "op": "contains", "value": f"bulk-{g % 97}"},
                                             {"field": "last_seen", "op": ">", "value": since}]}}),
        "change_feed_page": lambda g: client.get(f"/v1/changes?limit=100&cursor={cursor}", headers=auth),
    }  # fmt: skip
    out: dict[str, Any] = {}
    for name, request in kinds.items():
        times = []
        for _ in range(n):
            g = rng.randrange(users)
            started = time.perf_counter()
            answer = request(g)
            times.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200:
                raise RuntimeError(f"{name}: {answer.get_json()}")
            if name in FULL_PAGES and len(answer.get_json()["data"]) != 100:
                raise RuntimeError(
                    f"{name}: {len(answer.get_json()['data'])} rows, not a full page"
                )
        times.sort()
        out[name] = {"p50": round(times[len(times) // 2], 2),
                     "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2)}  # fmt: skip
    client.application.extensions["userdest-read"].close()
    return out


def _storage(engine: Engine, calls: int) -> dict[str, float]:
    """Bytes per call of each table (heap, indexes, TOAST; partitions added up)."""
    out = {}
    with engine.connect() as conn:
        for table in TABLES:
            size = conn.scalar(
                text(
                    "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) "
                    "FROM pg_partition_tree(CAST(:t AS regclass))), 0) "
                    "+ pg_total_relation_size(CAST(:t AS regclass))"
                ),
                {"t": table},
            )
            out[table] = round(int(size or 0) / calls, 1)
    out["all"] = round(sum(out.values()), 1)
    return out


def _dedupe_month(engine: Engine, rate: int, scale: int) -> dict[str, Any]:
    """31 simulated days of dedupe records at `rate` calls/s, pruned once a simulated day."""
    per_day = rate * 86_400 // scale
    start = datetime(2026, 1, 1, tzinfo=UTC)
    prune_seconds = 0.0
    pruned = 0
    with engine.connect() as conn:
        conn.execute(text("TRUNCATE processed_messages"))
        conn.commit()
        for day in range(31):
            conn.execute(
                text(
                    "INSERT INTO processed_messages (key, processed_at) SELECT gen_random_uuid(), "
                    "CAST(:day AS timestamptz) + make_interval(secs => g * 86400.0 / :n) "
                    "FROM generate_series(0, :n - 1) g"
                ),
                {"day": start + timedelta(days=day), "n": per_day},
            )
            conn.commit()
            started = time.perf_counter()
            pruned += dedupe.prune(conn, 30, now=start + timedelta(days=day + 1))
            prune_seconds += time.perf_counter() - started
        end = start + timedelta(days=31)
        left, oldest = conn.execute(
            text("SELECT count(*), min(processed_at) FROM processed_messages")
        ).one()
        conn.commit()
    return {
        "calls_per_second": rate,
        "calls_per_record": scale,
        "records_left": int(left),
        "records_of_30_days": per_day * 30,
        "oldest_left_days_before_end": round((end - oldest).total_seconds() / 86_400, 2),
        "only_last_30_days_left": int(left) == per_day * 30 and oldest >= end - timedelta(days=30),
        "records_pruned": pruned,
        "prune_records_per_second": round(pruned / prune_seconds) if prune_seconds else None,
        # A day of records at the full rate, deleted at the measured speed.
        "prune_seconds_per_day_at_full_rate": round(rate * 86_400 * prune_seconds / pruned, 1)
        if pruned
        else None,
    }


def _print(report: dict[str, Any]) -> None:
    b = report["batch_of_100_ms"]
    print(f"calls loaded: {report['calls_loaded']:,} in {report['load_seconds']} s")
    for phase in ("empty", "loaded_before_analyze", "loaded"):
        print(f"  batch of 100, {phase:<22} median {b[phase]['median']:7.2f} ms  "
              f"p90 {b[phase]['p90']:7.2f} ms")  # fmt: skip
    print(f"  ratio empty/loaded: {report['ratio_empty_to_loaded']} (target >= 0.8); before "
          f"ANALYZE: {report['ratio_empty_to_loaded_before_analyze']}")  # fmt: skip
    print("  bytes per call: " + ", ".join(f"{k} {v}" for k, v in report["bytes_per_call"].items()))
    f = report["drain_with_change_feed"]
    print(f"  batch with the change feed {f['median_ms_with']} ms, without {f['median_ms_without']} ms: "
          f"ratio {f['ratio_without_to_with']} (target >= 0.9)")  # fmt: skip
    for name, r in report["reads_ms"].items():
        print(f"  read {name:<20} p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms")
    d = report["dedupe_month"]
    print(f"  dedupe after 31 days at {d['calls_per_second']} calls/s (1 record = "
          f"{d['calls_per_record']} calls): {d['records_left']:,} left, oldest "
          f"{d['oldest_left_days_before_end']} days; only the last 30 days: "
          f"{d['only_last_30_days_left']}; pruned {d['prune_records_per_second']} records/s, "
          f"{d['prune_seconds_per_day_at_full_rate']} s for a day at full rate")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
