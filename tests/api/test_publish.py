"""The receiver's own publisher writes what `celery.send_task` writes, and kombu reads it back."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue

from api.publish import HighWater, Publisher, make_redis
from shared.celery_app import make_celery
from shared.envelope import Envelope
from shared.queues import APPLY_TASK, INGEST, REPLAY
from shared.settings import Settings
from tests.support.envelopes import sealed
from tests.support.fixtures import fixture

ENVELOPE = Envelope(
    app_id=3,
    received_at="2026-11-28T09:15:01.031Z",
    request_id="req-1",
    calls=[fixture("browser-identify"), fixture("ios-track")],
    message_ids=["m-1", "m-2"],
    key_id="key_1",
    remote_addr="198.51.100.23",
    defaults={"context": {"ip": "192.0.2.1"}},
    sent_at="2026-11-28T09:15:01.020Z",
    rejected=[{"index": 2, "call": {"type": "x"}, "errors": [{"code": "c", "message": "m"}]}],
).to_dict()
SIGNED = sealed(ENVELOPE)
"""The envelope as the publisher signs it, with the test settings' ENVELOPE_SECRET."""


@pytest.fixture
def celery_app(settings: Settings) -> Iterator[Celery]:
    app = make_celery(settings)
    yield app
    app.close()


@pytest.fixture
def publisher(celery_app: Celery, settings: Settings) -> Iterator[Publisher]:
    client = make_redis(settings)
    yield Publisher(celery_app, client, 5, HighWater(client, settings.redis_high_water), settings)
    client.close()


def raw_messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]


def body_of(message: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(message["body"]))


def test_the_message_has_the_shape_send_task_gives_it(
    publisher: Publisher, celery_app: Celery, redis_client: redis.Redis
):
    celery_app.send_task(APPLY_TASK, args=[SIGNED], queue=INGEST, retry=False)
    publisher.publish(ENVELOPE, INGEST)
    theirs, ours = raw_messages(redis_client, INGEST)

    assert ours.keys() == theirs.keys()
    assert ours["content-type"] == theirs["content-type"] == "application/json"
    assert ours["content-encoding"] == theirs["content-encoding"]
    assert ours["headers"].keys() == theirs["headers"].keys()
    assert ours["headers"]["task"] == theirs["headers"]["task"] == APPLY_TASK
    assert ours["headers"]["id"] == ours["headers"]["root_id"] != theirs["headers"]["id"]
    for name in ("lang", "retries", "eta", "expires", "group", "parent_id", "timelimit"):
        assert ours["headers"][name] == theirs["headers"][name], name
    assert set(theirs["properties"]) - {"argsrepr", "kwargsrepr"} <= set(ours["properties"])
    for name in ("delivery_mode", "delivery_info", "priority", "body_encoding"):
        assert ours["properties"][name] == theirs["properties"][name], name
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    assert ours["properties"]["delivery_tag"] != theirs["properties"]["delivery_tag"]
    assert body_of(ours) == body_of(theirs)
    assert body_of(ours)[0] == [SIGNED]


def test_kombu_reads_the_message_back_as_the_task_and_its_envelope(
    publisher: Publisher, settings: Settings, redis_client: redis.Redis
):
    publisher.publish(ENVELOPE, INGEST)
    queue = Queue(INGEST, Exchange(INGEST), routing_key=INGEST)
    with Connection(settings.redis_url) as conn, conn.SimpleQueue(queue) as simple:
        message = simple.get(timeout=2)
        args, kwargs, embed = message.decode()
        assert message.headers["task"] == APPLY_TASK
        assert message.content_type == "application/json"
        assert args == [SIGNED]
        assert kwargs == {}
        assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
        message.ack()
    assert Envelope.from_dict(args[0]).calls == ENVELOPE["calls"]
    assert redis_client.llen(INGEST) == 0


def test_the_argument_summary_names_no_value(publisher: Publisher):
    message = json.loads(publisher.message(ENVELOPE, INGEST))
    assert message["headers"]["argsrepr"] == "[envelope app_id=3 calls=2]"
    assert "zofia" not in json.dumps(message["headers"])


def test_a_message_goes_to_the_queue_asked_for(publisher: Publisher, redis_client: redis.Redis):
    publisher.publish(ENVELOPE, REPLAY)
    assert redis_client.llen(INGEST) == 0
    [message] = raw_messages(redis_client, REPLAY)
    assert message["properties"]["delivery_info"]["routing_key"] == REPLAY
