"""`userdest queue stats` and `queue export`: read the queues, take nothing off them."""

from __future__ import annotations

import base64
import gzip
import os
import stat
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from ops.queues import export_lines
from shared import readmodel, wire
from shared.celery_app import make_celery
from shared.envelope import Envelope
from shared.publish import Publisher
from shared.queues import INGEST, REPLAY
from shared.redisconn import make_redis
from shared.settings import Settings
from shared.tenancy import new_app
from shared.timeparse import iso, utcnow
from tests.support.apply import apply_queued
from tests.support.cli import (
    Invoke,
    envelopes,
    invoker,
    message_ids,
    ok,
    one_line_error,
    replay_answer,
    replay_ran,
)
from workers.apply.deadletters import LetterToKeep, keep
from workers.apply.messages import Outcome

SENT_AT = "2024-03-01T12:00:00.000Z"
CONTEXT = {"library": {"name": "analytics.js"}, "locale": "pl-PL"}
PAGE = {
    "type": "page",
    "anonymousId": "anon-1",
    "userId": "u1",
    "name": "Pricing",
    "properties": {"url": "https://shop.example.com/pricing"},
    "originalTimestamp": "2024-03-01T11:59:00.000Z",
    "messageId": "p-1",
}
TRACK = {
    "type": "track",
    "userId": "u1",
    "event": "Order Completed",
    "properties": {"total": 9.5},
    "originalTimestamp": "2024-03-01T11:59:30.000Z",
}
REJECTED = {"type": "track", "userId": "u1"}
SINGLE = {"userId": "u2", "event": "Clicked", "messageId": ""}
"""Posted to /v1/track: no type of its own, and a blank messageId the receiver replaced."""
OWN_TIME = {
    "type": "identify",
    "userId": "u3",
    "traits": {"email": "c@example.com"},
    "receivedAt": "2024-02-01T00:00:00.000Z",
    "messageId": "i-3",
}


@pytest.fixture
def invoke(settings: Settings) -> Invoke:
    return invoker(settings)


@pytest.fixture
def apps(clean_db: Engine, redis_client: redis.Redis) -> dict[str, int]:
    """`shop` (the source deployment's app) and `mirror` (standing in for another deployment)."""
    with Session(clean_db) as session:
        made = {name: new_app(session, name) for name in ("shop", "mirror")}
        session.commit()
        return {name: app.id for name, app in made.items()}


@pytest.fixture
def publisher(settings: Settings) -> Iterator[Publisher]:
    celery, client = make_celery(settings), make_redis(settings)
    yield Publisher(celery, client, settings)
    client.close()
    celery.close()


def receiver_envelopes(app_id: int, received_at: str) -> list[dict[str, Any]]:
    """What the receiver enqueues for a batch (one call refused) and for a /v1/track call."""
    batch = Envelope(
        app_id=app_id,
        received_at=received_at,
        request_id="req-batch",
        calls=[PAGE, TRACK],
        message_ids=["p-1", str(uuid.uuid4())],
        key_id="key_1",
        remote_addr="198.51.100.23",
        sent_at=SENT_AT,
        defaults={"context": CONTEXT},
        rejected=[{"index": 2, "call": REJECTED, "errors": [{"code": "missing_event"}]}],
    )
    single = Envelope(
        app_id=app_id,
        received_at=received_at,
        request_id="req-single",
        calls=[SINGLE],
        message_ids=[str(uuid.uuid4())],
        key_id="key_1",
        defaults={"type": "track"},
    )
    own_time = Envelope(
        app_id=app_id,
        received_at=received_at,
        request_id="req-own",
        calls=[OWN_TIME],
        message_ids=["i-3"],
    )
    return [batch.to_dict(), single.to_dict(), own_time.to_dict()]


def backlog(publisher: Publisher, app_id: int, age: timedelta = timedelta(seconds=30)) -> str:
    """Three receiver messages waiting on `ingest`, the oldest received `age` ago."""
    received_at = iso(utcnow() - age)
    for envelope in receiver_envelopes(app_id, received_at):
        publisher.publish(envelope, INGEST)
    return received_at


