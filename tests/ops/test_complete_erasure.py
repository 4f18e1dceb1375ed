"""Erasure leaves no byte of the person: a person made through every path the data can take, then
`userdest users delete`, then a `pg_dump` of the database and the queues in Redis searched for any
of their identifiers."""

from __future__ import annotations

import base64
import re
import subprocess
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, text

from shared import erasure, wire
from shared.celery_app import make_celery
from shared.publish import Publisher
from shared.queues import INGEST
from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.cli import invoker, ok
from tests.support.db import SUPPRESSION
from tests.support.envelopes import envelope

EMAIL = "Ada.Lovelace@Example.com"
PHONE = "+44 20 7946 0958"
IDENTIFIERS = (
    "ada-7731",
    "anon-ada-1",
    "anon-ada-2",
    "anon-ada-3",
    "anon-ada-9",
    "anon-ada-new",
    "ada.lovelace@example.com",
    "7946 0958",
    "442079460958",
)
"""Everything that names Ada, as it may appear in any byte (compared case-insensitively)."""


def _apply(engine: Engine, calls: list[Any], **kw: Any) -> None:
    with engine.begin() as conn:
        apply_envelope(conn, envelope(kw.pop("app_id"), calls, **kw))


def _make_ada(engine: Engine, app_id: int) -> None:
    """Ada through every path: identify with contacts, page under a second anonymous id, an event
    name holding her email, a company of her own and one shared with Bob, an alias merging a third
    anonymous id, ids sent quoted and padded, batch defaults carrying her email, dead letters (one
    linking an id seen nowhere else), and a replay run of her calls."""
    _apply(
        engine,
        [
            {"type": "identify", "userId": "ada-7731", "anonymousId": "anon-ada-1",
             "traits": {"email": EMAIL, "phone": PHONE, "name": "Ada Lovelace"}},
            {"type": "page", "userId": "ada-7731", "anonymousId": "anon-ada-2",
             "properties": {"url": "https://shop.example/ada", "title": "Ada's page"}},
            {"type": "track", "userId": "ada-7731", "event": "Invited ada.lovelace@example.com",
             "messageId": "m-ada-invite"},
            {"type": "group", "userId": "ada-7731", "groupId": "ada-ltd",
             "traits": {"name": "Ada Ltd", "email": EMAIL}},
            {"type": "group", "userId": "ada-7731", "groupId": "shared-co",
             "traits": {"name": "Shared Co", "email": EMAIL, "contact": EMAIL}},
            {"type": "identify", "userId": "bob-1", "traits": {"email": "bob@example.com"}},
            {"type": "group", "userId": "bob-1", "groupId": "shared-co"},
            {"type": "track", "userId": "bob-1", "event": "Bought"},
        ],
        app_id=app_id,
    )  # fmt: skip
    _apply(engine, [{"type": "page", "anonymousId": "anon-ada-3"}], app_id=app_id)
    _apply(
        engine,
        [
            {"type": "alias", "userId": "ada-7731", "previousId": "anon-ada-3"},
            {"type": "track", "userId": '"ada-7731"', "event": "Quoted"},
            {"type": "track", "userId": " ada-7731 ", "event": "Padded"},
            # Dead letters: a track without its event, sent padded; one linking an unseen id.
            {"type": "track", "userId": "  ada-7731"},
            {"type": "track", "userId": "ada-7731", "anonymousId": "anon-ada-9"},
        ],
        app_id=app_id,
        defaults={"context": {"ip": "203.0.113.77", "traits": {"email": EMAIL}}},
    )
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO replay_runs (id, app_id, queue, source) "
                "VALUES ('run-ada', :a, 'replay', 'ada-7731-export.jsonl')"
            ),
            {"a": app_id},
        )
        conn.execute(
            text(
                "INSERT INTO replay_run_messages (run_id, message_id) "
                "VALUES ('run-ada', 'm-ada-invite'), ('run-ada', 'm-bob')"
            )
        )


