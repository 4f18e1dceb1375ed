"""The applier's choices: apply, retry what is transient in the task, pause while Postgres is
unreachable, dead-letter what never will work. Faults come in through its seams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery.exceptions import Reject
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from shared import dedupe
from shared.celery_app import make_celery
from shared.settings import Settings
from tests.support.envelopes import envelope, sealed
from tests.support.factories import make_app
from tests.support.faults import PgError, failing
from tests.support.readmodel import shown_profile
from tests.support.tasks import FakeClock, FakeTask, applying
from workers.applier import MAX_BACKOFF, RETRY_PAUSE, Applier
from workers.apply.deadletters import keep
from workers.apply.messages import apply_messages
from workers.apply.store import ProfileVanished
from workers.failures import describe, is_transient, is_unreachable
from workers.tasks import register

MakeApplier = Callable[..., Applier]


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


def test_applies_and_commits(applier: Applier, clean_db: Engine, app_id: int) -> None:
    env = envelope(app_id, [{"type": "page", "userId": "u1"}])
    applier.apply(FakeTask(), sealed(env))
    with clean_db.connect() as conn:
        assert shown_profile(conn, app_id, "u1")["page_views"] == 1


def test_a_message_that_is_not_an_envelope_is_a_dead_letter(
    applier: Applier, clean_db: Engine
) -> None:
    applier.apply(FakeTask("t-1"), sealed({"v": 1, "calls": [{"type": "page"}]}))
    applier.apply(FakeTask("t-2"), sealed({"v": 99, "calls": [{"type": "page"}]}))
    assert dead_letters(clean_db) == [
        (None, "bad_envelope", {"type": "page"}),
        (None, "envelope_version", {"type": "page"}),
    ]


def test_an_unknown_app_is_a_dead_letter(applier: Applier, clean_db: Engine) -> None:
    applier.apply(FakeTask(), sealed(envelope(424242, [{"type": "page", "userId": "u"}])))
    assert dead_letters(clean_db) == [(None, "unknown_app", {"type": "page", "userId": "u"})]


def test_transient_errors_retry_in_the_task_with_growing_jittered_waits(
    make_applier: MakeApplier, clean_db: Engine, app_id: int, clock: FakeClock
) -> None:
    deadlock = OperationalError("SELECT", {}, PgError("40P01"))
    applier = make_applier(apply_group=failing(3, deadlock, apply_messages))
    applier.apply(FakeTask(), sealed(envelope(app_id, [{"type": "page", "userId": "u1"}])))
    assert len(clock.sleeps) == 3
    assert all(0 <= w <= RETRY_PAUSE * 2 ** (i + 1) for i, w in enumerate(clock.sleeps))
    assert dead_letters(clean_db) == []
    with clean_db.connect() as conn:
        assert shown_profile(conn, app_id, "u1")["page_views"] == 1


def test_exhausted_retries_become_dead_letters(
    make_applier: MakeApplier, clean_db: Engine, app_id: int
) -> None:
    def race(*_: Any, **__: Any) -> None:
        raise ProfileVanished("moved")

    applier = make_applier(apply_group=race)
    applier.apply(FakeTask(), sealed(envelope(app_id, [{"type": "page", "userId": "u1"}])))
    assert [(r[0], r[1]) for r in dead_letters(clean_db)] == [(app_id, "retries_exhausted")]


def test_lock_and_statement_timeouts_are_set_and_transient_not_unreachable(
    applier: Applier, clean_db: Engine
) -> None:
    with applier.engine.connect() as conn:
        assert conn.scalar(text("SHOW lock_timeout")) == "10s"
        assert conn.scalar(text("SHOW statement_timeout")) == "2min"
        with pytest.raises(DBAPIError) as caught:
            conn.execute(text("SET LOCAL statement_timeout = 10; SELECT pg_sleep(1)"))
    assert is_transient(caught.value)
    assert not is_unreachable(caught.value)


def test_an_unexpected_error_keeps_the_calls(
    make_applier: MakeApplier, clean_db: Engine, app_id: int
) -> None:
    def bug(*_: Any, **__: Any) -> None:
        raise KeyError("bug")

    applier = make_applier(apply_group=bug)
    calls = [{"type": "page", "userId": "u1"}, {"type": "track", "userId": "u1", "event": "E"}]
    applier.apply(FakeTask(), sealed(envelope(app_id, calls)))
    assert [(r[1], r[2]) for r in dead_letters(clean_db)] == [("worker_error", c) for c in calls]


def test_after_a_message_the_task_prunes_dedupe_records_older_than_dedupe_days(
    clean_db: Engine, app_id: int, settings: Settings, redis_client: redis.Redis
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
    task = register(make_celery(settings), settings)
    env = envelope(app_id, [{"type": "page", "userId": "u1", "messageId": "new"}])
    task.apply(args=[sealed(env)], throw=True)  # the real task, run in this process
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
    assert is_unreachable(exc) is unreachable
    assert is_unreachable(ProfileVanished("x")) is False


def test_an_unreachable_postgres_pauses_the_task_until_it_answers(
    make_applier: MakeApplier, clean_db: Engine, clock: FakeClock
) -> None:
    """Even the dead letter of a bad message waits for Postgres: nothing is acknowledged away."""
    down = OperationalError("INSERT", {}, PgError(None))
    applier = make_applier(keep_letters=failing(2, down, keep))
    applier.apply(FakeTask(), sealed({"v": 99, "calls": [{"type": "page"}]}))
    assert len(clock.sleeps) == 2  # one wait a pause, then Postgres answered the probe
    assert all(0.5 <= w <= 1.0 for w in clock.sleeps)
    assert [r[1] for r in dead_letters(clean_db)] == ["envelope_version"]


class _DownEngine:
    """An engine whose every connection fails as an unreachable Postgres does."""

    def connect(self) -> Any:
        raise OperationalError("SELECT 1", {}, PgError(None))

    begin = connect

    def dispose(self) -> None:
        return None


def test_a_pause_waits_with_jitter_and_gives_the_message_back_after_half_the_time_limit(
    make_applier: MakeApplier, app_id: int
) -> None:
    clock = FakeClock(0.0, sleeps_advance=True)
    applier = make_applier(engine=_DownEngine(), clock=clock)
    with pytest.raises(Reject):
        applier.apply(FakeTask(), sealed(envelope(app_id, [{"type": "page", "userId": "u1"}])))
    assert clock.now > applier.settings.task_time_limit / 2
    assert all(w <= MAX_BACKOFF for w in clock.sleeps)
    assert clock.sleeps[0] <= 1.0 and max(clock.sleeps) > MAX_BACKOFF / 2


def test_a_single_call_that_crashes_is_a_dead_letter_and_applies_after_a_fix(
    make_applier: MakeApplier, clean_db: Engine, app_id: int
) -> None:
    """A lone message is first tried without a savepoint; the failure rolls back, and the call is
    isolated and kept as a dead letter, with nothing else of it committed."""

    def crash(*_: Any) -> None:
        raise RuntimeError("worker code crashed")

    env = envelope(app_id, [{"type": "page", "userId": "u1", "messageId": "m-1"}])
    make_applier(apply_group=applying(page=crash)).apply(FakeTask(), sealed(env))
    assert [(r[1], r[2]["messageId"]) for r in dead_letters(clean_db)] == [("apply_failed", "m-1")]
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM processed_messages")) == 0
        assert conn.scalar(text("SELECT count(*) FROM users")) == 0

    make_applier().apply(FakeTask(), sealed(env))  # the same message again, after the fix
    with clean_db.connect() as conn:
        assert shown_profile(conn, app_id, "u1")["page_views"] == 1


def test_a_retry_never_logs_the_failing_statement_s_values(
    applier: Applier,
    make_applier: MakeApplier,
    clean_db: Engine,
    app_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Postgres quotes values in its messages and SQLAlchemy would add the parameters: a retry
    logs only the error's kind and SQLSTATE, and the engine hides parameters."""
    with applier.engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text("SELECT CAST(:v AS integer)"), {"v": "secret@example.com"})
    assert "SQL parameters hidden" in str(caught.value)
    assert describe(caught.value) == "DataError (SQLSTATE 22P02)"

    deadlock = OperationalError(
        "UPDATE users ...", {"rows": "secret@example.com"}, PgError("40P01")
    )
    env = envelope(app_id, [{"type": "page", "userId": "u1"}], remote_addr="203.0.113.9")
    make_applier(apply_group=failing(1, deadlock, apply_messages)).apply(FakeTask(), sealed(env))
    retry = next(r for r in caplog.records if r.getMessage() == "transient failure, retrying")
    assert retry.__dict__["error"] == "OperationalError (SQLSTATE 40P01)"
    assert "secret@example.com" not in caplog.text
    assert "203.0.113.9" not in caplog.text


def test_a_dead_letter_that_cannot_be_written_gives_the_message_back(
    make_applier: MakeApplier, clean_db: Engine, app_id: int
) -> None:
    """Never acknowledged away: retries exhausted and Postgres failing the dead letter too."""

    def race(*_: Any, **__: Any) -> None:
        raise ProfileVanished("moved")

    def broken(*_: Any, **__: Any) -> None:
        raise OperationalError("INSERT", {}, PgError("40P01"))

    applier = make_applier(apply_group=race, keep_letters=broken)
    with pytest.raises(Reject) as caught:
        applier.apply(FakeTask(), sealed(envelope(app_id, [{"type": "page", "userId": "u1"}])))
    assert caught.value.requeue is True