def stats(invoke: Invoke, **kw: Any) -> dict[str, Any]:
    return orjson.loads(ok(invoke("queue", "stats", "--json", **kw)).stdout)


# --- stats -------------------------------------------------------------------------------------


def test_stats_of_empty_queues(invoke: Invoke, apps: dict[str, int]):
    assert stats(invoke) == {
        "queues": {
            "ingest": {
                "waiting": 0,
                "unacked": 0,
                "lag_seconds": None,
                "oldest_unacked_seconds": None,
            },
            "replay": {
                "waiting": 0,
                "unacked": 0,
                "lag_seconds": None,
                "oldest_unacked_seconds": None,
            },
        },
        "dead_letters": 0,
        "lag_seconds": None,
    }


def test_stats_count_waiting_unacked_dead_letters_and_lag(
    invoke: Invoke,
    apps: dict[str, int],
    publisher: Publisher,
    redis_client: redis.Redis,
    clean_db: Engine,
):
    backlog(publisher, apps["shop"], timedelta(seconds=30))
    [newest] = receiver_envelopes(apps["shop"], iso(utcnow() - timedelta(seconds=5)))[:1]
    publisher.publish(newest, REPLAY)
    # A message a worker holds: kombu keeps it in its unacked hash, routed to its queue.
    held = publisher.message(newest, INGEST)
    redis_client.hset("unacked", "tag-1", orjson.dumps([orjson.loads(held), "", INGEST]))
    # ... delivered to its worker 20 minutes ago (kombu's unacked_index holds the delivery time).
    redis_client.zadd("unacked_index", {"tag-1": time.time() - 1200})
    with clean_db.begin() as conn:
        keep(conn, apps["shop"], [LetterToKeep(f"k{i}", "r", "e", {}, None, {}) for i in range(2)])
        conn.execute(text("UPDATE dead_letters SET replayed_at = now() + interval '1 hour'"))
        keep(conn, apps["shop"], [LetterToKeep("k9", "r", "e", {}, None, {})])

    answer = stats(invoke)
    ingest, replay = answer["queues"]["ingest"], answer["queues"]["replay"]
    assert (ingest["waiting"], ingest["unacked"]) == (3, 1)
    assert (replay["waiting"], replay["unacked"]) == (1, 0)
    assert 30 <= ingest["lag_seconds"] < 60
    assert 5 <= replay["lag_seconds"] < 30
    assert answer["lag_seconds"] == ingest["lag_seconds"]
    assert 1200 <= ingest["oldest_unacked_seconds"] < 1260
    assert replay["oldest_unacked_seconds"] is None
    assert answer["dead_letters"] == 1  # the two replayed ones wait for nobody


def test_stats_as_a_table(invoke: Invoke, apps: dict[str, int], publisher: Publisher):
    backlog(publisher, apps["shop"])
    result = ok(invoke("queue", "stats"))
    assert "ingest" in result.stdout
    assert "lag_seconds" in result.stdout
    assert "dead letters not replayed: 0" in result.stdout


def test_stats_without_postgres_still_show_the_queues(
    invoke: Invoke, apps: dict[str, int], publisher: Publisher
):
    backlog(publisher, apps["shop"])
    result = ok(
        invoke(
            "queue",
            "stats",
            "--json",
            env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/userdest"},
        )
    )
    answer = orjson.loads(result.stdout)
    assert answer["queues"]["ingest"]["waiting"] == 3
    assert answer["dead_letters"] is None
    assert result.stderr.startswith("Warning: dead letters not counted: cannot reach the database")


