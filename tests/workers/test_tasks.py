"""The Celery task's choices: apply, retry what is transient, dead-letter what never will work."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.settings import Settings
from tests.support.envelopes import envelope
from tests.support.factories import make_app
from workers import tasks
from workers.apply import batch


class Retry(Exception):
    pass


class FakeTask:
    def __init__(self, retries: int = 0) -> None:
        self.request = SimpleNamespace(retries=retries, id="task-1")
        self.retried: list[dict[str, Any]] = []

    def retry(self, **kw: Any) -> Retry:
        self.retried.append(kw)
        return Retry()


@pytest.fixture
def applier(clean_db: Engine, settings: Settings) -> Iterator[tasks.Applier]:
    applier = tasks.Applier(settings)
    yield applier
    applier.close()


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
    applier.apply(FakeTask(), {"v": 99, "calls": [{"type": "page"}]})
    assert dead_letters(clean_db) == [(None, "bad_envelope", {"type": "page"})]


def test_an_unknown_app_is_a_dead_letter(applier: tasks.Applier, clean_db: Engine) -> None:
    applier.apply(FakeTask(), envelope(424242, [{"type": "page", "userId": "u"}]).to_dict())
    assert dead_letters(clean_db) == [(None, "unknown_app", {"type": "page", "userId": "u"})]


def test_transient_errors_retry_with_backoff(
    applier: tasks.Applier, clean_db: Engine, app_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def deadlock(*_: Any) -> None:
        raise OperationalError("SELECT", {}, Exception("deadlock detected"))

    monkeypatch.setattr(tasks, "apply_envelope", deadlock)
    task = FakeTask(retries=3)
    with pytest.raises(Retry):
        applier.apply(task, envelope(app_id, [{"type": "page", "userId": "u1"}]).to_dict())
    assert task.retried[0]["countdown"] == 8
    assert dead_letters(clean_db) == []


def test_exhausted_retries_become_dead_letters(
    applier: tasks.Applier, clean_db: Engine, app_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def race(*_: Any) -> None:
        raise batch.store.ProfileVanished("moved")

    monkeypatch.setattr(tasks, "apply_envelope", race)
    task = FakeTask(retries=applier.settings.task_max_retries)
    applier.apply(task, envelope(app_id, [{"type": "page", "userId": "u1"}]).to_dict())
    assert task.retried == []
    assert [r[1] for r in dead_letters(clean_db)] == ["retries_exhausted"]


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
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO processed_messages (app_id, message_id, processed_at) VALUES "
                "(:a, 'old', now() - interval '31 days'), (:a, 'recent', now() - interval '29 days')"
            ),
            {"a": app_id},
        )
    applier.apply(
        FakeTask(),
        envelope(app_id, [{"type": "page", "userId": "u1", "messageId": "new"}]).to_dict(),
    )
    with clean_db.connect() as conn:
        kept = set(conn.scalars(text("SELECT message_id FROM processed_messages")))
    assert kept == {"recent", "new"}


class _PgError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("boom")
        self.sqlstate = sqlstate


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
    exc = OperationalError("SELECT 1", {}, _PgError(sqlstate))
    assert tasks.is_unreachable(exc) is unreachable
    assert tasks.is_unreachable(batch.store.ProfileVanished("x")) is False


def test_dead_letters_that_cannot_be_written_keep_the_message_queued(
    applier: tasks.Applier, clean_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_down(*_: Any, **__: Any) -> None:
        raise OperationalError("INSERT", {}, _PgError(None))

    monkeypatch.setattr(tasks, "store_dead_letters", database_down)
    task = FakeTask(retries=2)
    with pytest.raises(Retry):
        applier.apply(task, {"v": 99, "calls": [{"type": "page"}]})
    assert task.retried[0]["countdown"] == 4


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


def test_a_retry_never_quotes_the_failing_statement_s_values(
    applier: tasks.Applier, clean_db: Engine, app_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres quotes values in its messages and SQLAlchemy would add the parameters: a retry
    (which Celery logs) carries only the error's kind and SQLSTATE, and the engine hides parameters."""
    with applier.engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text("SELECT CAST(:v AS integer)"), {"v": "secret@example.com"})
    assert "SQL parameters hidden" in str(caught.value)
    assert tasks.describe(caught.value) == "DataError (SQLSTATE 22P02)"

    def deadlock(*_: Any) -> None:
        raise OperationalError(
            "UPDATE users ...", {"rows": "secret@example.com"}, _PgError("40P01")
        )

    monkeypatch.setattr(tasks, "apply_envelope", deadlock)
    task = FakeTask()
    with pytest.raises(Retry):
        applier.apply(task, envelope(app_id, [{"type": "page", "userId": "u1"}]).to_dict())
    assert str(task.retried[0]["exc"]) == "OperationalError (SQLSTATE 40P01)"
