"""The maintenance job on real Postgres: dedupe pruning that finishes, monthly partitions created
ahead and dropped past retention, rows the DEFAULT partition caught moved into their month."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from ops import maintenance
from shared import dedupe, partitions
from shared.settings import Settings
from tests.support.scratchdb import scratch_database

NOW = datetime.now(UTC)


@pytest.fixture
def db() -> Iterator[tuple[Settings, Engine]]:
    with scratch_database("maint") as found:
        yield found


def _app(engine: Engine) -> int:
    with engine.begin() as conn:
        app_id = int(conn.scalar(text("INSERT INTO apps (name) VALUES ('shop') RETURNING id")))
        conn.execute(
            text("INSERT INTO users (id, app_id, user_id) VALUES (1, :a, 'u1')"), {"a": app_id}
        )
        conn.execute(
            text("INSERT INTO event_definitions (id, app_id, name) VALUES (1, :a, 'E')"),
            {"a": app_id},
        )
    return app_id


def _event(engine: Engine, app_id: int, ingested_at: datetime, message_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (app_id, user_pk, event_id, occurred_at, message_id, "
                "ingested_at) VALUES (:a, 1, 1, :t, :m, :t)"
            ),
            {"a": app_id, "t": ingested_at, "m": message_id},
        )


def _where(engine: Engine, message_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(
            text("SELECT tableoid::regclass::text FROM events WHERE message_id = :m"),
            {"m": message_id},
        )


def test_the_sql_and_python_dedupe_keys_agree(db: tuple[Settings, Engine]) -> None:
    # The migration rehashes existing records in SQL; the workers hash in Python.
    _, engine = db
    with engine.connect() as conn:
        for app_id, message_id in ((1, "m-1"), (42, "ünïcode-✓"), (7, "a:b")):
            in_sql = conn.scalar(
                text(f"SELECT {dedupe.KEY_SQL.format(app=':a', mid=':m')}"),
                {"a": app_id, "m": message_id},
            )
            assert in_sql == dedupe.key(app_id, message_id)


def test_pruning_finishes_everything_expired_in_bounded_batches(
    db: tuple[Settings, Engine],
) -> None:
    # Far more expired records than one batch: the job keeps going until none is left.
    settings, engine = db
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO processed_messages (key, processed_at) "
                "SELECT gen_random_uuid(), now() - make_interval(days => 31, secs => g) "
                "FROM generate_series(1, 2500) g"
            )
        )
        conn.execute(
            text(
                "INSERT INTO processed_messages (key, processed_at) "
                "SELECT gen_random_uuid(), now() - interval '29 days' FROM generate_series(1, 10) g"
            )
        )
    with engine.connect() as conn:
        assert dedupe.prune(conn, 30, limit=1000) == 2500
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM processed_messages")) == 10
    report = maintenance.run(engine, settings)
    assert report.ran and report.dedupe_pruned == 0


def test_partitions_are_created_ahead_and_old_ones_dropped_past_retention(
    db: tuple[Settings, Engine],
) -> None:
    settings, engine = db
    app_id = _app(engine)
    this_month = partitions.month_of(NOW)
    _event(engine, app_id, NOW, "now")
    assert _where(engine, "now") == partitions.partition_name("events", this_month)

    # Five months on, with 60 days kept: the months ahead exist, the old ones went.
    later = NOW + timedelta(days=150)
    report = maintenance.run(engine, replace(settings, retention_days=60), now=later)
    later_month = partitions.month_of(later)
    with engine.connect() as conn:
        months = set(partitions.existing(conn, "events"))
    for n in range(partitions.MONTHS_AHEAD + 1):
        assert partitions.add_months(later_month, n) in months
    assert min(months) >= partitions.add_months(later_month, -3)
    assert partitions.partition_name("events", this_month) in report.partitions_dropped
    assert partitions.partition_name("page_views", this_month) in report.partitions_dropped
    assert _where(engine, "now") is None
    # A second run has nothing left to do.
    again = maintenance.run(engine, replace(settings, retention_days=60), now=later)
    assert again.partitions_created == [] and again.partitions_dropped == []


def test_rows_the_default_partition_caught_move_into_their_month(
    db: tuple[Settings, Engine],
) -> None:
    # Nobody ran the job for months: writes went on (into DEFAULT), and the next run sorts them.
    settings, engine = db
    app_id = _app(engine)
    far = NOW + timedelta(days=200)
    _event(engine, app_id, far, "far")
    assert _where(engine, "far") == "events_default"
    report = maintenance.run(engine, settings, now=far)
    assert report.rows_moved_from_default == 1
    assert _where(engine, "far") == partitions.partition_name("events", partitions.month_of(far))
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM events_default")) == 0


def test_retention_zero_keeps_everything(db: tuple[Settings, Engine]) -> None:
    settings, engine = db
    report = maintenance.run(engine, settings, now=NOW + timedelta(days=3650))
    assert report.partitions_dropped == []


def test_only_one_run_works_at_a_time(db: tuple[Settings, Engine]) -> None:
    settings, engine = db
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": maintenance.LOCK})
        conn.commit()
        assert maintenance.run(engine, settings).ran is False
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": maintenance.LOCK})
        conn.commit()
    assert maintenance.run(engine, settings).ran is True


def test_a_run_logs_its_counts_at_info(
    db: tuple[Settings, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """The summary line's fields must not collide with a LogRecord's own (`created` did: the run
    raised KeyError after its work, so every scheduled run exited as failed)."""
    settings, engine = db
    with caplog.at_level("INFO", logger=maintenance.logger.name):
        maintenance.run(engine, settings, now=NOW)
    [line] = [r for r in caplog.records if r.getMessage() == "maintenance"]
    assert isinstance(line.__dict__["partitions_created"], int)
