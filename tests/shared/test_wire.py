"""shared/wire.py against kombu itself: the entries kombu writes for a message it delivers are the
ones this module reads and writes, and task messages parse the way the workers need."""

from __future__ import annotations

from base64 import b64encode

import orjson
import pytest
import redis

from shared import wire
from shared.celery_app import make_celery
from shared.envelope import Envelope
from shared.publish import Publisher
from shared.queues import APPLY_TASK, INGEST, REPLAY
from shared.settings import Settings
from tests.support.envelopes import sealed

ENVELOPE = Envelope(
    app_id=7, received_at="2026-11-28T09:15:01.031Z", request_id="r-1",
    calls=[{"type": "page", "userId": "u1"}], message_ids=["m-1"],
).to_dict()  # fmt: skip


def test_kombu_keeps_a_delivered_message_where_and_as_wire_says(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Delivered and not acknowledged, a message sits in UNACKED and UNACKED_INDEX as
    `[message, exchange, routing key]`: the shape the group scripts write (and kombu restores,
    tests/workers/test_groups.py) and the one queue readings parse."""
    celery = make_celery(settings)
    try:
        Publisher(celery, redis_client, settings).publish(ENVELOPE, REPLAY)
        with celery.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in celery.conf.task_queues:
                queue(channel).declare()
            message = channel.basic_get(REPLAY, no_ack=False)
            assert message is not None
            [(tag, entry)] = list(wire.unacked_entries(redis_client))
            assert [t for t, _ in wire.delivery_times(redis_client)] == [tag]
            assert orjson.loads(entry)[2] == REPLAY
            assert orjson.loads("[{}" + wire.unacked_suffix(REPLAY))[2] == REPLAY
            parsed = wire.unacked_entry(entry)
            assert parsed is not None and parsed[1] == REPLAY
            assert wire.unacked_queue(entry) == REPLAY
            assert wire.parse_task_message(wire.encode(parsed[0]))[1] == sealed(ENVELOPE)
            message.ack()
            assert redis_client.hlen(wire.UNACKED) == 0
    finally:
        celery.close()


def test_restore_unacked_puts_back_only_old_entries_of_our_queues(
    settings: Settings, redis_client: redis.Redis
) -> None:
    message = wire.task_message(make_celery(settings), ENVELOPE, INGEST, "[x]")
    entry = "[" + wire.encode(message).decode() + wire.unacked_suffix(INGEST)
    foreign = "[" + wire.encode(message).decode() + wire.unacked_suffix("elsewhere")
    redis_client.hset(wire.UNACKED, mapping={"old": entry, "new": entry, "theirs": foreign})
    redis_client.zadd(wire.UNACKED_INDEX, {"old": 100.0, "new": 300.0, "theirs": 100.0})

    assert wire.restore_unacked(redis_client, 200.0, (INGEST, REPLAY)) == [INGEST]
    [queued] = redis_client.lrange(INGEST, 0, -1)
    assert orjson.loads(queued)["headers"]["redelivered"] is True
    assert sorted(redis_client.hkeys(wire.UNACKED)) == [b"new", b"theirs"]


def _body(args: object) -> str:
    return b64encode(orjson.dumps(args)).decode()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xffnot json", "not_json"),
        (b"[1, 2]", "not_ours"),
        (orjson.dumps({"headers": {"task": "other.task"}, "body": ""}), "not_ours"),
        (
            orjson.dumps(
                {
                    "headers": {"task": APPLY_TASK},
                    "body": "not base64 json",
                    "properties": {"body_encoding": "base64"},
                }
            ),
            "not_json",
        ),
        (
            orjson.dumps(
                {
                    "headers": {"task": APPLY_TASK},
                    "body": _body([[], {}, {}]),
                    "properties": {"body_encoding": "base64"},
                }
            ),
            "not_ours",
        ),
    ],
)
def test_what_is_not_an_apply_task_message_is_foreign_with_its_reason(raw: bytes, code: str):
    with pytest.raises(wire.ForeignMessage) as caught:
        wire.parse_task_message(raw)
    assert caught.value.code == code


def test_an_envelope_of_another_shape_is_a_bad_envelope(settings: Settings) -> None:
    message = wire.task_message(make_celery(settings), {"v": 1}, INGEST, "[x]")
    with pytest.raises(wire.ForeignMessage) as caught:
        wire.decode_envelope(wire.encode(message))
    assert caught.value.code == "bad_envelope"
    message = wire.task_message(make_celery(settings), ENVELOPE, INGEST, "[x]")
    assert wire.decode_envelope(wire.encode(message)).to_dict() == ENVELOPE


@pytest.mark.parametrize("queue", [INGEST, REPLAY])
@pytest.mark.parametrize(
    ("argument", "argsrepr"),
    [
        (ENVELOPE, "[envelope app_id=7 calls=1]"),
        (orjson.Fragment(orjson.dumps(ENVELOPE)), 'a "quoted" \\ summary, \u00e9\u2028'),
        ({"v": 1}, ""),
    ],
)
def test_a_template_writes_the_bytes_task_message_writes(
    settings: Settings, queue: str, argument: object, argsrepr: str
) -> None:
    celery = make_celery(settings)
    theirs = wire.encode(wire.task_message(celery, argument, queue, argsrepr, calls=3))
    parsed = orjson.loads(theirs)
    template = wire.TaskTemplates(celery).of(queue)
    ours = template.encode(
        argument, argsrepr, parsed["headers"]["id"], parsed["properties"]["delivery_tag"], calls=3
    )
    assert ours == theirs
    fresh = orjson.loads(template.encode(argument, argsrepr, calls=1))
    assert fresh["headers"]["id"] == fresh["headers"]["root_id"]
    assert fresh["headers"]["id"] == fresh["properties"]["correlation_id"]
    assert fresh["headers"]["id"] != parsed["headers"]["id"]
    assert fresh["properties"]["delivery_tag"] != parsed["properties"]["delivery_tag"]
