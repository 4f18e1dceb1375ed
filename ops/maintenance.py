"""The one scheduled job that keeps the data bounded (`userdest maintenance run`).

Each run, in short transactions of its own: creates this month's and the next months' history
partitions (moving any rows the DEFAULT partition caught), drops the months past RETENTION_DAYS,
forgets every dedupe record older than DEDUPE_DAYS (in batches, until none is left, however far
behind it was), and refreshes the planner's statistics of the tables it changed. Safe to run from
several places at once: an advisory lock lets one run work and the others return.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from shared import changefeed, dedupe, partitions
from shared.db import json_dumps
from shared.settings import Settings

logger = logging.getLogger(__name__)

LOCK = 0x75736572_6D61696E  # "usermain": one maintenance run at a time
"""The advisory-lock key a run holds for its whole length."""
RUNS_KEPT = 100
"""How many finished runs `maintenance_runs` keeps (the newest)."""


@dataclass
class Report:
    ran: bool = True
    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    rows_moved_from_default: int = 0
    dedupe_pruned: int = 0
    changes_pruned: int = 0
    """Change feed rows older than RETENTION_DAYS deleted."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(engine: Engine, settings: Settings, now: datetime | None = None) -> Report:
    """One maintenance pass; `now` is for tests that travel in time."""
    started = datetime.now(UTC)
    now = now or started
    report = Report()
    with engine.connect() as conn:
        with conn.begin():
            # A dropped partition or a moved DEFAULT waits for the workers' short transactions,
            # not the other way round: give up after a while and try at the next run.
            conn.execute(text("SET lock_timeout = '5s'"))
            locked = conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK})
        if not locked:
            report.ran = False
            return report
        try:
            changes = partitions.Changes()
            partitions.ensure(conn, now, changes)
            partitions.drop_expired(conn, now, settings.retention_days, changes)
            report.partitions_created = changes.created
            report.partitions_dropped = changes.dropped
            report.rows_moved_from_default = changes.moved
            report.dedupe_pruned = dedupe.prune(conn, settings.dedupe_days)
            report.changes_pruned = changefeed.prune(conn, now, settings.retention_days)
            if report.dedupe_pruned:
                with conn.begin():
                    conn.execute(text("ANALYZE processed_messages"))
        finally:
            if conn.in_transaction():
                conn.rollback()
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK})
    report.seconds = round((datetime.now(UTC) - started).total_seconds(), 3)
    _record(engine, started, report)
    logger.info(
        "maintenance",
        # Not `created`: a LogRecord has that attribute, and logging refuses to overwrite it.
        extra={
            "partitions_created": len(report.partitions_created),
            "partitions_dropped": len(report.partitions_dropped),
            "dedupe_pruned": report.dedupe_pruned,
            "changes_pruned": report.changes_pruned,
        },
    )
    return report


def _record(engine: Engine, started: datetime, report: Report) -> None:
    """Keep the finished run (and the newest RUNS_KEPT only): /metrics reports the newest's time."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO maintenance_runs (started_at, report) "
                "VALUES (:started, CAST(:report AS jsonb))"
            ),
            {"started": started, "report": json_dumps(report.to_dict())},
        )
        conn.execute(
            text(
                "DELETE FROM maintenance_runs WHERE id NOT IN "
                "(SELECT id FROM maintenance_runs ORDER BY id DESC LIMIT :kept)"
            ),
            {"kept": RUNS_KEPT},
        )