def test_stats_without_redis_is_one_line(invoke: Invoke, apps: dict[str, int]):
    line = one_line_error(invoke("queue", "stats", env={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert line.startswith("Error: cannot reach Redis")


# --- export ------------------------------------------------------------------------------------


def test_export_writes_the_waiting_calls_and_leaves_the_queue_as_it_was(
    invoke: Invoke, apps: dict[str, int], publisher: Publisher, redis_client: redis.Redis
):
    received_at = backlog(publisher, apps["shop"])
    before = redis_client.lrange(INGEST, 0, -1)
    originals = envelopes(redis_client, INGEST)
    result = ok(invoke("queue", "export", "--queue", "ingest"))

    assert redis_client.lrange(INGEST, 0, -1) == before
    assert result.stderr == "exported 3 messages (5 calls) from ingest\n"
    batch, single, own = (orjson.loads(line) for line in result.stdout.splitlines())
    # The batch keeps its context and sentAt; its refused call comes last, as sent, so that nothing
    # waiting is lost (a replay refuses it again and names it). The request's address goes into
    # each accepted call's context.ip, as Segment's API fills it (a replay never takes its own).
    ip = {"ip": "198.51.100.23"}
    assert batch == {
        "batch": [
            {**PAGE, "receivedAt": received_at, "context": {**PAGE.get("context", {}), **ip}},
            {
                **TRACK,
                "messageId": originals[0]["message_ids"][1],
                "receivedAt": received_at,
                "context": {**TRACK.get("context", {}), **ip},
            },
            REJECTED,
        ],
        "context": CONTEXT,
        "sentAt": SENT_AT,
        "userdestApp": "shop",
    }
    # The endpoint's type goes into the call; the id the receiver assigned replaces a blank one.
    assert single == {
        "batch": [
            {
                **SINGLE,
                "type": "track",
                "messageId": originals[1]["message_ids"][0],
                "receivedAt": received_at,
            }
        ],
        "userdestApp": "shop",
    }
    # A call's own receivedAt (an earlier replay) is the one the worker honours: it stays.
    assert own == {"batch": [OWN_TIME], "userdestApp": "shop"}


def test_export_of_an_empty_queue(invoke: Invoke, apps: dict[str, int]):
    result = ok(invoke("queue", "export", "--queue", "replay"))
    assert result.stdout == ""
    assert result.stderr == "exported 0 messages (0 calls) from replay\n"


def test_an_export_replays_to_the_same_message_ids(
    invoke: Invoke, apps: dict[str, int], publisher: Publisher, redis_client: redis.Redis
):
    backlog(publisher, apps["shop"])
    originals = envelopes(redis_client, INGEST)
    exported = ok(invoke("queue", "export", "--queue", "ingest")).stdout.encode()

    result = replay_ran(
        invoke("replay", "-", "--app", "mirror", "--any-app", "--json", stdin=exported)
    )
    assert replay_answer(result) == {
        "accepted": 4,
        "rejected": 1,
        "duplicates": 0,
        "lines": 3,
    }
    assert "missing_event" in result.stderr  # the call the receiver refused, named again
    assert message_ids(redis_client) == [m for env in originals for m in env["message_ids"]]
    replayed = envelopes(redis_client, REPLAY)
    assert replayed[0]["defaults"] == {"context": CONTEXT}
    assert replayed[0]["sent_at"] == SENT_AT
    assert all(env["app_id"] == apps["mirror"] for env in replayed)

    redis_client.delete(REPLAY)
    replay_ran(invoke("replay", "-", "--app", "mirror", "--any-app", stdin=exported))
    assert message_ids(redis_client) == [m for env in originals for m in env["message_ids"]]


def test_an_export_file_is_private_and_never_written_through_a_link(
    invoke: Invoke,
    apps: dict[str, int],
    publisher: Publisher,
    redis_client: redis.Redis,
    tmp_path: Path,
):
    backlog(publisher, apps["shop"])
    old = os.umask(0o022)
    try:
        for name in ("backlog.ndjson", "backlog.ndjson.gz"):
            out = tmp_path / name
            ok(invoke("queue", "export", "--queue", "ingest", "--out", str(out)))
            assert stat.S_IMODE(out.stat().st_mode) == 0o600  # 0644 before: any local user
        existing = tmp_path / "existing.ndjson"
        existing.write_bytes(b"old")
        existing.chmod(0o644)
        ok(invoke("queue", "export", "--queue", "ingest", "--out", str(existing)))
        assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"keep me")
    link = tmp_path / "export.ndjson"
    link.symlink_to(target)
    line = one_line_error(invoke("queue", "export", "--queue", "ingest", "--out", str(link)))
    assert line == f"Error: {link} is a symbolic link: not writing through it"
    assert target.read_bytes() == b"keep me"


def test_export_to_a_gzip_file_with_a_json_summary(
    invoke: Invoke,
    apps: dict[str, int],
    publisher: Publisher,
    redis_client: redis.Redis,
    tmp_path: Path,
):
    backlog(publisher, apps["shop"])
    out = tmp_path / "backlog.ndjson.gz"
    result = ok(invoke("queue", "export", "--queue", "ingest", "--out", str(out), "--json"))
    assert orjson.loads(result.stdout) == {
        "queue": "ingest",
        "messages": 3,
        "calls": 5,
        "lines": 3,
        "apps": 1,
        "skipped": [],
        "out": str(out),
    }
    assert len(gzip.decompress(out.read_bytes()).splitlines()) == 3
    replayed = replay_ran(invoke("replay", str(out), "--app", "mirror", "--any-app", "--json"))
    assert orjson.loads(replayed.stdout)["accepted"] == 4
    assert redis_client.llen(INGEST) == 3


def test_export_of_one_app_and_a_warning_when_apps_mix(
    invoke: Invoke, apps: dict[str, int], publisher: Publisher, redis_client: redis.Redis
):
    backlog(publisher, apps["shop"])
    backlog(publisher, apps["mirror"])
    mixed = ok(invoke("queue", "export", "--queue", "ingest"))
    assert len(mixed.stdout.splitlines()) == 6
    assert "Warning: the export holds the calls of 2 apps" in mixed.stderr

    only = ok(invoke("queue", "export", "--queue", "ingest", "--app", "mirror"))
    assert len(only.stdout.splitlines()) == 3
    assert "Warning" not in only.stderr
    replayed = replay_ran(
        invoke("replay", "-", "--app", "mirror", "--json", stdin=only.stdout.encode())
    )
    assert orjson.loads(replayed.stdout)["accepted"] == 4
    mirror_ids = [m for env in envelopes(redis_client, INGEST)[3:] for m in env["message_ids"]]
    assert message_ids(redis_client) == mirror_ids
    assert one_line_error(invoke("queue", "export", "--queue", "ingest", "--app", "nope")) == (
        "Error: no app named 'nope'"
    )


def test_a_replay_refuses_the_lines_exported_for_another_app(
    invoke: Invoke, apps: dict[str, int], publisher: Publisher, redis_client: redis.Redis
):
    """An export of every app replayed under one would file the other's people under it."""
    backlog(publisher, apps["shop"])
    backlog(publisher, apps["mirror"])
    mixed = ok(invoke("queue", "export", "--queue", "ingest")).stdout.encode()
    shop_ids = [m for env in envelopes(redis_client, INGEST)[:3] for m in env["message_ids"]]

    refused = replay_ran(invoke("replay", "-", "--app", "shop", "--json", stdin=mixed))
    assert orjson.loads(refused.stdout)["accepted"] == 4
    # Mirror's three lines, and the call the receiver refused in shop's batch line.
    assert orjson.loads(refused.stdout)["rejected"] == 4
    assert refused.stderr.count(": other_app: ") == 3
    assert "'mirror', not 'shop'" in refused.stderr
    assert message_ids(redis_client) == shop_ids
    assert {env["app_id"] for env in envelopes(redis_client)} == {apps["shop"]}

    redis_client.delete(REPLAY)
    forced = replay_ran(invoke("replay", "-", "--app", "shop", "--any-app", "--json", stdin=mixed))
    answer = orjson.loads(forced.stdout)
    # Both backlogs' calls (the same calls twice but where the receiver assigned an id).
    assert (answer["accepted"] + answer["duplicates"], answer["rejected"]) == (8, 2)
    assert "other_app" not in forced.stderr


def test_export_skips_what_is_not_an_envelope(
    invoke: Invoke, apps: dict[str, int], publisher: Publisher, redis_client: redis.Redis
):
    redis_client.lpush(INGEST, b"not json")
    backlog(publisher, apps["shop"])
    result = ok(invoke("queue", "export", "--queue", "ingest"))
    assert len(result.stdout.splitlines()) == 3
    assert result.stderr.splitlines()[0] == "message 1: skipped: the queued message is not JSON"
    assert redis_client.llen(INGEST) == 4


def test_export_skips_what_no_envelope_secret_signed(
    invoke: Invoke,
    apps: dict[str, int],
    publisher: Publisher,
    redis_client: redis.Redis,
    settings: Settings,
):
    """A replay signs what it enqueues: an export must not hand it a forgery to sign."""
    forged = Envelope(
        app_id=apps["shop"],
        received_at=iso(utcnow()),
        request_id="forged",
        calls=[{**TRACK, "messageId": "m-forged"}],
        message_ids=["m-forged"],
    ).to_dict()
    celery = make_celery(settings)
    redis_client.lpush(INGEST, wire.encode(wire.task_message(celery, forged, INGEST, "[x]")))
    altered = orjson.loads(publisher.message(forged, INGEST))
    body = wire.task_body(altered)
    body[0][0]["calls"][0]["event"] = "Altered"
    altered["body"] = base64.b64encode(orjson.dumps(body)).decode()
    redis_client.lpush(INGEST, orjson.dumps(altered))
    celery.close()
    backlog(publisher, apps["shop"])

    result = ok(invoke("queue", "export", "--queue", "ingest"))
    assert len(result.stdout.splitlines()) == 3
    assert b"m-forged" not in result.stdout.encode()
    assert result.stderr.splitlines()[:2] == [
        "message 1: skipped: the envelope carries no MAC: written by an older version or by hand",
        "message 2: skipped: the envelope's MAC matches none of ENVELOPE_SECRET's secrets: "
        "altered or forged, or signed with a secret no longer listed",
    ]
    assert redis_client.llen(INGEST) == 5


def test_export_lines_stay_within_the_batch_limits(apps: dict[str, int]):
    calls = [{**TRACK, "messageId": f"m-{i}", "properties": {"pad": "x" * 300}} for i in range(40)]
    envelope = Envelope(
        app_id=1,
        received_at=iso(utcnow()),
        request_id="r",
        calls=calls,
        message_ids=[c["messageId"] for c in calls],
        defaults={"context": CONTEXT},
        sent_at=SENT_AT,
    )
    lines = list(export_lines(envelope, max_bytes=2000, max_calls=3))
    assert all(len(line) <= 2000 for line in lines)
    bodies = [orjson.loads(line) for line in lines]
    assert all(len(b["batch"]) <= 3 and b["context"] == CONTEXT for b in bodies)
    assert all(b["sentAt"] == SENT_AT for b in bodies)
    assert [c["messageId"] for b in bodies for c in b["batch"]] == [c["messageId"] for c in calls]


def test_export_of_a_queue_needs_the_queue_option(invoke: Invoke, apps: dict[str, int]):
    result = invoke("queue", "export")
    assert result.exit_code == 2
    assert "--queue" in one_line_error(result)


# --- end to end: a backlog moved between deployments -------------------------------------------


def apply_all(engine: Engine, queued: list[dict[str, Any]]) -> list[Outcome]:
    outcomes = []
    for env in queued:
        with engine.begin() as conn:
            outcomes.append(apply_queued(conn, env))
    return outcomes


def uncursored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "cursor"} for row in rows]


