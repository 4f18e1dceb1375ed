"""A task applies the messages waiting behind it in one transaction, in-process against
the test Redis and Postgres: what it takes, what it acknowledges, what it isolates and puts back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from shared.celery_app import make_celery
from shared.publish import Publisher
from shared.queues import INGEST, REPLAY
from shared.settings import Settings
from shared.wire import GROUP_PREFIX, UNACKED, UNACKED_INDEX, parse_task_message
from tests.support.envelopes import envelope, sealed
from tests.support.factories import make_app
from tests.support.faults import PgError, failing
from tests.support.readmodel import shown_profile
from tests.support.tasks import FakeClock, FakeTask, applying
from workers.applier import Applier
from workers.apply.messages import APPLY, apply_messages
from workers.drain import Drainer, Taken

MakeApplier = Callable[..., Applier]


@pytest.fixture
def app_id(clean_db: Engine) -> int:
    return make_app(clean_db, "g")


@pytest.fixture
def publisher(settings: Settings, redis_client: redis.Redis) -> Publisher:
    return Publisher(make_celery(settings), redis_client, settings)


def page(user: str, mid: str | None = None) -> dict[str, Any]:
    return {"type": "page", "userId": user, "messageId": mid or str(uuid.uuid4())}


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(sql)) or 0)


def letters(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT app_id, reason, call FROM dead_letters ORDER BY id"))
        return [tuple(r) for r in rows]


def in_flight(client: redis.Redis) -> int:
    return int(client.hlen(UNACKED)) + int(client.zcard(UNACKED_INDEX))


def test_messages_waiting_behind_one_are_applied_with_it_and_acknowledged(
    make_applier: MakeApplier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    transactions = []

    def counting(conn: Any, ms: list[Any], **kw: Any) -> Any:
        transactions.append(len(ms))
        return apply_messages(conn, ms, **kw)

    applier = make_applier(apply_group=counting)
    for i in range(30):
        publisher.publish(envelope(app_id, [page(f"u{i % 3}")]).to_dict(), INGEST)
    batch_of_100 = envelope(app_id, [page(f"u{i % 7}") for i in range(100)])
    publisher.publish(batch_of_100.to_dict(), INGEST)
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u0")])))

    assert transactions == [32]
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 131
    assert count(clean_db, "SELECT sum(page_views) FROM users") == 131
    assert redis_client.llen(INGEST) == 0
    assert in_flight(redis_client) == 0
    assert not redis_client.exists(GROUP_PREFIX + "leader")


def test_a_group_holds_at_most_worker_batch_messages(
    make_applier: MakeApplier,
    settings: Settings,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    applier = make_applier(with_settings=replace(settings, worker_batch_messages=5))
    for i in range(9):
        publisher.publish(envelope(app_id, [page(f"u{i}")]).to_dict(), INGEST)
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u0")])))
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 5
    assert redis_client.llen(INGEST) == 5
    assert in_flight(redis_client) == 0


def test_a_group_stops_once_it_holds_worker_batch_calls(
    make_applier: MakeApplier,
    settings: Settings,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    """One-call messages and batches fill a group alike: it is measured in calls, so a group of
    one-call messages is as large as a group of batches (the message cap alone made it smaller)."""
    applier = make_applier(with_settings=replace(settings, worker_batch_calls=25))
    for i in range(4):  # 10 calls each: the leader's 5, then 10 + 10, and the group is full
        publisher.publish(envelope(app_id, [page(f"u{i}") for _ in range(10)]).to_dict(), INGEST)
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u0") for _ in range(5)])))
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 25
    assert redis_client.llen(INGEST) == 2
    redis_client.delete(INGEST)  # now one-call messages only
    for i in range(30):
        publisher.publish(envelope(app_id, [page(f"w{i}")]).to_dict(), INGEST)
    applier.apply(FakeTask("leader2"), sealed(envelope(app_id, [page("w")])))
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 25 + 25
    assert redis_client.llen(INGEST) == 30 - 24
    assert in_flight(redis_client) == 0


def test_the_replay_queue_groups_too_and_a_lone_message_takes_nothing(
    applier: Applier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    publisher.publish(envelope(app_id, [page("u1")]).to_dict(), REPLAY)
    publisher.publish(envelope(app_id, [page("u2")]).to_dict(), INGEST)
    applier.apply(FakeTask("r", REPLAY), sealed(envelope(app_id, [page("u3")])))
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 2
    assert redis_client.llen(INGEST) == 1  # another queue's message is not taken
    assert redis_client.llen(REPLAY) == 0


def test_the_same_call_in_two_messages_of_a_group_counts_once(
    applier: Applier, clean_db: Engine, app_id: int, publisher: Publisher
) -> None:
    publisher.publish(envelope(app_id, [page("u1", "m-1")]).to_dict(), INGEST)  # a client's retry
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u1", "m-1")])))
    with clean_db.connect() as conn:
        assert shown_profile(conn, app_id, "u1")["page_views"] == 1


def test_a_bad_call_is_isolated_alone(
    make_applier: MakeApplier, clean_db: Engine, app_id: int, publisher: Publisher
) -> None:
    real = APPLY["page"]

    def crash_on_bad(state: Any, call: Any) -> None:
        if call.user_id == "bad":
            raise RuntimeError("worker code crashed")
        real(state, call)

    applier = make_applier(apply_group=applying(page=crash_on_bad))
    publisher.publish(
        envelope(app_id, [page("u1"), page("bad", "m-bad"), page("u2")]).to_dict(), INGEST
    )
    publisher.publish(envelope(app_id, [page("u3")]).to_dict(), INGEST)
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u4")])))
    assert [(r[1], r[2]["messageId"]) for r in letters(clean_db)] == [("apply_failed", "m-bad")]
    assert count(clean_db, "SELECT count(*) FROM users") == 4
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 4


def test_messages_that_cannot_be_applied_are_dead_letters_alone(
    applier: Applier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher.publish(envelope(app_id, [page("u1")]).to_dict(), INGEST)
    publisher.publish(envelope(424242, [page("gone", "m-gone")]).to_dict(), INGEST)  # unknown app
    publisher.publish({"v": 1, "calls": [{"secret": "s3cr3t-bad"}]}, INGEST)  # no app_id
    publisher.publish({**envelope(app_id, [page("v2")]).to_dict(), "v": 2}, INGEST)
    redis_client.lpush(INGEST, b"not json s3cr3t-raw")
    foreign = orjson.loads(publisher.message(envelope(app_id, [page("x")]).to_dict(), INGEST))
    foreign["headers"]["task"] = "someone.else"
    redis_client.lpush(INGEST, orjson.dumps(foreign))
    publisher.publish(envelope(app_id, [page("u2")]).to_dict(), INGEST)
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u3")])))

    assert count(clean_db, "SELECT count(*) FROM users") == 3
    found = sorted((r[0], r[1]) for r in letters(clean_db))
    assert found == sorted(
        [(None, "unknown_app"), (None, "bad_envelope"), (None, "envelope_version"),
         (None, "not_json"), (None, "not_ours")]
    )  # fmt: skip
    assert redis_client.llen(INGEST) == 0
    assert in_flight(redis_client) == 0
    assert "s3cr3t" not in caplog.text
    assert {r.__dict__.get("reason") for r in caplog.records if r.getMessage() == "message set aside"} == {
        "bad_envelope", "envelope_version", "not_json", "not_ours"
    }  # fmt: skip


def test_a_malformed_rejected_entry_keeps_the_rejected_calls(
    applier: Applier, clean_db: Engine, app_id: int
) -> None:
    env = envelope(app_id, [page("u1")])
    env.rejected = [
        {"index": 1, "call": {"type": "page"}, "errors": [{"code": "missing_user_id"}]},
        {"index": 2, "call": {"type": "track"}, "errors": "not a list"},
        ["not", "an", "object"],
    ]
    applier.apply(FakeTask("leader"), sealed(env))
    assert [r[1] for r in letters(clean_db)] == ["missing_user_id", "rejected", "rejected"]
    with clean_db.connect() as conn:
        assert shown_profile(conn, app_id, "u1")["page_views"] == 1


def test_a_transient_failure_puts_the_group_back_and_retries_it_whole(
    make_applier: MakeApplier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    for i in range(10):
        publisher.publish(envelope(app_id, [page(f"u{i % 2}", f"m-{i}")]).to_dict(), INGEST)
    seen_waiting = []

    def deadlock_once(conn: Any, messages: list[Any], **kw: Any) -> Any:
        if not seen_waiting:
            seen_waiting.append(redis_client.llen(INGEST))
            raise OperationalError("UPDATE", {}, PgError("40P01"))
        seen_waiting.append(redis_client.llen(INGEST))
        return apply_messages(conn, messages, **kw)

    applier = make_applier(apply_group=deadlock_once)
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u0", "m-leader")])))
    assert seen_waiting == [0, 0]  # taken both times: put back in between
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 11
    assert count(clean_db, "SELECT sum(page_views) FROM users") == 11
    assert in_flight(redis_client) == 0


def test_while_postgres_is_unreachable_the_group_waits_visible_in_the_queue(
    make_applier: MakeApplier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    for i in range(10):
        publisher.publish(envelope(app_id, [page(f"u{i}")]).to_dict(), INGEST)
    down = OperationalError("SELECT", {}, PgError(None))
    waiting_while_paused: list[int] = []

    class LookingClock(FakeClock):
        def sleep(self, seconds: float) -> None:  # a pause's wait: what is in the queue then?
            waiting_while_paused.append(int(redis_client.llen(INGEST)))

    applier = make_applier(apply_group=failing(2, down, apply_messages), clock=LookingClock())
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u0")])))
    assert waiting_while_paused == [10, 10]
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 11
    assert in_flight(redis_client) == 0


def test_a_redelivered_leader_first_puts_back_what_its_lost_run_took(
    applier: Applier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    """A worker process killed mid-group: its taken messages sit in `unacked` under the leader's
    group record; the leader's next run returns them and applies each exactly once."""
    for i in range(5):
        publisher.publish(envelope(app_id, [page(f"u{i}", f"m-{i}")]).to_dict(), INGEST)
    lost = applier.drainer.take(INGEST, "leader", 99, 1 << 20)  # the run that died
    assert len(lost) == 5 and redis_client.llen(INGEST) == 0 and in_flight(redis_client) == 10
    publisher.publish(envelope(app_id, [page("u9", "m-9")]).to_dict(), INGEST)
    applier.apply(FakeTask("leader"), sealed(envelope(app_id, [page("u0", "m-leader")])))
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 7
    assert count(clean_db, "SELECT sum(page_views) FROM users") == 7
    assert in_flight(redis_client) == 0 and redis_client.llen(INGEST) == 0


