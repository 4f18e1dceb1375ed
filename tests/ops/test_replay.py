"""`userdest replay`: NDJSON checked as the receiver checks it, enqueued with stable message ids."""

from __future__ import annotations

import gzip
import io
import socket
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis
from kombu import Connection, Exchange, Queue
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ops import replay
from shared.calls import derived_message_id, message_id_of
from shared.publish import BrokerUnavailable
from shared.queues import APPLY_TASK, INGEST, REPLAY
from shared.settings import Settings
from shared.tenancy import new_app
from shared.timeparse import parse_iso, utcnow
from shared.wire import decode_envelope
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
from tests.support.fixtures import fixture

TRACK = {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m-1"}
NO_USER = {"type": "identify", "traits": {"email": "x@example.com"}}
PAGE = {"type": "page", "anonymousId": "anon-1", "name": "Home"}
NO_EVENT = {"type": "track", "userId": "u2"}
IDENTIFY = {"type": "identify", "userId": "u2", "messageId": "m-2", "traits": {"plan": "pro"}}
NO_ID = {"type": "screen", "userId": "u3", "name": "Cart"}
WITH_KEY = {"type": "alias", "userId": "u4", "previousId": "anon-4", "writeKey": "ud_secret"}
BATCH = {
    "batch": [PAGE, NO_EVENT, IDENTIFY],
    "context": {"library": {"name": "analytics-python"}},
    "sentAt": "2024-03-01T12:00:00.000Z",
}


def ndjson(*lines: Any) -> bytes:
    """NDJSON of `lines`; a str is written as it is (a blank or a broken line)."""
    return b"".join(
        (line.encode() if isinstance(line, str) else orjson.dumps(line)) + b"\n" for line in lines
    )


MIXED = ndjson(TRACK, NO_USER, "", "{oops", TRACK, BATCH, NO_ID, WITH_KEY)
"""8 lines: 7 not blank; 5 calls accepted, 3 rejected (lines 2, 4 and line 6's index 1), 1 duplicate."""


@pytest.fixture
def invoke(settings: Settings) -> Invoke:
    return invoker(settings)


@pytest.fixture
def shop(clean_db: Engine, redis_client: redis.Redis) -> int:
    """The app `shop`, committed, with the run's Redis database emptied; its id."""
    with Session(clean_db) as session:
        app = new_app(session, "shop")
        session.commit()
        return app.id


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# --- lines, counts and the messages ------------------------------------------------------------


def test_good_bad_duplicate_and_batch_lines(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    path = write(tmp_path, "calls.ndjson", MIXED)
    result = replay_ran(invoke("replay", path, "--app", "shop", "--json"))

    assert replay_answer(result) == {
        "accepted": 5,
        "rejected": 3,
        "duplicates": 1,
        "lines": 7,
    }
    assert result.stderr.splitlines() == [
        "line 2: missing_user_id: a call needs a userId or an anonymousId",
        "line 4: invalid_json: the body is not valid JSON",
        "line 6 [1]: missing_event: a track call needs a non-empty event name",
    ]

    assert redis_client.llen(INGEST) == 0
    single, batch, rest = envelopes(redis_client)
    # One envelope per run of calls sharing their batch's context and sentAt.
    assert single["calls"] == [TRACK]
    assert single["message_ids"] == ["m-1"]
    assert single["defaults"] == {}
    assert single["sent_at"] is None
    assert batch["calls"] == [PAGE, IDENTIFY]
    assert batch["message_ids"] == [derived_message_id(PAGE), "m-2"]
    assert batch["defaults"] == {"context": BATCH["context"]}
    assert batch["sent_at"] == BATCH["sentAt"]
    alias = {k: v for k, v in WITH_KEY.items() if k != "writeKey"}
    assert rest["calls"] == [NO_ID, alias]  # the write key never travels on the queue
    assert rest["message_ids"] == [
        derived_message_id(NO_ID),
        derived_message_id(alias),
    ]
    for env in (single, batch, rest):
        assert env["app_id"] == shop
        assert env["source"] == "replay"
        assert env["key_id"] is None
        assert env["remote_addr"] is None
        assert env["rejected"] == []
        assert env["request_id"].startswith("replay-")
        received = parse_iso(env["received_at"])
        assert received is not None
        assert abs(utcnow() - received) < timedelta(minutes=1)


def test_a_huge_line_is_refused_while_read_not_after(
    invoke: Invoke, shop: int, settings: Settings, redis_client: redis.Redis, tmp_path: Path
):
    # A 1 MB gzip file holding one 1.1 GB line once took replay past 1.1 GB of memory and killed
    # it. The line is cut at MAX_BATCH_BYTES + 1 while read, refused, and the next line goes on.
    path = tmp_path / "bomb.ndjson.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b'{"type": "track", "event": "')
        for _ in range(64):
            out.write(b"a" * (1 << 20))
        out.write(b'"}\n' + ndjson(TRACK))
    tracemalloc.start()
    try:
        source = replay.Source(str(path), io.BytesIO(), settings.max_batch_bytes)
        lines = [(number, len(raw)) for number, raw in source.lines()]
        source.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == [(1, settings.max_batch_bytes + 1), (2, len(ndjson(TRACK)))]
    assert peak < 16 * settings.max_batch_bytes
    result = invoke("replay", str(path), "--app", "shop", "--json")
    assert result.exit_code == 3  # some lines were refused
    answer = orjson.loads(result.stdout)
    assert answer.pop("run").startswith("run_")
    assert answer == {"accepted": 1, "rejected": 1, "duplicates": 0, "lines": 2}
    assert "line 1: payload_too_large" in result.stderr


def test_the_readable_summary_and_its_stderr(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    result = replay_ran(invoke("replay", write(tmp_path, "c.ndjson", MIXED), "--app", "shop"))
    for word in ("accepted", "rejected", "duplicates", "lines", "messages", "replay"):
        assert word in result.stdout
    assert "line 2: missing_user_id" in result.stderr
    assert "Traceback" not in result.output


def test_kombu_reads_a_replayed_message_as_the_task_and_its_envelope(
    invoke: Invoke, shop: int, settings: Settings, redis_client: redis.Redis, tmp_path: Path
):
    replay_ran(invoke("replay", write(tmp_path, "c.ndjson", ndjson(TRACK)), "--app", "shop"))
    with (
        Connection(settings.redis_url) as conn,
        conn.SimpleQueue(Queue(REPLAY, Exchange(REPLAY), routing_key=REPLAY)) as simple,
    ):
        message = simple.get(timeout=2)
        args, kwargs, _embed = message.decode()
        assert message.headers["task"] == APPLY_TASK
        assert kwargs == {}
        assert args[0]["calls"] == [TRACK]
        assert args[0]["message_ids"] == ["m-1"]
        message.ack()


def test_own_received_at_is_kept_in_the_call(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    call = {**TRACK, "receivedAt": "2024-01-02T03:04:05.000Z"}
    replay_ran(invoke("replay", write(tmp_path, "c.ndjson", ndjson(call)), "--app", "shop"))
    [env] = envelopes(redis_client)
    assert env["calls"] == [call]


def test_realistic_calls_are_accepted(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    calls = [fixture(n) for n in ("browser-page", "ios-track", "group", "alias", "android-screen")]
    result = ok(
        invoke("replay", write(tmp_path, "c.ndjson", ndjson(*calls)), "--app", "shop", "--json")
    )
    assert orjson.loads(result.stdout)["accepted"] == 5
    assert result.stderr == ""


def test_the_receiver_limits_apply(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    big = {**TRACK, "messageId": "big", "properties": {"blob": "x" * 40_000}}
    data = ndjson(
        {"batch": [TRACK, IDENTIFY, PAGE]},  # over MAX_BATCH_CALLS=2 below
        big,
        {"batch": [{**big, "messageId": "big-2"}, {**PAGE, "messageId": "p"}]},
        {"batch": "nope"},
        [TRACK],
    )
    result = replay_ran(
        invoke(
            "replay",
            write(tmp_path, "c.ndjson", data),
            "--app",
            "shop",
            "--json",
            env={"MAX_BATCH_CALLS": "2"},
        )
    )
    assert replay_answer(result) == {
        "accepted": 1,
        "rejected": 5,
        "duplicates": 0,
        "lines": 5,
    }
    assert [line.split(":")[:2] for line in result.stderr.splitlines()] == [
        ["line 1", " payload_too_large"],
        ["line 2", " payload_too_large"],
        ["line 3 [0]", " call_too_large"],
        ["line 4", " invalid_batch"],
        ["line 5", " not_an_object"],
    ]
    assert message_ids(redis_client) == ["p"]


# --- inputs: gzip, stdin -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["calls.ndjson.gz", "calls.ndjson"])
def test_gzip_is_read_by_its_magic_bytes_whatever_the_name(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path, name: str
):
    path = write(tmp_path, name, gzip.compress(MIXED))
    result = replay_ran(invoke("replay", path, "--app", "shop", "--json"))
    assert orjson.loads(result.stdout)["accepted"] == 5
    assert len(message_ids(redis_client)) == 5


def test_stdin_plain_and_gzipped(invoke: Invoke, shop: int, redis_client: redis.Redis):
    result = replay_ran(invoke("replay", "-", "--app", "shop", "--json", stdin=MIXED))
    assert orjson.loads(result.stdout)["accepted"] == 5
    first = message_ids(redis_client)
    redis_client.delete(REPLAY)
    result = replay_ran(
        invoke("replay", "-", "--app", "shop", "--json", stdin=gzip.compress(MIXED))
    )
    assert orjson.loads(result.stdout)["accepted"] == 5
    assert message_ids(redis_client) == first


def test_broken_gzip_is_one_line(invoke: Invoke, shop: int, tmp_path: Path):
    calls = ndjson(*({**TRACK, "messageId": f"m-{i}"} for i in range(300)))
    path = write(tmp_path, "c.gz", gzip.compress(calls)[:-40])
    line = one_line_error(invoke("replay", path, "--app", "shop"))
    assert "unreadable gzip data after line" in line


def test_crlf_line_ends_and_a_last_line_without_newline(
    invoke: Invoke, shop: int, redis_client: redis.Redis
):
    data = orjson.dumps(TRACK) + b"\r\n" + orjson.dumps(IDENTIFY)
    result = replay_ran(invoke("replay", "-", "--app", "shop", "--json", stdin=data))
    assert replay_answer(result) == {
        "accepted": 2,
        "rejected": 0,
        "duplicates": 0,
        "lines": 2,
    }


# --- options -----------------------------------------------------------------------------------


def test_dry_run_counts_and_enqueues_nothing(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    path = write(tmp_path, "c.ndjson", MIXED)
    result = replay_ran(invoke("replay", path, "--app", "shop", "--dry-run", "--json"))
    assert replay_answer(result) == {
        "accepted": 5,
        "rejected": 3,
        "duplicates": 1,
        "lines": 7,
    }
    assert "line 2: missing_user_id" in result.stderr
    assert redis_client.llen(REPLAY) == 0
    assert redis_client.llen(INGEST) == 0


def test_dry_run_needs_no_redis(invoke: Invoke, shop: int, tmp_path: Path):
    path = write(tmp_path, "c.ndjson", MIXED)
    replay_ran(
        invoke(
            "replay", path, "--app", "shop", "--dry-run", env={"REDIS_URL": "redis://127.0.0.1:1/0"}
        )
    )


def test_the_ingest_queue_on_request(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    replay_ran(
        invoke("replay", write(tmp_path, "c.ndjson", MIXED), "--app", "shop", "--queue", "ingest")
    )
    assert redis_client.llen(REPLAY) == 0
    assert len(message_ids(redis_client, INGEST)) == 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.sent_at: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_rate_paces_the_messages():
    fake = FakeClock()
    sent: list[dict[str, Any]] = []
    calls = [{**TRACK, "messageId": f"m-{i}"} for i in range(25)]
    summary = replay.replay_lines(
        enumerate(ndjson(*calls).splitlines(), 1),
        app_id=1,
        settings=Settings(),
        send=sent.append,
        rate=10,
        pacer=replay.Pacer(10, clock=fake.clock, sleep=fake.sleep),
    )
    assert summary.accepted == 25
    # 10 calls a second: messages of 10 calls, the second one second after the first, and so on.
    assert [len(env["calls"]) for env in sent] == [10, 10, 5]
    assert fake.sleeps == [1.0, 1.0]


def test_the_rate_option_sizes_the_messages(invoke: Invoke, shop: int, redis_client: redis.Redis):
    calls = [{**TRACK, "messageId": f"m-{i}"} for i in range(4)]
    result = ok(
        invoke("replay", "-", "--app", "shop", "--rate", "3", "--json", stdin=ndjson(*calls))
    )
    assert orjson.loads(result.stdout)["accepted"] == 4
    assert [len(env["calls"]) for env in envelopes(redis_client)] == [3, 1]


def test_pacer_never_sends_ahead_of_the_rate():
    fake = FakeClock()
    pacer = replay.Pacer(4, clock=fake.clock, sleep=fake.sleep)
    sent = 0
    for size in (4, 4, 4, 2, 4):
        pacer.wait(size)
        # Whatever was sent before this message went out at no more than 4 calls a second.
        assert sent <= 4 * (fake.now - 1000.0) + 1e-9 or sent == 0
        sent += size
        fake.now += 0.1  # the publish itself takes time
    assert round(fake.now - 1000.0, 6) == 3.6  # 14 calls at 4 a second, then the last publish


def test_a_small_rate_sends_one_call_a_message():
    assert replay.message_size(None, 100) == 100
    assert replay.message_size(0.5, 100) == 1
    assert replay.message_size(5000, 100) == 100


def test_replay_batch_size_sets_the_calls_per_message(
    invoke: Invoke, shop: int, redis_client: redis.Redis
):
    lines = ndjson(*({**TRACK, "userId": f"u{i}", "messageId": f"m-{i}"} for i in range(7)))
    replay_ran(invoke("replay", "-", "--app", "shop", stdin=lines, env={"REPLAY_BATCH_SIZE": "3"}))
    assert [len(env["calls"]) for env in envelopes(redis_client)] == [3, 3, 1]


# --- idempotency -------------------------------------------------------------------------------


def test_replaying_a_file_twice_gives_the_same_message_ids(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    path = write(tmp_path, "c.ndjson", MIXED)
    replay_ran(invoke("replay", path, "--app", "shop"))
    first = message_ids(redis_client)
    redis_client.delete(REPLAY)
    replay_ran(invoke("replay", path, "--app", "shop"))
    assert message_ids(redis_client) == first
    assert len(set(first)) == 5


def test_derived_ids_ignore_key_order_and_the_write_key():
    a = {"type": "track", "event": "E", "userId": "u", "properties": {"a": 1, "b": 2}}
    b = {"properties": {"b": 2, "a": 1}, "userId": "u", "event": "E", "type": "track"}
    assert derived_message_id(a) == derived_message_id(b)
    assert derived_message_id(a) != derived_message_id({**a, "event": "F"})
    line_a = replay.check_line(1, orjson.dumps({**a, "writeKey": "k1"}), Settings())
    assert message_id_of(line_a.calls[0]) == derived_message_id(a)
    # A blank messageId cannot serve as a key: the derived one stands in.
    assert message_id_of({**a, "messageId": " "}) == derived_message_id({**a, "messageId": " "})


def test_a_replayed_line_keeps_numeric_ids_exact_and_refuses_inexact_ones():
    """The receiver's rule (shared.calls.parse_json), for the same reasons: a 21-digit id read as
    a float would join another user."""
    raw = b'{"type":"identify","userId":123456789012345678901,"traits":{}}'
    line = replay.check_line(1, raw, Settings())
    assert line.calls[0]["userId"] == "123456789012345678901"
    refused = replay.check_line(2, b'{"type":"identify","userId":1.5}', Settings())
    assert refused.calls == []
    assert refused.rejections[0].codes == ("inexact_id",)


# --- failures ----------------------------------------------------------------------------------


def test_unknown_app_is_one_line(invoke: Invoke, shop: int, tmp_path: Path):
    line = one_line_error(invoke("replay", write(tmp_path, "c.ndjson", MIXED), "--app", "nope"))
    assert line == "Error: no app named 'nope'"


def test_redis_down_is_one_line_and_reads_nothing(invoke: Invoke, shop: int, tmp_path: Path):
    path = write(tmp_path, "c.ndjson", MIXED)
    line = one_line_error(
        invoke("replay", path, "--app", "shop", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    )
    assert line.startswith("Error: cannot reach Redis")


def test_redis_lost_midway_says_a_rerun_is_safe():
    sent: list[dict[str, Any]] = []

    def flaky(envelope: dict[str, Any]) -> None:
        if sent:
            raise BrokerUnavailable("ConnectionError: gone")
        sent.append(envelope)

    calls = [{**TRACK, "messageId": f"m-{i}"} for i in range(250)]
    with pytest.raises(replay.ReplayError) as lost:
        replay.replay_lines(
            enumerate(ndjson(*calls).splitlines(), 1), app_id=1, settings=Settings(), send=flaky
        )
    assert "after 100 calls were enqueued" in str(lost.value)
    assert "again is safe" in str(lost.value)


def test_missing_file_is_a_usage_error(invoke: Invoke, shop: int, tmp_path: Path):
    result = invoke("replay", str(tmp_path / "none.ndjson"), "--app", "shop")
    assert result.exit_code == 2
    assert "does not exist" in one_line_error(result)


def test_an_unreadable_file_is_one_line(invoke: Invoke, shop: int, tmp_path: Path):
    # A Unix socket exists and is not a directory, yet open() refuses it, even to root.
    path = str(tmp_path / "c.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        line = one_line_error(invoke("replay", path, "--app", "shop"))
    assert line == f"Error: cannot read {path}: No such device or address"


def test_the_message_decoder_reads_what_replay_wrote(
    invoke: Invoke, shop: int, redis_client: redis.Redis, tmp_path: Path
):
    replay_ran(invoke("replay", write(tmp_path, "c.ndjson", MIXED), "--app", "shop"))
    raw = redis_client.lrange(REPLAY, 0, -1)
    decoded = [decode_envelope(r) for r in reversed(raw)]
    assert [e.message_ids for e in decoded] == [e["message_ids"] for e in envelopes(redis_client)]


class _Filling:
    """A HighWater over its mark for the first `readings` readings."""

    def __init__(self, readings: int) -> None:
        self.left = readings

    def over(self) -> bool:
        self.left -= 1
        return self.left >= 0


def test_a_replay_waits_while_redis_is_past_its_high_water_mark() -> None:
    # The receivers refuse past the mark; a backfill must not take the workers' room either.
    sent: list[dict[str, Any]] = []
    waits: list[float] = []
    told: list[str] = []

    class Recorder:
        def publish(self, envelope: dict[str, Any], queue: str) -> None:
            sent.append(envelope)

    send = replay.publisher_send(
        cast(Any, Recorder()),
        REPLAY,
        cast(Any, _Filling(3)),
        on_wait=lambda: told.append("waiting"),
        sleep=waits.append,
    )
    send({"calls": []})
    assert (len(sent), len(waits), told) == (1, 3, ["waiting"])
    send({"calls": []})
    assert (len(sent), len(waits)) == (2, 3)