def snapshot(engine: Engine, app_id: int) -> dict[str, Any]:
    with Session(engine) as session:
        return {
            user: (
                readmodel.user_profile(session, app_id, user),
                # Row ids (in the cursors) differ between deployments; the rows do not.
                uncursored(readmodel.user_events(session, app_id, user, None)),
                uncursored(readmodel.user_pageviews(session, app_id, user, None)),
            )
            for user in ("u1", "u2", "u3")
        }


def test_an_exported_backlog_replayed_elsewhere_applies_once_with_its_event_times(
    invoke: Invoke,
    apps: dict[str, int],
    publisher: Publisher,
    redis_client: redis.Redis,
    clean_db: Engine,
):
    backlog(publisher, apps["shop"], timedelta(minutes=10))
    exported = ok(invoke("queue", "export", "--queue", "ingest")).stdout.encode()
    # The source deployment applies its queue as it stands.
    apply_all(clean_db, envelopes(redis_client, INGEST))
    source = snapshot(clean_db, apps["shop"])

    # The other deployment replays the export: the same profiles, events and event times.
    replay_ran(invoke("replay", "-", "--app", "mirror", "--any-app", stdin=exported))
    first = apply_all(clean_db, envelopes(redis_client, REPLAY))
    assert sum(sum(o.applied.values()) for o in first) == 4
    mirror = snapshot(clean_db, apps["mirror"])
    assert mirror == source

    # Replaying it again there changes nothing.
    redis_client.delete(REPLAY)
    replay_ran(invoke("replay", "-", "--app", "mirror", "--any-app", stdin=exported))
    second = apply_all(clean_db, envelopes(redis_client, REPLAY))
    assert sum(sum(o.applied.values()) for o in second) == 0
    assert sum(o.duplicates for o in second) == 4
    assert snapshot(clean_db, apps["mirror"]) == mirror


