"""`userdest deadletters list|show|replay|purge` against dead letters as workers store them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from shared.calls import derived_message_id
from shared.envelope import Envelope
from shared.models import DeadLetter as DeadLetterRow
from shared.queues import INGEST, REPLAY
from shared.settings import Settings
from shared.tenancy import new_app
from shared.timeparse import iso
from tests.support.apply import apply_queued
from tests.support.cli import (
    Invoke,
    envelopes,
    invoker,
    ok,
    one_line_error,
    writes_private_files,
)
from tests.support.envelopes import sealed
from tests.support.tasks import FakeTask, applying
from workers.apply.deadletters import LetterToKeep, keep

LIST_KEYS = {"id", "app", "reason", "error", "attempts", "created_at", "call"}
SHOW_KEYS = LIST_KEYS | {"updated_at", "replayed_at", "message_id", "meta"}

STILL_BAD = {"type": "track", "userId": "u1"}
FIXED = {"type": "identify", "userId": "u2", "traits": {"plan": "pro"}}
FAILED = {"type": "track", "userId": "u3", "event": "Bought", "messageId": "m-9"}
EXHAUSTED = {"type": "page", "anonymousId": "anon-4", "name": "Home"}
ORPHAN = {"type": "track", "userId": "u5", "event": "E"}
RECEIVED = "2024-03-01T12:00:00.000Z"


@pytest.fixture
def invoke(settings: Settings) -> Invoke:
    return invoker(settings)


@dataclass
class Seeded:
    shop: int
    other: int
    still_bad: int
    fixed: int
    failed: int
    exhausted: int
    orphan: int


def _store(engine: Engine, app_id: int | None, letter: LetterToKeep) -> int:
    with engine.begin() as conn:
        keep(conn, app_id, [letter])
        return int(
            conn.scalar(
                text("SELECT id FROM dead_letters WHERE dedupe_key = :k"), {"k": letter.dedupe_key}
            )
        )


def letter_of(seeded_id: int, engine: Engine) -> DeadLetterRow:
    with Session(engine) as session:
        return session.get_one(DeadLetterRow, seeded_id)


FAILED_LETTER = LetterToKeep("failed:shop:m-9", "apply_failed", "boom", FAILED, "m-9", {})


@pytest.fixture
def seeded(clean_db: Engine, redis_client: redis.Redis) -> Seeded:
    """Five dead letters, oldest first: two the receiver refused in a batch (one of which its
    checks would take now), one a worker failed, one out of retries (another app), one orphan."""
    with Session(clean_db) as session:
        shop, other = new_app(session, "shop"), new_app(session, "other")
        session.commit()
        shop_id, other_id = shop.id, other.id
    meta = {"received_at": RECEIVED, "request_id": "req-1", "key_id": "key_1"}
    return Seeded(
        shop=shop_id,
        other=other_id,
        still_bad=_store(
            clean_db,
            shop_id,
            LetterToKeep(
                "rejected:shop:req-1:0",
                "missing_event",
                "a track call needs a non-empty event name",
                STILL_BAD,
                None,
                meta,
            ),
        ),
        fixed=_store(
            clean_db,
            shop_id,
            LetterToKeep("rejected:shop:req-1:1", "invalid_timestamp", "bad", FIXED, None, meta),
        ),
        failed=_store(
            clean_db,
            shop_id,
            LetterToKeep(
                FAILED_LETTER.dedupe_key,
                FAILED_LETTER.reason,
                FAILED_LETTER.error,
                FAILED,
                "m-9",
                {**meta, "request_id": "req-2"},
            ),
        ),
        exhausted=_store(
            clean_db,
            other_id,
            LetterToKeep(
                "retries_exhausted:other:t1:0:m-4",
                "retries_exhausted",
                "deadlock",
                EXHAUSTED,
                "m-4",
                {"request_id": "req-3"},
            ),
        ),
        orphan=_store(
            clean_db,
            None,
            LetterToKeep(
                "unknown_app:None:t2:0:None", "unknown_app", "no app 99", ORPHAN, None, {}
            ),
        ),
    )


def listed(invoke: Invoke, *args: str) -> list[dict[str, Any]]:
    return orjson.loads(ok(invoke("deadletters", "list", "--json", *args)).stdout)


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


# --- list and show -----------------------------------------------------------------------------


def test_list_newest_first_with_the_spec_shape(invoke: Invoke, seeded: Seeded):
    rows = listed(invoke)
    assert ids(rows) == [
        seeded.orphan,
        seeded.exhausted,
        seeded.failed,
        seeded.fixed,
        seeded.still_bad,
    ]
    assert all(set(row) == LIST_KEYS for row in rows)
    failed = rows[2]
    assert failed["app"] == "shop"
    assert failed["reason"] == "apply_failed"
    assert failed["error"] == "boom"
    assert failed["attempts"] == 1
    assert failed["call"] == FAILED
    assert failed["created_at"].endswith("Z")
    assert rows[0]["app"] is None  # an unknown app's call


def test_list_filters(invoke: Invoke, seeded: Seeded, clean_db: Engine):
    assert ids(listed(invoke, "--app", "other")) == [seeded.exhausted]
    assert ids(listed(invoke, "--reason", "apply_failed")) == [seeded.failed]
    assert ids(listed(invoke, "--app", "shop", "--reason", "missing_event")) == [seeded.still_bad]
    assert ids(listed(invoke, "--limit", "2")) == [seeded.orphan, seeded.exhausted]
    with clean_db.begin() as conn:
        conn.execute(
            text("UPDATE dead_letters SET created_at = now() - interval '3 days' WHERE id = :i"),
            {"i": seeded.still_bad},
        )
    assert ids(listed(invoke, "--older-than", "2d")) == [seeded.still_bad]
    assert seeded.still_bad not in ids(listed(invoke, "--newer-than", "1d12h"))
    assert len(listed(invoke, "--newer-than", "1h")) == 4
    assert listed(invoke, "--older-than", "1w") == []


def test_list_mistakes_are_one_line(invoke: Invoke, seeded: Seeded):
    assert one_line_error(invoke("deadletters", "list", "--app", "nope")) == (
        "Error: no app named 'nope'"
    )
    line = one_line_error(invoke("deadletters", "list", "--older-than", "soon"))
    assert "not a duration" in line


def test_list_as_a_table_abbreviates_the_call(invoke: Invoke, seeded: Seeded, clean_db: Engine):
    long_call = {**FIXED, "traits": {"bio": "x" * 500}}
    _store(clean_db, seeded.shop, LetterToKeep("bad:shop:long", "bad", "e", long_call, "long", {}))
    result = ok(invoke("deadletters", "list"))
    assert "apply_failed" in result.stdout
    assert "x" * 100 not in result.stdout
    assert ok(invoke("deadletters", "list", "--reason", "none")).stdout.strip() == "no dead letters"


def test_show_has_everything(invoke: Invoke, seeded: Seeded):
    shown = orjson.loads(ok(invoke("deadletters", "show", str(seeded.failed), "--json")).stdout)
    assert set(shown) == SHOW_KEYS
    assert shown["id"] == seeded.failed
    assert shown["message_id"] == "m-9"
    assert shown["meta"]["request_id"] == "req-2"
    assert shown["replayed_at"] is None
    assert shown["call"] == FAILED
    assert "apply_failed" in ok(invoke("deadletters", "show", str(seeded.failed))).stdout
    assert one_line_error(invoke("deadletters", "show", "999999")) == "Error: no dead letter 999999"


# --- replay ------------------------------------------------------------------------------------


def replay_json(invoke: Invoke, *args: str) -> dict[str, Any]:
    return orjson.loads(ok(invoke("deadletters", "replay", "--json", *args)).stdout)


def test_replay_of_an_app_enqueues_its_open_letters_keeping_message_ids(
    invoke: Invoke, seeded: Seeded, redis_client: redis.Redis, clean_db: Engine
):
    answer = replay_json(invoke, "--app", "shop")
    assert answer == {
        "replayed": 2,
        "messages": 1,
        "queue": "replay",
        "skipped": [
            {
                "id": seeded.still_bad,
                "reason": "missing_event",
                "error": "a track call needs a non-empty event name",
            }
        ],
    }
    assert redis_client.llen(INGEST) == 0
    [env] = envelopes(redis_client, REPLAY)
    assert env["app_id"] == seeded.shop
    assert env["source"] == "replay"
    assert env["key_id"] is None
    # The raw calls, with the time they were first received where they carry none of their own.
    assert env["calls"] == [{**FIXED, "receivedAt": RECEIVED}, {**FAILED, "receivedAt": RECEIVED}]
    assert env["message_ids"] == [derived_message_id(FIXED), "m-9"]

    assert letter_of(seeded.fixed, clean_db).replayed_at is not None
    assert letter_of(seeded.failed, clean_db).replayed_at is not None
    assert letter_of(seeded.still_bad, clean_db).replayed_at is None
    assert ids(listed(invoke, "--app", "shop")) == [seeded.still_bad]
    assert ids(listed(invoke, "--app", "shop", "--all")) == [
        seeded.failed,
        seeded.fixed,
        seeded.still_bad,
    ]
    shown = orjson.loads(ok(invoke("deadletters", "show", str(seeded.fixed), "--json")).stdout)
    assert shown["replayed_at"] is not None

    # Nothing open is left to replay but the letter the checks still refuse.
    again = replay_json(invoke, "--app", "shop")
    assert (again["replayed"], again["messages"], len(again["skipped"])) == (0, 0, 1)
    assert redis_client.llen(REPLAY) == 1


def test_replay_of_everything_groups_by_app_and_skips_an_unknown_app(
    invoke: Invoke, seeded: Seeded, redis_client: redis.Redis
):
    answer = replay_json(invoke)
    assert answer["replayed"] == 3
    assert answer["messages"] == 2
    assert sorted(s["id"] for s in answer["skipped"]) == [seeded.still_bad, seeded.orphan]
    assert {s["reason"] for s in answer["skipped"]} == {"missing_event", "unknown_app"}
    by_app = {env["app_id"]: env for env in envelopes(redis_client, REPLAY)}
    other = by_app[seeded.other]
    assert other["message_ids"] == ["m-4"]
    [call] = other["calls"]
    # No received_at was kept with it: the time it became a dead letter stands in.
    assert call["receivedAt"].endswith("Z")
    assert {k: v for k, v in call.items() if k != "receivedAt"} == EXHAUSTED


def test_replay_by_id_replays_even_a_replayed_letter_with_the_same_message_id(
    invoke: Invoke, seeded: Seeded, redis_client: redis.Redis
):
    replay_json(invoke, str(seeded.fixed))
    replay_json(invoke, str(seeded.fixed))
    first, second = envelopes(redis_client, REPLAY)
    assert first["message_ids"] == second["message_ids"] == [derived_message_id(FIXED)]
    assert replay_json(invoke, "--reason", "apply_failed")["replayed"] == 1


def test_a_letter_that_fails_again_is_open_again(invoke: Invoke, seeded: Seeded, clean_db: Engine):
    replay_json(invoke, str(seeded.failed))
    assert seeded.failed not in ids(listed(invoke))
    # The worker fails it again: its upsert bumps attempts and updated_at past replayed_at.
    with clean_db.begin() as conn:
        keep(conn, seeded.shop, [FAILED_LETTER])
    [row] = [r for r in listed(invoke) if r["id"] == seeded.failed]
    assert row["attempts"] == 2


def test_replay_mistakes_are_one_line_and_mark_nothing(
    invoke: Invoke, seeded: Seeded, redis_client: redis.Redis, clean_db: Engine
):
    assert one_line_error(invoke("deadletters", "replay", "999999")) == (
        "Error: no dead letter 999999"
    )
    line = one_line_error(invoke("deadletters", "replay", "--app", "other", str(seeded.fixed)))
    assert line == f"Error: no dead letter {seeded.fixed} for this app"
    line = one_line_error(
        invoke("deadletters", "replay", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    )
    assert line.startswith("Error: cannot reach Redis")
    with Session(clean_db) as session:
        assert session.scalars(select(DeadLetterRow.replayed_at)).all() == [None] * 5
    assert redis_client.llen(REPLAY) == 0


def test_the_readable_replay_answer(invoke: Invoke, seeded: Seeded):
    result = ok(invoke("deadletters", "replay", "--app", "shop"))
    assert "replayed" in result.stdout
    assert "missing_event" in result.stdout


def test_a_replayed_letter_applies_once_however_often_it_is_replayed(
    invoke: Invoke, seeded: Seeded, redis_client: redis.Redis, clean_db: Engine
):
    """After a partial success (the call applied, then a failure): a replay applies nothing twice."""
    for _ in range(2):
        replay_json(invoke, str(seeded.failed))
    outcomes = []
    for env in envelopes(redis_client, REPLAY):
        with clean_db.begin() as conn:
            outcomes.append(apply_queued(conn, env))
    assert sum(outcomes[0].applied.values()) == 1
    assert sum(outcomes[1].applied.values()) == 0
    assert outcomes[1].duplicates == 1
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM events")) == 1


def test_letters_of_unsigned_messages_replay_only_when_the_operator_vouches_for_them(
    invoke: Invoke, clean_db: Engine, redis_client: redis.Redis, settings: Settings
):
    """A message queued before envelopes were signed (or forged) is kept, never applied; its
    calls go back only with --vouch, then signed, and a worker applies them."""
    from workers.applier import Applier

    with Session(clean_db) as session:
        app_id = new_app(session, "shop").id
        session.commit()
    old = Envelope(
        app_id=app_id,
        received_at=RECEIVED,
        request_id="req-old",
        calls=[dict(FAILED)],
        message_ids=["m-9"],
    ).to_dict()
    applier = Applier(settings)
    try:
        applier.apply(FakeTask("queued-by-an-older-version"), old)
        [letter] = ids(listed(invoke, "--reason", "unsigned_envelope"))

        answer = replay_json(invoke)
        assert answer["replayed"] == 0 and redis_client.llen(REPLAY) == 0
        assert [(s["id"], s["reason"]) for s in answer["skipped"]] == [(letter, "unvouched")]
        assert "--vouch" in answer["skipped"][0]["error"]
        assert replay_json(invoke, str(letter))["replayed"] == 0  # named, still not vouched for
        assert ids(listed(invoke)) == [letter]

        vouched = replay_json(invoke, "--reason", "unsigned_envelope", "--vouch")
        assert (vouched["replayed"], vouched["skipped"]) == (1, [])
        [queued] = envelopes(redis_client, REPLAY)
        assert queued["source"] == "replay" and queued["message_ids"] == ["m-9"]
        applier.apply(FakeTask("vouched", REPLAY), queued)
    finally:
        applier.close()
    assert ids(listed(invoke)) == []
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM events")) == 1


# --- purge -------------------------------------------------------------------------------------


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM dead_letters")))


def test_purge_refuses_without_yes(invoke: Invoke, seeded: Seeded, clean_db: Engine):
    result = invoke("deadletters", "purge", "--app", "shop")
    assert result.exit_code == 2  # as every destructive command without --yes
    line = one_line_error(result)
    assert line.startswith("Error: this would delete 3 dead letters for good: add --yes to do it")
    assert line.endswith(" deadletters purge --help`)")
    assert count(clean_db) == 5


def test_purge_an_app_a_reason_or_what_was_replayed(
    invoke: Invoke, seeded: Seeded, clean_db: Engine
):
    purged = ok(invoke("deadletters", "purge", "--app", "other", "--yes", "--json"))
    assert orjson.loads(purged.stdout) == {"deleted": 1}
    assert count(clean_db) == 4

    replay_json(invoke, str(seeded.fixed))
    purged = ok(invoke("deadletters", "purge", "--replayed", "--yes", "--json"))
    assert orjson.loads(purged.stdout) == {"deleted": 1}
    assert letter_ids(clean_db) == {seeded.still_bad, seeded.failed, seeded.orphan}

    purged = ok(invoke("deadletters", "purge", "--reason", "unknown_app", "--yes", "--json"))
    assert orjson.loads(purged.stdout) == {"deleted": 1}
    assert "deleted" in ok(invoke("deadletters", "purge", "--yes")).stdout
    assert count(clean_db) == 0


def test_purge_by_age(invoke: Invoke, seeded: Seeded, clean_db: Engine):
    with clean_db.begin() as conn:
        conn.execute(
            text("UPDATE dead_letters SET created_at = now() - interval '40 days' WHERE id = :i"),
            {"i": seeded.failed},
        )
    purged = ok(invoke("deadletters", "purge", "--older-than", "30d", "--yes", "--json"))
    assert orjson.loads(purged.stdout) == {"deleted": 1}
    assert seeded.failed not in letter_ids(clean_db)


def letter_ids(engine: Engine) -> set[int]:
    with Session(engine) as session:
        return set(session.scalars(select(DeadLetterRow.id)))


def test_times_are_iso(invoke: Invoke, seeded: Seeded, clean_db: Engine):
    row = letter_of(seeded.failed, clean_db)
    [listed_row] = [r for r in listed(invoke) if r["id"] == seeded.failed]
    assert listed_row["created_at"] == iso(row.created_at)


def test_a_worker_failure_replays_with_its_batch_defaults_and_sent_at(
    invoke: Invoke,
    clean_db: Engine,
    redis_client: redis.Redis,
    settings: Settings,
):
    """A call sent to /v1/track has its type only in the envelope's defaults, and a batch call its
    context and sentAt there too: its dead letter must replay as it was sent."""
    from workers.applier import Applier

    with Session(clean_db) as session:
        app_id = new_app(session, "shop").id
        session.commit()
    call = {
        "userId": "u1",
        "event": "Bought",
        "messageId": "m-1",
        "timestamp": "2024-03-01T11:59:00Z",
    }
    env = Envelope(
        app_id=app_id,
        received_at=RECEIVED,
        request_id="req-9",
        calls=[call],
        message_ids=["m-1"],
        sent_at="2024-03-01T11:59:30Z",
        defaults={"type": "track", "context": {"locale": "pl-PL"}},
    )

    def crash(state: Any, c: Any) -> None:
        raise RuntimeError("bug")

    applier = Applier(settings, apply_group=applying(track=crash))
    try:
        applier.apply(FakeTask("task-1"), sealed(env))
    finally:
        applier.close()

    assert replay_json(invoke)["replayed"] == 1
    [replayed] = envelopes(redis_client, REPLAY)
    assert replayed["calls"] == [
        call | {"type": "track", "context": {"locale": "pl-PL"}, "sentAt": "2024-03-01T11:59:30Z",
                "receivedAt": RECEIVED}
    ]  # fmt: skip
    with clean_db.begin() as conn:
        outcome = apply_queued(conn, replayed)
    assert outcome.applied == {"track": 1}
    with clean_db.connect() as conn:
        occurred = conn.scalar(text("SELECT occurred_at FROM events"))
    assert iso(occurred) == "2024-03-01T11:59:30.000Z"  # skew-corrected as when first received


# --- export, fix, replay ----------------------------------------------------------------------


def test_export_out_is_private_and_never_written_through_a_link(
    invoke: Invoke, seeded: Seeded, tmp_path: Path
):
    writes_private_files(
        lambda out: invoke("deadletters", "export", "--app", "shop", "--out", str(out)), tmp_path
    )
    assert (tmp_path / "export.json").read_bytes().count(b"\n") >= 1


def test_export_fix_and_replay_from_the_file(
    invoke: Invoke, seeded: Seeded, clean_db: Engine, redis_client: redis.Redis, tmp_path
):
    exported = ok(invoke("deadletters", "export", "--app", "shop", "--reason", "missing_event"))
    [line] = exported.stdout.splitlines()
    row = orjson.loads(line)
    assert set(row) == LIST_KEYS | {"message_id"}
    assert (row["id"], row["call"]) == (seeded.still_bad, STILL_BAD)
    assert "exported 1 dead letters" in exported.stderr

    fixed_call = {**STILL_BAD, "event": "Signed Up"}
    edited = tmp_path / "fixed.ndjson"
    edited.write_bytes(orjson.dumps({**row, "call": fixed_call}) + b"\n")
    answer = orjson.loads(
        ok(invoke("deadletters", "replay", "--from", str(edited), "--json")).stdout
    )
    assert (answer["replayed"], answer["skipped"]) == (1, [])
    [queued] = envelopes(redis_client, REPLAY)
    assert queued["calls"][0]["event"] == "Signed Up"
    letter = letter_of(seeded.still_bad, clean_db)
    assert letter.replayed_at is not None
    assert letter.call == fixed_call and letter.meta["original_call"] == STILL_BAD


def test_replay_from_stdin_and_its_mistakes(invoke: Invoke, seeded: Seeded, clean_db: Engine):
    still_bad = orjson.dumps({"id": seeded.still_bad, "call": STILL_BAD}) + b"\n"
    answer = orjson.loads(
        ok(invoke("deadletters", "replay", "--from", "-", "--json", stdin=still_bad)).stdout
    )
    assert [s["id"] for s in answer["skipped"]] == [seeded.still_bad]  # not fixed: stays open
    assert letter_of(seeded.still_bad, clean_db).replayed_at is None

    def error(stdin: bytes, *args: str) -> str:
        return one_line_error(invoke("deadletters", "replay", "--from", "-", *args, stdin=stdin))

    assert "line 1: not JSON" in error(b"{oops\n")
    assert 'line 2: needs the letter\'s "id"' in error(still_bad + b'{"call": {}}\n')
    assert "no dead letter 999999" in error(b'{"id": 999999, "call": {}}\n')
    assert "holds no dead letter" in error(b"\n")
    both = invoke("deadletters", "replay", "--from", "-", "7", stdin=still_bad)
    assert both.exit_code == 2