def _queue_calls(settings: Settings, client: redis.Redis, app_id: int) -> None:
    """Calls waiting in Redis: a new anonymous id with her email (which would bring her back) in
    one message with Bob's call, and a message of hers alone."""
    publisher = Publisher(make_celery(settings), client, settings)
    publisher.publish(
        envelope(
            app_id,
            [
                {"type": "identify", "anonymousId": "anon-ada-new", "traits": {"email": EMAIL}},
                {"type": "track", "userId": "bob-1", "event": "Queued for Bob"},
            ],
        ).to_dict(),
        INGEST,
    )
    publisher.publish(envelope(app_id, [{"type": "page", "userId": "ada-7731"}]).to_dict(), INGEST)


def _dump(settings: Settings) -> str:
    return subprocess.run(
        ["pg_dump", "--data-only", settings.database_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.lower()


def _redis_text(client: redis.Redis) -> str:
    """Every value of the test's Redis database as text, queued messages' bodies decoded."""
    out = []
    for key in client.scan_iter():
        kind = client.type(key)
        values: list[bytes] = []
        if kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"string":
            values = [client.get(key) or b""]
        for value in values:
            out.append(value.decode(errors="replace"))
            for chunk in re.findall(rb"[A-Za-z0-9+/=]{40,}", value):
                out.append(base64.b64decode(chunk + b"===").decode(errors="replace"))
    return "\n".join(out).lower()


@pytest.fixture
def shop(clean_db: Engine) -> int:
    with clean_db.begin() as conn:
        return int(conn.scalar(text("INSERT INTO apps (name) VALUES ('shop') RETURNING id")))


def test_erasure_leaves_no_byte_of_the_person_in_postgres_or_the_queues(
    clean_db: Engine, settings: Settings, shop: int, redis_client: redis.Redis
) -> None:
    _make_ada(clean_db, shop)
    _queue_calls(settings, redis_client, shop)
    before = _dump(settings)
    assert all(value.lower() in before for value in IDENTIFIERS[:5])  # she is there to erase

    answer = orjson.loads(
        ok(
            invoker(settings)("users", "delete", "--app", "shop", "ada-7731", "--yes", "--json")
        ).stdout
    )

    dump, queued = _dump(settings), _redis_text(redis_client)
    for value in IDENTIFIERS:
        assert value.lower() not in dump, f"{value} is still in the database"
        assert value.lower() not in queued, f"{value} is still queued"
    # Bob, his company and his queued call stay.
    assert "bob@example.com" in dump and "shared co" in dump and "bought" in dump
    assert "queued for bob" in queued
    assert "ada ltd" not in dump  # her own company goes with her
    assert answer["queued"] == {"calls": 2, "messages": 2}
    assert answer["rows"]["dead_letters"] == 2
    assert answer["rows"]["replay_run_messages"] == 1


def test_a_person_known_only_from_dead_letters_is_exported_and_erased(
    clean_db: Engine, settings: Settings, shop: int
) -> None:
    _apply(clean_db, [{"type": "track", "userId": ' "lost-1" '}], app_id=shop)
    run = invoker(settings)
    exported = orjson.loads(ok(run("users", "export", "--app", "shop", "lost-1")).stdout)
    assert exported["profile"] is None and len(exported["dead_letters"]) == 1
    ok(run("users", "delete", "--app", "shop", "lost-1", "--yes", "--keep-queued"))
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM dead_letters")) == 0
        assert erasure.suppressed(conn, shop, [("user", "lost-1")], SUPPRESSION)


def test_an_erased_email_keeps_the_person_out_until_lifted(
    clean_db: Engine, settings: Settings, shop: int
) -> None:
    """A call with a new anonymous id and the erased email is skipped, counted and explained."""
    _apply(clean_db, [{"type": "identify", "userId": "ada-7731", "traits": {"email": EMAIL}}],
           app_id=shop)  # fmt: skip
    run = invoker(settings)
    ok(run("users", "delete", "--app", "shop", "ada-7731", "--yes", "--keep-queued"))
    comeback = {"type": "identify", "anonymousId": "anon-ada-new", "messageId": "m-back",
                "traits": {"email": " ADA.lovelace@example.com"}}  # fmt: skip
    _apply(clean_db, [comeback], app_id=shop)
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM users")) == 0
    shown = orjson.loads(ok(run("messages", "show", "--app", "shop", "m-back", "--json")).stdout)
    assert shown["state"] == "skipped"
    listed = orjson.loads(ok(run("suppressions", "list", "--app", "shop", "--json")).stdout)
    assert {row["kind"] for row in listed} == {"user", "email"}
    lifted = orjson.loads(
        ok(run("suppressions", "lift", "--app", "shop", "--email", EMAIL, "--json")).stdout
    )
    assert lifted["lifted"] == 1
    _apply(clean_db, [{**comeback, "messageId": "m-again"}], app_id=shop)
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM users")) == 1


def test_suppression_keys_cannot_be_recomputed_without_the_secret(
    clean_db: Engine, shop: int
) -> None:
    """A copy of the database does not give erased ids back by hashing candidates."""
    with clean_db.begin() as conn:
        erasure.suppress(conn, shop, [("user", "1000")], SUPPRESSION)
        stored = conn.scalar(text("SELECT key FROM suppressed_ids"))
    assert stored == SUPPRESSION.key(shop, "user", "1000")
    assert stored.bytes != erasure.unkeyed(shop, "user", "1000")
    assert stored != erasure.Suppression("another-secret-0123456789").key(shop, "user", "1000")


def test_a_person_known_only_from_queued_calls_is_exported_and_erased(
    clean_db: Engine, settings: Settings, shop: int, redis_client: redis.Redis
) -> None:
    """Calls of someone never applied yet still wait in Redis: an access request lists them, and
    an erasure removes them and suppresses the ids, so nothing of them is applied later."""
    Publisher(make_celery(settings), redis_client, settings).publish(
        envelope(
            shop, [{"type": "identify", "userId": "new-9", "traits": {"email": EMAIL}}]
        ).to_dict(),
        INGEST,
    )
    run = invoker(settings)
    exported = orjson.loads(ok(run("users", "export", "--app", "shop", "new-9")).stdout)
    assert exported["profile"] is None
    assert [q["call"]["userId"] for q in exported["queued"]] == ["new-9"]
    answer = orjson.loads(
        ok(run("users", "delete", "--app", "shop", "new-9", "--yes", "--json")).stdout
    )
    assert answer["queued"] == {"calls": 1, "messages": 1}
    assert redis_client.llen(INGEST) == 0
    with clean_db.connect() as conn:
        assert erasure.suppressed(conn, shop, [("user", "new-9")], SUPPRESSION)
    gone = run("users", "export", "--app", "shop", "nobody-at-all")
    assert gone.exit_code != 0 and "no one" in gone.stderr


def test_ids_only_leaves_the_email_free_for_a_new_signup(
    clean_db: Engine, settings: Settings, shop: int
) -> None:
    _apply(clean_db, [{"type": "identify", "userId": "ada-7731", "traits": {"email": EMAIL}}],
           app_id=shop)  # fmt: skip
    ok(invoker(settings)("users", "delete", "--app", "shop", "ada-7731", "--yes", "--ids-only"))
    _apply(clean_db, [{"type": "identify", "userId": "ada-new", "traits": {"email": EMAIL}}],
           app_id=shop)  # fmt: skip
    _apply(clean_db, [{"type": "identify", "userId": "ada-7731"}], app_id=shop)
    with clean_db.connect() as conn:
        assert list(conn.scalars(text("SELECT user_id FROM users"))) == ["ada-new"]


def test_erasure_takes_the_person_out_of_an_unsigned_message_without_signing_it(
    clean_db: Engine, settings: Settings, shop: int, redis_client: redis.Redis
) -> None:
    """A forged (unsigned) message loses the person's calls, and stays unsigned: the CLI holds
    ENVELOPE_SECRET, and an erasure must not make a forgery pass."""
    _apply(clean_db, [{"type": "identify", "userId": "ada-7731"}], app_id=shop)
    forged = envelope(
        shop, [{"type": "page", "userId": "ada-7731"}, {"type": "page", "userId": "x"}]
    )
    redis_client.lpush(
        INGEST, wire.encode(wire.task_message(make_celery(settings), forged.to_dict(), INGEST, "x"))
    )
    ok(invoker(settings)("users", "delete", "--app", "shop", "ada-7731", "--yes"))
    (raw,) = redis_client.lrange(INGEST, 0, -1)
    _task, argument = wire.parse_task_message(raw)
    assert [c["userId"] for c in argument["calls"]] == ["x"]
    assert "mac" not in argument