# --- requeue -----------------------------------------------------------------------------------


def test_requeue_puts_a_lost_worker_s_messages_back_first_in_line(
    invoke: Invoke, apps: dict[str, int], publisher: Publisher, redis_client: redis.Redis
):
    backlog(publisher, apps["shop"])  # three waiting on ingest
    lost, live = (
        publisher.message(e, INGEST) for e in receiver_envelopes(apps["shop"], iso(utcnow()))[:2]
    )
    foreign = orjson.dumps({"headers": {"task": "other.task"}})
    held = {
        "lost": (lost, INGEST, 7200),
        "live": (live, INGEST, 60),
        "theirs": (foreign, "x", 7200),
    }
    for tag, (message, queue, age) in held.items():
        redis_client.hset("unacked", tag, orjson.dumps([orjson.loads(message), "", queue]))
        redis_client.zadd("unacked_index", {tag: time.time() - age})
    assert stats(invoke)["queues"]["ingest"]["oldest_unacked_seconds"] >= 7200

    answer = orjson.loads(ok(invoke("queue", "requeue", "--older-than", "30m", "--json")).stdout)
    assert answer == {"requeued": {"ingest": 1, "replay": 0}, "older_than_seconds": 1800.0}
    assert redis_client.llen(INGEST) == 4
    first = orjson.loads(redis_client.lindex(INGEST, -1))  # the consuming end
    assert first["properties"]["delivery_tag"] == orjson.loads(lost)["properties"]["delivery_tag"]
    assert first["headers"]["redelivered"] is True
    assert sorted(redis_client.hkeys("unacked")) == [b"live", b"theirs"]
    assert sorted(redis_client.zrange("unacked_index", 0, -1)) == [b"live", b"theirs"]
    after = stats(invoke)["queues"]["ingest"]
    assert (after["waiting"], after["unacked"]) == (4, 1)
    again = orjson.loads(ok(invoke("queue", "requeue", "--older-than", "30m", "--json")).stdout)
    assert again["requeued"] == {"ingest": 0, "replay": 0}


def test_requeue_needs_a_bound(invoke: Invoke, apps: dict[str, int]):
    assert "--older-than" in one_line_error(invoke("queue", "requeue"))
