"""Replay runs: each `userdest replay` gets an id, and `userdest replay status RUN` shows how far
the workers got with it.

The run records the messageIds it enqueues (before each message is published, so every published
call is counted). Its progress is then read from what the workers already write, so the workers
need nothing new: a call whose dedupe record was written after the run started was applied by it;
one written before was already applied (a duplicate, skipped by the workers); an open dead letter
with its messageId failed; the rest still wait (or are being applied).
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Engine, func, insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from ops.replay import Send, Summary
from shared import dedupe
from shared.models import App, ReplayRun, ReplayRunMessage
from shared.readmodel import NotFound
from shared.timeparse import iso


def new_run_id() -> str:
    return f"run_{secrets.token_hex(6)}"


class RunRecorder:
    """Records one replay run in Postgres as it goes (each write committed at once, so `replay
    status` sees a long run progress)."""

    def __init__(self, engine: Engine, app_id: int, queue: str, source: str) -> None:
        self.engine = engine
        self.id = new_run_id()
        with engine.begin() as conn:
            conn.execute(
                insert(ReplayRun).values(id=self.id, app_id=app_id, queue=queue, source=source)
            )

    def recording(self, send: Send) -> Send:
        """`send`, after recording the envelope's messageIds under this run."""

        def record_then_send(envelope: dict[str, Any]) -> None:
            ids = sorted(set(envelope.get("message_ids") or []))
            if ids:
                with self.engine.begin() as conn:
                    conn.execute(
                        pg_insert(ReplayRunMessage)
                        .values([{"run_id": self.id, "message_id": m} for m in ids])
                        .on_conflict_do_nothing()
                    )
            send(envelope)

        return record_then_send

    def finish(self, summary: Summary) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(ReplayRun)
                .where(ReplayRun.id == self.id)
                .values(
                    finished_at=func.now(),
                    lines=summary.lines,
                    accepted=summary.accepted,
                    rejected=summary.rejected,
                )
            )


_APPLIED = dedupe.KEY_SQL.format(app="r.app_id", mid="m.message_id")
"""The dedupe record of a run's call: keyed by a hash of app and messageId (shared/dedupe.py)."""
_PROGRESS = text(
    """
    SELECT count(*) AS calls,
           count(p.key) FILTER (WHERE p.processed_at >= r.started_at) AS applied,
           count(p.key) FILTER (WHERE p.processed_at < r.started_at) AS duplicates,
           count(*) FILTER (
               WHERE p.key IS NULL AND EXISTS (
                   SELECT 1 FROM dead_letters d
                   WHERE d.app_id = r.app_id AND d.message_id = m.message_id
                     AND (d.replayed_at IS NULL OR d.updated_at > d.replayed_at))
           ) AS dead_letters
    FROM replay_run_messages m
    JOIN replay_runs r ON r.id = m.run_id
    LEFT JOIN processed_messages p ON p.key = APPLIED_KEY
    WHERE m.run_id = :run
    """.replace("APPLIED_KEY", _APPLIED)
)


def _described(run: ReplayRun, app: str | None) -> dict[str, Any]:
    """What a run read and enqueued, as `replay list` and `replay status` show it."""
    return {
        "run": run.id,
        "app": app,
        "queue": run.queue,
        "source": run.source,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at) if run.finished_at else None,
        "lines": run.lines,
        "accepted": run.accepted,
        "rejected": run.rejected,
    }


def run_status(session: Session, run_id: str) -> dict[str, Any]:
    """A run's file counts and how many of its calls the workers applied, skipped as already
    applied, dead-lettered, or have still to apply."""
    run = session.get(ReplayRun, run_id)
    if run is None:
        raise NotFound(f"no replay run {run_id!r}")
    app = session.scalar(select(App.name).where(App.id == run.app_id))
    row = session.execute(_PROGRESS, {"run": run_id}).one()
    calls, applied, duplicates, dead = (int(v) for v in row)
    return {
        **_described(run, app),
        "calls": calls,
        "applied": applied,
        "duplicates": duplicates,
        "dead_letters": dead,
        "waiting": calls - applied - duplicates - dead,
    }


def list_runs(
    session: Session, app_id: int | None, limit: int, after: str | None = None
) -> list[dict[str, Any]]:
    """Replay runs, newest first (of one app, or all): what each read and enqueued. `after` is
    the last run id of the previous page. Progress is `run_status`'s: it reads every call."""
    query = (
        select(ReplayRun, App.name)
        .join(App, App.id == ReplayRun.app_id)
        .order_by(ReplayRun.started_at.desc(), ReplayRun.id.desc())
        .limit(limit)
    )
    if app_id is not None:
        query = query.where(ReplayRun.app_id == app_id)
    if after is not None:
        last = session.get(ReplayRun, after)
        if last is None:
            raise NotFound(f"no replay run {after!r}")
        query = query.where(
            tuple_(ReplayRun.started_at, ReplayRun.id) < tuple_(last.started_at, last.id)
        )
    return [_described(run, app) for run, app in session.execute(query)]
