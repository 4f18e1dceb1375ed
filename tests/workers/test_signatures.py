"""A worker applies only envelopes signed with ENVELOPE_SECRET: whoever can write to Redis but does
not hold the secret cannot make it act for any app. Forged, altered and unsigned messages are dead
letters of their own reason, and the messages beside them apply as ever."""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from kombu import serialization
from sqlalchemy import Engine, text

from ops.queues import requeue_unacked
from shared import wire
from shared.celery_app import make_celery
from shared.envelope import MAC_FIELD, EnvelopeKeys
from shared.erasure import suppressed
from shared.publish import Publisher
from shared.queues import INGEST
from shared.settings import Settings
from tests.support.db import SUPPRESSION
from tests.support.envelopes import envelope, sealed
from tests.support.factories import make_app
from tests.support.tasks import FakeTask
from workers import broker
from workers.applier import Applier
from workers.apply.messages import apply_messages

MakeApplier = Callable[..., Applier]
OTHER_SECRET = "not-the-deployment-secret-0123456789"


@pytest.fixture
def apps(clean_db: Engine) -> dict[str, int]:
    """The attacker's own app and the victim's."""
    return {"mine": make_app(clean_db, "mine"), "victim": make_app(clean_db, "victim")}


@pytest.fixture
def publisher(settings: Settings, redis_client: redis.Redis) -> Publisher:
    return Publisher(make_celery(settings), redis_client, settings)


@pytest.fixture
def victim(applier: Applier, apps: dict[str, int]) -> int:
    """The victim app, holding the person `u1` (applied through a signed envelope)."""
    identify = {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}
    applier.apply(FakeTask("seed"), sealed(envelope(apps["victim"], [identify])))
    return apps["victim"]


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.scalar(text(sql), params)


