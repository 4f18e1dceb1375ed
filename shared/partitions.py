"""Monthly partitions of the history tables (events, page views) on their ingest time.

Rows land in the partition of the month they were written (`ingested_at`, set by Postgres), so an
expired month is one `DROP TABLE` instead of millions of deletes, and a replay of old calls never
lands in a partition about to be dropped. A DEFAULT partition catches rows for a month nobody
created yet (the maintenance job was not run): nothing is ever refused for want of a partition,
and the next run moves such rows into their month.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, text

PARTITIONED = ("events", "page_views")
"""The tables partitioned by month of `ingested_at`."""
MONTHS_AHEAD = 2
"""Months created ahead of the current one, so a month never starts without its partition."""
STORAGE = "autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05"
"""Insert-only partitions: vacuum early enough to keep the visibility map (index-only scans) set."""
_NAME = re.compile(r"^(?P<table>events|page_views)_(?:p(?P<month>\d{6})|default)$")


def month_of(moment: datetime) -> date:
    """The first day of `moment`'s month, in UTC."""
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def add_months(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month:%Y%m}"


def is_partition(name: str) -> bool:
    """Whether `name` is one of the partitions this module makes (not in the models' metadata)."""
    return _NAME.match(name) is not None


def _bounds(month: date) -> tuple[str, str]:
    return f"{month.isoformat()} 00:00:00+00", f"{add_months(month, 1).isoformat()} 00:00:00+00"


def create_sql(table: str, month: date) -> str:
    """The statement creating `table`'s partition for `month` (if it does not exist)."""
    low, high = _bounds(month)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(table, month)} PARTITION OF {table} "
        f"FOR VALUES FROM ('{low}') TO ('{high}') WITH ({STORAGE})"
    )


def default_sql(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table}_default PARTITION OF {table} DEFAULT WITH ({STORAGE})"
    )


@dataclass
class Changes:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved: int = 0


def existing(conn: Connection, table: str) -> dict[date, str]:
    """`table`'s monthly partitions by month."""
    names = conn.scalars(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:t AS regclass)"
        ),
        {"t": table},
    )
    found = {}
    for name in names:
        match = _NAME.match(name)
        if match and match["month"]:
            found[date(int(match["month"][:4]), int(match["month"][4:]), 1)] = name
    return found


def ensure(conn: Connection, now: datetime, changes: Changes) -> None:
    """Create the partitions of this month and MONTHS_AHEAD more, and of any month the DEFAULT
    partition caught rows for (moving them in); each in a short transaction of its own (`conn`
    has none open)."""
    first = month_of(now)
    for table in PARTITIONED:
        with conn.begin():
            have = existing(conn, table)
            caught = conn.scalars(
                text(
                    "SELECT DISTINCT CAST(date_trunc('month', ingested_at AT TIME ZONE 'UTC') "  # noqa: S608 (fixed names)
                    f"AS date) FROM {table}_default"
                )
            ).all()
        wanted = {add_months(first, n) for n in range(MONTHS_AHEAD + 1)} | set(caught)
        for month in sorted(wanted):
            if month in have:
                continue
            with conn.begin():
                changes.moved += _create(conn, table, month)
            changes.created.append(partition_name(table, month))


def _create(conn: Connection, table: str, month: date) -> int:
    """Create one partition; rows the DEFAULT partition holds for its month move into it."""
    low, high = _bounds(month)
    caught = conn.scalar(
        text(
            f"SELECT EXISTS (SELECT 1 FROM {table}_default "  # noqa: S608 (fixed table names)
            "WHERE ingested_at >= CAST(:low AS timestamptz) AND ingested_at < CAST(:high AS timestamptz))"
        ),
        {"low": low, "high": high},
    )
    if not caught:
        conn.execute(text(create_sql(table, month)))
        return 0
    # Postgres refuses a partition whose rows sit in the DEFAULT one: take it out, create the
    # month, move its rows through the parent, and put it back. Writers wait for this transaction.
    conn.execute(text(f"ALTER TABLE {table} DETACH PARTITION {table}_default"))
    conn.execute(text(create_sql(table, month)))
    window = "ingested_at >= CAST(:low AS timestamptz) AND ingested_at < CAST(:high AS timestamptz)"
    moved = conn.execute(
        text(f"INSERT INTO {table} SELECT * FROM {table}_default WHERE {window}"),  # noqa: S608
        {"low": low, "high": high},
    ).rowcount
    conn.execute(text(f"DELETE FROM {table}_default WHERE {window}"), {"low": low, "high": high})  # noqa: S608
    conn.execute(text(f"ALTER TABLE {table} ATTACH PARTITION {table}_default DEFAULT"))
    return int(moved)


def drop_expired(conn: Connection, now: datetime, days: int, changes: Changes) -> None:
    """Drop the monthly partitions whose every row is older than `days` (0 keeps everything)."""
    if days <= 0:
        return
    cutoff = now - timedelta(days=days)
    for table in PARTITIONED:
        with conn.begin():
            have = existing(conn, table)
        for month, name in sorted(have.items()):
            end = datetime.combine(add_months(month, 1), datetime.min.time(), UTC)
            if end > cutoff:
                break
            with conn.begin():
                conn.execute(text(f"DROP TABLE {name}"))
            changes.dropped.append(name)
