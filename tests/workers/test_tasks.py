"""The Celery task's choices: apply, retry what is transient in the task, pause while Postgres is
unreachable, dead-letter what never will work."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from shared import dedupe
from tests.support.envelopes import envelope
from tests.support.factories import make_app
from tests.support.faults import PgError, failing
from tests.support.tasks import FakeTask
from workers import tasks
from workers.apply import batch


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The task's sleeps, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(tasks.time, "sleep", waits.append)
    return waits


@pytest.fixture
def app_id(clean_db: Engine) -> int:
    with clean_db.begin() as conn:
        return make_app(conn, "t")


def dead_letters(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(text("SELECT app_id, reason, call FROM dead_letters ORDER BY id"))
        ]


def test_applies_and_commits(applier: tasks.Applier, clean_db: Engine, app_id: int) -> None:
    env = envelope(app_id, [{"type": "page", "userId": "u1"}])
    applier.apply(FakeTask(), env.to_dict())
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT page_views FROM users")) == 1


def test_a_message_that_is_not_an_envelope_is_a_dead_letter(
    applier: tasks.Applier, clean_db: Engine
) -> None:
    applier.apply(FakeTask("t-1"), {"v": 1, "calls": [{"type": "page"}]})
    applier.apply(FakeTask("t-2"), {"v": 99, "calls": [{"type": "page"}]})
    assert dead_letters(clean_db) == [
        (None, "bad_envelope", {"type": "page"}),
        (None, "envelope_version", {"type": "page"}),
    ]


def test_an_unknown_app_is_a_dead_letter(applier: tasks.Applier, clean_db: Engine) -> None:
    applier.apply(FakeTask(), envelope(424242, [{"type": "page", "userId": "u"}]).to_dict())
    assert dead_letters(clean_db) == [(None, "unknown_app", {"type": "page", "userId": "u"})]


def test_transient_errors_retry_in_the_task_with_growing_jittered_waits(
    applier: tasks.Applier,
    clean_db: Engine,
    app_id: int,
    monkeypatch: pytest.MonkeyPatch,
    _no_waits: list[float],
) -> None:
    deadlock = OperationalError("SELECT", {}, PgError("40P01"))
    monkeypatch.setattr(tasks, "apply_envelope", failing(3, deadlock, tasks.apply_envelope))
    applier.apply(FakeTask(), envelope(app_id, [{"type": "page", "userId": "u1"}]).to_dict())
    assert len(_no_waits) == 3
    assert all(0 <= w <= tasks.RETRY_PAUSE * 2 ** (i + 1) for i, w in enumerate(_no_waits))
    assert dead_letters(clean_db) == []
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT page_views FROM users")) == 1


def test_exhausted_retries_become_dead_letters(
    applier: tasks.Applier, clean_db: Engine, app_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def race(*_: Any) -> None:
        raise batch.store.ProfileVanished("moved")

    monkeypatch.setattr(tasks, "apply_envelope", race)
    applier.apply(FakeTask(), envelope(app_id, [{"type": "page", "userId": "u1"}]).to_dict())
    assert [(r[0], r[1]) for r in dead_letters(clean_db)] == [(app_id, "retries_exhausted")]


def test_lock_and_statement_timeouts_are_set_and_transient_not_unreachable(
    applier: tasks.Applier, clean_db: Engine
) -> None:
    with applier.engine.connect() as conn:
        assert conn.scalar(text("SHOW lock_timeout")) == "10s"
        assert conn.scalar(text("SHOW statement_timeout")) == "2min"
        with pytest.raises(DBAPIError) as caught:
            conn.execute(text("SET LOCAL statement_timeout = 10; SELECT pg_sleep(1)"))
    assert tasks.is_transient(caught.value)
    assert not tasks.is_unreachable(caught.value)


def test_an_unexpected_error_keeps_the_calls(
    applier: tasks.Applier, clean_db: Engine, app_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*_: Any) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(tasks, "apply_envelope", bug)
    calls = [{"type": "page", "userId": "u1"}, {"type": "track", "userId": "u1", "event": "E"}]
    applier.apply(FakeTask(), envelope(app_id, calls).to_dict())
    assert [(r[1], r[2]) for r in dead_letters(clean_db)] == [("worker_error", c) for c in calls]


def test_dedupe_records_older_than_dedupe_days_are_pruned(
    applier: tasks.Applier, clean_db: Engine, app_id: int
) -> None:
    keys = {name: dedupe.key(app_id, name) for name in ("old", "recent", "new")}
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO processed_messages (key, processed_at) VALUES "
                "(:old, now() - interval '31 days'), (:recent, now() - interval '29 days')"
            ),
            {"old": keys["old"], "recent": keys["recent"]},
        )
    applier.apply(
        FakeTask(),
        envelope(app_id, [{"type": "page", "userId": "u1", "messageId": "new"}]).to_dict(),
    )
    with clean_db.connect() as conn:
        kept = set(conn.scalars(text("SELECT key FROM processed_messages")))
    assert kept == {keys["recent"], keys["new"]}


@pytest.mark.parametrize(
    ("sqlstate", "unreachable"),
    [
        (None, True),
        ("08006", True),
        ("57P01", True),
        ("57P03", True),
        ("40P01", False),
        ("23505", False),
    ],
)
def test_unreachable_postgres_is_told_from_other_transient_errors(
    sqlstate: str | None, unreachable: bool
) -> None:
    exc = OperationalError("SELECT 1", {}, PgError(sqlstate))
    assert tasks.is_unreachable(exc) is unreachable
    assert tasks.is_unreachable(batch.store.ProfileVanished("x")) is False


def test_an_unreachable_postgres_pauses_the_task_until_it_answers(
    applier: tasks.Applier, clean_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even the dead letter of a bad message waits for Postgres: nothing is acknowledged away."""
    down = OperationalError("INSERT", {}, PgError(None))
    monkeypatch.setattr(tasks, "store_dead_letters", failing(2, down, tasks.store_dead_letters))
    pauses: list[str] = []
    monkeypatch.setattr(applier, "_pause", lambda exc, since: pauses.append(tasks.describe(exc)))
    applier.apply(FakeTask(), {"v": 99, "calls": [{"type": "page"}]})
    assert pauses == ["OperationalError"] * 2
    assert [r[1] for r in dead_letters(clean_db)] == ["envelope_version"]