def test_a_put_back_leader_taken_into_another_group_brings_its_group_along(
    applier: Applier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    """Celery puts a lost process's leader at the back of the queue; another group may take it
    before it leads again, and must then take the messages its lost run had taken too."""
    for i in range(4):
        publisher.publish(envelope(app_id, [page(f"u{i}", f"m-{i}")]).to_dict(), INGEST)
    lost_leader = envelope(app_id, [page("u8", "m-lost-leader")]).to_dict()
    message = publisher.message(lost_leader, INGEST)
    lost_id = orjson.loads(message)["headers"]["id"]
    assert len(applier.drainer.take(INGEST, lost_id, 99, 1 << 20)) == 4  # the run that died
    redis_client.lpush(INGEST, message)  # put back by Celery (reject_on_worker_lost)
    applier.apply(FakeTask("other"), sealed(envelope(app_id, [page("u9", "m-other")])))
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 6
    assert in_flight(redis_client) == 0 and redis_client.llen(INGEST) == 0
    assert not redis_client.keys(GROUP_PREFIX + "*")


def test_taken_messages_are_restorable_by_kombu_as_it_restores_its_own(
    applier: Applier,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
    settings: Settings,
) -> None:
    """The whole worker killed: kombu's visibility-timeout sweep must read and restore what a
    group took, exactly as the messages were queued (a poison message included)."""
    env = envelope(app_id, [page("u1")])
    celery = make_celery(settings)
    with celery.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in celery.conf.task_queues:  # as a starting worker declares them
            queue(channel).declare()
        publisher.publish(env.to_dict(), INGEST)
        redis_client.lpush(INGEST, b"\xffnot json", b'{"headers": "odd"}')
        assert len(applier.drainer.take(INGEST, "leader", 99, 1 << 20)) == 3
        channel.qos.visibility_timeout = 0
        channel.qos.restore_visible(num=None, interval=1)
    celery.close()
    restored = redis_client.lrange(INGEST, 0, -1)
    assert len(restored) == 3 and in_flight(redis_client) == 0
    decoded = [orjson.loads(m) for m in restored]
    ours = next(m for m in restored if b"apply_message" in m)
    assert parse_task_message(ours)[1] == sealed(env)
    wrapped = [m["body"] for m in decoded if m["properties"].get("userdest_raw")]
    assert sorted(wrapped) == sorted(["\ufffdnot json", '{"headers": "odd"}'])


def test_a_group_past_its_soft_time_limit_keeps_the_leader_and_puts_the_rest_back(
    make_applier: MakeApplier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    # Celery raises SoftTimeLimitExceeded inside the task 30 s before it kills it and acknowledges
    # the message anyway: what the task does then is all that stands between the leader and loss.
    for i in range(5):
        publisher.publish(envelope(app_id, [page(f"u{i}", f"m-{i}")]).to_dict(), INGEST)
    calls: list[int] = []

    def too_slow(conn: Any, messages: list[Any], **kw: Any) -> Any:
        calls.append(len(messages))
        raise SoftTimeLimitExceeded()

    make_applier(apply_group=too_slow).apply(
        FakeTask("leader"), sealed(envelope(app_id, [page("u-leader", "m-leader")]))
    )

    assert calls == [6]  # tried once, as a group; never again within the same task
    [(letter_app, reason, call)] = letters(clean_db)
    assert (letter_app, reason, call["messageId"]) == (app_id, "time_limit", "m-leader")
    assert redis_client.llen(INGEST) == 5  # the others wait for another task, none lost
    assert in_flight(redis_client) == 0


class AnswerLost(Drainer):
    """A take that runs in Redis but whose answer is lost with the connection (a master killed
    between the two, a failover), once."""

    lose = True

    def take(self, *args: Any, **kwargs: Any) -> list[Taken]:
        taken = super().take(*args, **kwargs)
        if self.lose:
            self.lose = False
            raise redis.ConnectionError("Connection closed by server.")
        return taken


def test_what_a_take_without_an_answer_took_is_put_back_once_redis_answers(
    make_applier: MakeApplier,
    clean_db: Engine,
    app_id: int,
    publisher: Publisher,
    redis_client: redis.Redis,
    settings: Settings,
) -> None:
    """Without the put-back, the five taken messages would wait in `unacked` for
    VISIBILITY_TIMEOUT (15 minutes): 200'd calls missing that long after a failover."""
    for i in range(5):
        publisher.publish(envelope(app_id, [page(f"u{i}", f"m-{i}")]).to_dict(), INGEST)
    applier = make_applier(drainer=AnswerLost(redis_client, settings.visibility_timeout))
    applier.apply(FakeTask("first"), sealed(envelope(app_id, [page("u0", "m-first")])))
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 1  # the leader alone
    assert redis_client.llen(INGEST) == 0 and in_flight(redis_client) == 10  # taken, unanswered
    applier.apply(FakeTask("second"), sealed(envelope(app_id, [page("u9", "m-second")])))
    assert count(clean_db, "SELECT count(*) FROM processed_messages") == 7
    assert in_flight(redis_client) == 0
    assert not redis_client.exists(GROUP_PREFIX + "first")
