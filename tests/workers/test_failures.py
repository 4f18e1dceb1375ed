"""The one decision about an exception, tested as the table it is."""

from __future__ import annotations

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DataError, IntegrityError, InternalError, OperationalError

from tests.support.faults import PgError
from workers.apply.store import ProfileVanished, UnknownApp
from workers.failures import Action, classify, describe, is_transient


def pg(kind: type[Exception], sqlstate: str | None) -> Exception:
    return kind("SELECT 1", {}, PgError(sqlstate))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (SoftTimeLimitExceeded(), Action.DEAD_LETTER),
        (pg(OperationalError, None), Action.PAUSE),  # no answer from the server at all
        (pg(OperationalError, "08006"), Action.PAUSE),  # connection failure
        (pg(OperationalError, "57P01"), Action.PAUSE),  # admin shutdown
        (pg(OperationalError, "57P03"), Action.PAUSE),  # cannot connect now (starting up)
        (pg(InternalError, "25006"), Action.PAUSE),  # a write on a standby or a demoted primary
        (redis.ReadOnlyError("You can't write against a read only replica."), Action.PAUSE),
        (redis.ResponseError("NOREPLICAS Not enough good replicas to write."), Action.PAUSE),
        (redis.ResponseError("WRONGTYPE Operation against a key"), Action.ISOLATE),
        (pg(OperationalError, "40P01"), Action.RETRY),  # deadlock
        (pg(OperationalError, "40001"), Action.RETRY),  # serialization failure
        (pg(OperationalError, "55P03"), Action.RETRY),  # lock timeout
        (pg(OperationalError, "57014"), Action.RETRY),  # statement timeout
        (pg(IntegrityError, "23505"), Action.RETRY),  # a unique key another transaction took
        (pg(IntegrityError, "23503"), Action.RETRY),  # a foreign key another one changed
        (ProfileVanished("merged meanwhile"), Action.RETRY),
        (pg(DataError, "22P02"), Action.ISOLATE),  # a value Postgres refuses, every time
        (pg(DataError, None), Action.ISOLATE),  # a client-side DataError is no outage
        (KeyError("a bug"), Action.ISOLATE),
        (UnknownApp("gone"), Action.ISOLATE),
    ],
)
def test_each_exception_gets_its_action(exc: Exception, action: Action) -> None:
    assert classify(exc) is action
    assert is_transient(exc) is (action in (Action.PAUSE, Action.RETRY))


def test_a_description_never_carries_the_error_s_message() -> None:
    exc = pg(DataError, "22P02")
    assert describe(exc) == "DataError (SQLSTATE 22P02)"
    assert describe(KeyError("secret@example.com")) == "KeyError"
