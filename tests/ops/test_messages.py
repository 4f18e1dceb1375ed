"""`userdest messages show MID --app A`: applied (when, to which profile), dead-lettered, held by a
worker, waiting, or unknown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine

from shared.celery_app import make_celery
from shared.publish import Publisher
from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.cli import Invoke, ok, one_line_error
from tests.support.envelopes import envelope
from workers.apply.deadletters import LetterToKeep, keep

TRACK = {"type": "track", "userId": "u1", "anonymousId": "a1", "event": "Paid", "messageId": "t-1"}


@pytest.fixture
def publisher(settings: Settings, redis_client: redis.Redis) -> Iterator[Publisher]:
    app = make_celery(settings)
    yield Publisher(app, redis_client, settings)
    app.close()


def show(invoke: Invoke, message_id: str) -> dict[str, Any]:
    return orjson.loads(
        ok(invoke("messages", "show", message_id, "--app", "shop", "--json")).stdout
    )


def test_an_applied_call_says_when_and_to_which_profile(
    invoke: Invoke, shop: int, clean_db: Engine
) -> None:
    with clean_db.begin() as conn:
        apply_envelope(conn, envelope(shop, [TRACK]))
    answer = show(invoke, "t-1")
    assert answer["state"] == "applied"
    assert answer["applied_at"].endswith("Z")
    assert answer["profile"] == {"user_id": "u1", "anonymous_ids": ["a1"], "recorded_as": "event"}
    assert answer["in_redis"] is None  # Postgres settled it


def test_a_dead_lettered_call_names_its_letter(invoke: Invoke, shop: int, clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        keep(conn, shop, [LetterToKeep("k1", "missing_event", "e", {}, "d-1", {})])
    answer = show(invoke, "d-1")
    assert answer["state"] == "dead_letter"
    assert [(d["reason"], d["open"]) for d in answer["dead_letters"]] == [("missing_event", True)]


def test_a_call_still_in_redis_is_waiting_or_held(
    invoke: Invoke, shop: int, publisher: Publisher, redis_client: redis.Redis
) -> None:
    waiting = envelope(shop, [{**TRACK, "messageId": "w-1"}, {**TRACK, "messageId": "w-2"}])
    publisher.publish(waiting.to_dict(), "replay")
    held = publisher.message(envelope(shop, [{**TRACK, "messageId": "h-1"}]).to_dict(), "ingest")
    redis_client.hset("unacked", "tag", orjson.dumps([orjson.loads(held), "", "ingest"]))
    other_app = envelope(shop + 1, [{**TRACK, "messageId": "x-1"}])
    publisher.publish(other_app.to_dict(), "ingest")

    answer = show(invoke, "w-2")
    assert answer["state"] == "waiting"
    assert [(p["where"], p["queue"]) for p in answer["in_redis"]] == [("waiting", "replay")]
    assert show(invoke, "h-1")["state"] == "unacked"
    assert show(invoke, "x-1")["state"] == "unknown"  # another app's call


def test_an_unknown_call_and_an_unknown_app(invoke: Invoke, shop: int) -> None:
    answer = show(invoke, "never")
    assert (answer["state"], answer["applied_at"], answer["in_redis"]) == ("unknown", None, [])
    assert "nope" in one_line_error(invoke("messages", "show", "m", "--app", "nope"))


def test_the_readable_answer(invoke: Invoke, shop: int, clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        apply_envelope(conn, envelope(shop, [TRACK]))
    out = ok(invoke("messages", "show", "t-1", "--app", "shop")).stdout
    assert "state" in out and "applied" in out and "u1" in out


def test_a_call_the_receiver_refused_is_found_by_the_id_its_answer_gave(
    invoke: Invoke, shop: int, clean_db: Engine
) -> None:
    refused = {"type": "track", "userId": "u1"}  # no event
    rejected = [
        {"index": 1, "call": refused, "errors": [{"code": "missing_event", "message": "m"}]}
    ]
    batch = envelope(shop, [TRACK], rejected=[{**rejected[0], "message_id": "r-1"}])
    with clean_db.begin() as conn:
        apply_envelope(conn, batch)
    answer = show(invoke, "r-1")
    assert answer["state"] == "dead_letter"
    assert [d["reason"] for d in answer["dead_letters"]] == ["missing_event"]


def test_a_letter_kept_without_an_id_is_found_by_its_calls_own_message_id(
    invoke: Invoke, shop: int, clean_db: Engine
) -> None:
    call = {"type": "track", "userId": "u1", "messageId": "own-1"}
    with clean_db.begin() as conn:
        keep(conn, shop, [LetterToKeep("rejected:old:0", "missing_event", "e", call, None, {})])
    assert show(invoke, "own-1")["state"] == "dead_letter"


def test_without_redis_an_unsettled_call_is_an_error_and_a_settled_one_is_answered(
    invoke: Invoke, shop: int, clean_db: Engine
) -> None:
    dead = {"REDIS_URL": "redis://127.0.0.1:1/0"}
    result = invoke("messages", "show", "never", "--app", "shop", "--json", env=dead)
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "cannot reach Redis" in line and "only Redis can say" in line
    with clean_db.begin() as conn:
        apply_envelope(conn, envelope(shop, [TRACK]))
    applied = invoke("messages", "show", "t-1", "--app", "shop", "--json", env=dead)
    assert orjson.loads(ok(applied).stdout)["state"] == "applied"