def letters(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT app_id, reason, call FROM dead_letters ORDER BY id"))
        return [tuple(r) for r in rows]


def assert_untouched(engine: Engine, app_id: int) -> None:
    """`u1` of the app is still there and was never erased."""
    assert scalar(engine, "SELECT count(*) FROM users WHERE app_id = :a", a=app_id) == 1
    with engine.connect() as conn:
        assert suppressed(conn, app_id, [("user", "u1")], SUPPRESSION) == set()


DELETE = {"type": "delete", "userId": "u1"}


def forged_deletion(app_id: int, mac: str | None) -> dict[str, Any]:
    """A well-formed envelope as a receiver would make it for Segment's signed webhook, asking
    to erase `u1` of the app, with `mac` (or none)."""
    data = envelope(app_id, [DELETE], source="webhook", key_id=None).to_dict()
    if mac is not None:
        data[MAC_FIELD] = mac
    return data


def forgeries(app_id: int, genuine_mac: str) -> dict[str, dict[str, Any]]:
    """What someone who can LPUSH, but has not the secret, can put in the message."""
    other = EnvelopeKeys([OTHER_SECRET])
    return {
        "no mac": forged_deletion(app_id, None),
        "a mac of another secret": sealed(forged_deletion(app_id, None), other),
        "a mac copied from a signed message": forged_deletion(app_id, genuine_mac),
    }


FORGERIES = ["no mac", "a mac of another secret", "a mac copied from a signed message"]
REASONS = {
    "no mac": "unsigned_envelope",
    "a mac of another secret": "bad_envelope_mac",
    "a mac copied from a signed message": "bad_envelope_mac",
}


def lpush(client: redis.Redis, settings: Settings, argument: Any) -> bytes:
    """LPUSH a task message carrying `argument`, as anyone with Redis's password can."""
    raw = wire.encode(wire.task_message(make_celery(settings), argument, INGEST, "[x]"))
    client.lpush(INGEST, raw)
    return raw


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_deletion_delivered_alone_erases_nobody(
    applier: Applier,
    clean_db: Engine,
    victim: int,
    apps: dict[str, int],
    settings: Settings,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    forgery: str,
) -> None:
    genuine = sealed(envelope(apps["mine"], [{"type": "page", "userId": "me"}]))
    payload = forgeries(victim, genuine[MAC_FIELD])[forgery]
    raw = lpush(redis_client, settings, payload)
    _task_id, delivered = wire.parse_task_message(redis_client.rpop(INGEST) or b"")
    assert delivered == payload and raw

    with caplog.at_level(logging.ERROR, logger="workers.applier"):
        applier.apply(FakeTask("forged"), delivered)

    assert_untouched(clean_db, victim)
    assert letters(clean_db) == [(victim, REASONS[forgery], DELETE)]
    processed = scalar(clean_db, "SELECT count(*) FROM processed_messages")
    assert processed == 1  # the seed's identify, nothing of the forgery
    refused = [r for r in caplog.records if r.getMessage().startswith("message refused")]
    assert [(r.reason, r.app_id) for r in refused] == [(REASONS[forgery], victim)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_deletion_waiting_behind_a_signed_message_is_kept_and_the_rest_applies(
    applier: Applier,
    clean_db: Engine,
    victim: int,
    apps: dict[str, int],
    settings: Settings,
    publisher: Publisher,
    redis_client: redis.Redis,
    forgery: str,
) -> None:
    genuine = sealed(envelope(apps["mine"], [{"type": "page", "userId": "me"}]))
    lpush(redis_client, settings, forgeries(victim, genuine[MAC_FIELD])[forgery])
    publisher.publish(
        envelope(apps["mine"], [{"type": "page", "userId": "me-2"}]).to_dict(), INGEST
    )

    applier.apply(FakeTask("leader"), genuine)

    assert_untouched(clean_db, victim)
    assert letters(clean_db) == [(victim, REASONS[forgery], DELETE)]
    users = scalar(clean_db, "SELECT count(*) FROM users WHERE app_id = :a", a=apps["mine"])
    assert users == 2  # the leader and the signed message behind the forgery
    assert redis_client.llen(INGEST) == 0 and redis_client.hlen(wire.UNACKED) == 0


@pytest.mark.parametrize("app_id", [424242, 2**64 - 1, "1", True, None])
def test_a_forgery_naming_no_app_that_exists_is_kept_without_an_app(
    applier: Applier, clean_db: Engine, apps: dict[str, int], app_id: Any
) -> None:
    applier.apply(FakeTask("forged"), {**forged_deletion(1, None), "app_id": app_id})
    assert letters(clean_db) == [(None, "unsigned_envelope", DELETE)]


def test_an_altered_call_in_a_signed_envelope_is_refused_and_its_neighbours_apply(
    make_applier: MakeApplier,
    clean_db: Engine,
    apps: dict[str, int],
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    groups: list[int] = []

    def counting(conn: Any, messages: list[Any], **kw: Any) -> Any:
        groups.append(len(messages))
        return apply_messages(conn, messages, **kw)

    mine = apps["mine"]
    for user in ("a", "b", "c"):
        publisher.publish(envelope(mine, [{"type": "page", "userId": user}]).to_dict(), INGEST)
    # Someone with Redis's password rewrites the middle one: another user, its MAC kept.
    message = orjson.loads(redis_client.lindex(INGEST, 1) or b"")
    body = wire.task_body(message)
    assert body[0][0]["calls"] == [{"type": "page", "userId": "b"}]
    body[0][0]["calls"][0]["userId"] = "mallory"
    message["body"] = base64.b64encode(orjson.dumps(body)).decode()
    redis_client.lset(INGEST, 1, orjson.dumps(message))

    leader = sealed(envelope(mine, [{"type": "page", "userId": "leader"}]))
    make_applier(apply_group=counting).apply(FakeTask("leader"), leader)

    assert groups == [3]  # the altered one was never handed to the group apply
    with clean_db.connect() as conn:
        users = conn.execute(text("SELECT user_id FROM users WHERE app_id = :a"), {"a": mine})
        assert sorted(r[0] for r in users) == ["a", "c", "leader"]
    assert letters(clean_db) == [(mine, "bad_envelope_mac", {"type": "page", "userId": "mallory"})]


def test_signed_envelopes_put_back_from_unacked_keep_their_mac_and_apply(
    applier: Applier,
    clean_db: Engine,
    apps: dict[str, int],
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    """`queue requeue` (and kombu's own restore) moves a lost worker's messages back as they are,
    marked redelivered: their MAC still holds."""
    mine = apps["mine"]
    for user in ("a", "b"):
        publisher.publish(envelope(mine, [{"type": "page", "userId": user}]).to_dict(), INGEST)
    assert len(applier.drainer.take(INGEST, "lost-run", 10, 1 << 20)) == 2
    assert redis_client.llen(INGEST) == 0
    time.sleep(0.01)  # delivered before "now" by a hair, however coarse the clock
    assert requeue_unacked(redis_client, 0)[INGEST] == 2

    raw = redis_client.rpop(INGEST) or b""
    assert orjson.loads(raw)["headers"]["redelivered"] is True
    applier.apply(FakeTask("again"), wire.parse_task_message(raw)[1])

    assert scalar(clean_db, "SELECT count(*) FROM users WHERE app_id = :a", a=mine) == 2
    assert letters(clean_db) == []


def test_a_rotation_applies_messages_of_both_secrets_and_then_only_the_new_ones(
    make_applier: MakeApplier,
    clean_db: Engine,
    apps: dict[str, int],
    settings: Settings,
    redis_client: redis.Redis,
) -> None:
    old, new = "old-envelope-secret-0123456789", "new-envelope-secret-0123456789"
    mine = apps["mine"]

    def message(user: str, secret: str) -> dict[str, Any]:
        """What a receiver with ENVELOPE_SECRET=`secret` queues for a page of `user`."""
        signer = dataclasses.replace(settings, envelope_secret=secret).verify()
        raw = Publisher(make_celery(signer), redis_client, signer).message(
            envelope(mine, [{"type": "page", "userId": user}]).to_dict(), INGEST
        )
        return dict(wire.parse_task_message(raw)[1])

    def worker(secret: str) -> Applier:
        return make_applier(with_settings=dataclasses.replace(settings, envelope_secret=secret))

    queued_before = message("queued-before", old)
    signed_during = message("signed-during", f"{new},{old}")
    EnvelopeKeys([new]).verify(signed_during)  # the first secret of the list signs

    during = worker(f"{new},{old}")
    during.apply(FakeTask("t-1"), queued_before)
    during.apply(FakeTask("t-2"), signed_during)
    after = worker(new)
    after.apply(FakeTask("t-3"), message("queued-during-by-an-old-receiver", old))
    after.apply(FakeTask("t-4"), message("signed-after", new))

    with clean_db.connect() as conn:
        users = conn.execute(text("SELECT user_id FROM users WHERE app_id = :a"), {"a": mine})
        assert sorted(r[0] for r in users) == ["queued-before", "signed-after", "signed-during"]
    assert [r[:2] for r in letters(clean_db)] == [(mine, "bad_envelope_mac")]


def test_a_forged_leader_past_its_time_limit_keeps_its_signature_reason(
    make_applier: MakeApplier, clean_db: Engine, victim: int
) -> None:
    """Calls kept whole after a failure are replayed without question; a forged leader's must
    keep the reason that makes a replay ask the operator to vouch for them."""

    def too_slow(conn: Any, messages: list[Any], **kw: Any) -> Any:
        raise SoftTimeLimitExceeded()

    make_applier(apply_group=too_slow).apply(FakeTask("forged"), forged_deletion(victim, None))
    assert_untouched(clean_db, victim)
    assert letters(clean_db) == [(victim, "unsigned_envelope", DELETE)]


@pytest.fixture
def orjson_decoding() -> Iterator[None]:
    """JSON bodies decoded as a worker decodes them (workers/broker.py), for this test only."""
    broker.decode_json_with_orjson()
    yield
    serialization.register_json()  # kombu's own decoder again


def test_the_leader_celery_decodes_is_the_object_that_was_signed(
    orjson_decoding: None,
    applier: Applier,
    clean_db: Engine,
    apps: dict[str, int],
    publisher: Publisher,
    redis_client: redis.Redis,
) -> None:
    """kombu's own JSON decoder turns `{"__type__": "datetime", "__value__": …}` into a datetime
    (and reads NaN): a client may send such an object, and the leader Celery decodes must be the
    object the receiver signed, as the messages taken behind it are."""
    typed = {"__type__": "datetime", "__value__": "2020-01-01T00:00:00"}
    call = {"type": "track", "userId": "u", "event": "E", "properties": {"when": typed}}
    publisher.publish(envelope(apps["mine"], [call]).to_dict(), INGEST)
    message = orjson.loads(redis_client.rpop(INGEST) or b"")
    args, _kwargs, _embed = serialization.loads(  # what Celery hands the task
        base64.b64decode(message["body"]),
        message["content-type"],
        message["content-encoding"],
        accept={"application/json"},
    )
    assert args[0]["calls"][0]["properties"]["when"] == typed

    applier.apply(FakeTask("leader"), args[0])

    assert letters(clean_db) == []
    assert scalar(clean_db, "SELECT count(*) FROM processed_messages") == 1


def test_a_set_aside_payload_written_into_redis_is_an_unsigned_envelope(
    applier: Applier, clean_db: Engine, victim: int
) -> None:
    """Only this worker's decoder makes set-aside envelopes: one pushed by hand cannot pick its
    dead letters' reason (any text, past the column's 60 characters) or pass as the worker's."""
    forged = {**forged_deletion(victim, None), "set_aside": "x" * 100, "raw": "{}"}
    applier.apply(FakeTask("forged"), forged)
    assert letters(clean_db) == [(victim, "unsigned_envelope", DELETE)]
    assert_untouched(clean_db, victim)
