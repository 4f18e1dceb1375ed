"""The migration path of an existing database (0001 to 0005): history moves into monthly
partitions, dedupe records are rehashed so nothing applied is applied again, models match."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from shared import dedupe, erasure, partitions
from shared.migrate import check, upgrade
from tests.support.db import SUPPRESSION
from tests.support.scratchdb import scratch_database


def test_an_existing_database_keeps_its_history_and_dedupe_records() -> None:
    now = datetime.now(UTC)
    with scratch_database("path", revision="0001") as (settings, engine):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO apps (id, name) VALUES (3, 'shop')"))
            conn.execute(text("INSERT INTO users (id, app_id, user_id) VALUES (10, 3, 'u1')"))
            conn.execute(
                text("INSERT INTO event_definitions (id, app_id, name) VALUES (5, 3, 'E')")
            )
            conn.execute(
                text(
                    "INSERT INTO events (app_id, user_pk, event_id, occurred_at, message_id) "
                    "VALUES (3, 10, 5, :recent, 'm-recent'), (3, 10, 5, :ancient, 'm-ancient')"
                ),
                {"recent": now - timedelta(days=40), "ancient": now - timedelta(days=3000)},
            )
            conn.execute(
                text(
                    "INSERT INTO page_views (app_id, user_pk, kind, occurred_at, message_id) "
                    "VALUES (3, 10, 'page', :t, 'm-page')"
                ),
                {"t": now},
            )
            conn.execute(
                text("INSERT INTO processed_messages (app_id, message_id) VALUES (3, 'm-recent')")
            )
        upgrade(settings)
        check(settings)
        with engine.connect() as conn:
            where = dict(
                conn.execute(text("SELECT message_id, tableoid::regclass::text FROM events")).all()
            )
            assert where["m-recent"] == partitions.partition_name(
                "events", partitions.month_of(now - timedelta(days=40))
            )
            oldest = min(partitions.existing(conn, "events"))
            assert where["m-ancient"] == partitions.partition_name("events", oldest)
            assert conn.scalar(text("SELECT count(*) FROM page_views")) == 1
            # A retry of an applied call is still a duplicate after the migration.
            assert (
                conn.scalar(
                    text("SELECT count(*) FROM processed_messages WHERE key = :k"),
                    {"k": dedupe.key(3, "m-recent")},
                )
                == 1
            )
            # New rows keep their ids unique: the sequences carried over.
            conn.execute(
                text(
                    "INSERT INTO events (app_id, user_pk, event_id, occurred_at, message_id) "
                    "VALUES (3, 10, 5, now(), 'm-new')"
                )
            )
            assert conn.scalar(text("SELECT count(DISTINCT id) FROM events")) == 3


def test_suppressed_ids_hashed_before_the_secret_are_keyed_in_place() -> None:
    """0009 keys the plain hashes an older release stored: the erased id stays suppressed, and the
    plain hash (which a database copy could reverse by counting) is gone."""
    with scratch_database("suppression", revision="0008") as (settings, engine):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO apps (id, name) VALUES (3, 'shop')"))
            conn.execute(
                text("INSERT INTO suppressed_ids (app_id, key) VALUES (3, :k)"),
                {"k": uuid.UUID(bytes=erasure.unkeyed(3, "user", "1000"))},
            )
        upgrade(settings)
        with engine.connect() as conn:
            keys = conn.scalars(text("SELECT key FROM suppressed_ids")).all()
            assert keys == [SUPPRESSION.key(3, "user", "1000")]
            assert erasure.suppressed(conn, 3, [("user", "1000")], SUPPRESSION)