def test_a_pause_waits_with_jitter_and_gives_the_message_back_after_half_the_time_limit(
    applier: tasks.Applier, monkeypatch: pytest.MonkeyPatch, _no_waits: list[float]
) -> None:
    clock = {"now": 0.0}
    monkeypatch.setattr(tasks.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(
        tasks.time, "sleep", lambda s: (_no_waits.append(s), clock.update(now=clock["now"] + s))
    )

    class Down:
        def __enter__(self) -> None:
            raise OperationalError("SELECT 1", {}, PgError(None))

        def __exit__(self, *_: Any) -> None:
            return None

    monkeypatch.setattr(tasks.Applier, "engine", SimpleNamespace(connect=Down))
    with pytest.raises(tasks.Reject):
        applier._pause(OperationalError("x", {}, PgError(None)), since=0.0)
    assert clock["now"] > applier.settings.task_time_limit / 2
    assert all(w <= tasks.MAX_BACKOFF for w in _no_waits)
    assert _no_waits[0] <= 1.0 and max(_no_waits) > tasks.MAX_BACKOFF / 2


def test_a_single_call_that_crashes_is_a_dead_letter_and_applies_after_a_fix(
    applier: tasks.Applier, clean_db: Engine, app_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One-call messages skip the savepoint: the failure rolls back and the letter is kept apart."""

    def crash(*_: Any) -> None:
        raise RuntimeError("worker code crashed")

    monkeypatch.setitem(batch.APPLY, "page", crash)
    env = envelope(app_id, [{"type": "page", "userId": "u1", "messageId": "m-1"}])
    applier.apply(FakeTask(), env.to_dict())
    assert [(r[1], r[2]["messageId"]) for r in dead_letters(clean_db)] == [("apply_failed", "m-1")]
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM processed_messages")) == 0
        assert conn.scalar(text("SELECT count(*) FROM users")) == 0

    monkeypatch.undo()
    applier.apply(FakeTask(), env.to_dict())  # the same message again, after the fix
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT page_views FROM users")) == 1


def test_a_retry_never_logs_the_failing_statement_s_values(
    applier: tasks.Applier,
    clean_db: Engine,
    app_id: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Postgres quotes values in its messages and SQLAlchemy would add the parameters: a retry
    logs only the error's kind and SQLSTATE, and the engine hides parameters."""
    with applier.engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text("SELECT CAST(:v AS integer)"), {"v": "secret@example.com"})
    assert "SQL parameters hidden" in str(caught.value)
    assert tasks.describe(caught.value) == "DataError (SQLSTATE 22P02)"

    deadlock = OperationalError(
        "UPDATE users ...", {"rows": "secret@example.com"}, PgError("40P01")
    )
    monkeypatch.setattr(tasks, "apply_envelope", failing(1, deadlock, tasks.apply_envelope))
    env = envelope(app_id, [{"type": "page", "userId": "u1"}], remote_addr="203.0.113.9")
    applier.apply(FakeTask(), env.to_dict())
    retry = next(r for r in caplog.records if r.getMessage() == "transient failure, retrying")
    assert retry.__dict__["error"] == "OperationalError (SQLSTATE 40P01)"
    assert "secret@example.com" not in caplog.text
    assert "203.0.113.9" not in caplog.text


def test_a_dead_letter_that_cannot_be_written_gives_the_message_back(
    applier: tasks.Applier, clean_db: Engine, app_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never acknowledged away: retries exhausted and Postgres failing the dead letter too."""

    def race(*_: Any) -> None:
        raise batch.store.ProfileVanished("moved")

    def broken(*_: Any, **__: Any) -> None:
        raise OperationalError("INSERT", {}, PgError("40P01"))

    monkeypatch.setattr(tasks, "apply_envelope", race)
    monkeypatch.setattr(tasks, "store_dead_letters", broken)
    with pytest.raises(tasks.Reject) as caught:
        applier.apply(FakeTask(), envelope(app_id, [{"type": "page", "userId": "u1"}]).to_dict())
    assert caught.value.requeue is True
