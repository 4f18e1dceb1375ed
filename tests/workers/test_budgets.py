"""The budget of new names traffic may define per app, scope and hour: a burst of made-up names
takes a small part of a cap, the rest is counted, operators are never limited, and concurrent
workers never pass the budget together."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Connection, Engine, text

from shared.attributes import BUDGET_DEFAULT, IGNORED_NAMES_KEPT
from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.db import SUPPRESSION
from tests.support.envelopes import envelope, sealed
from tests.support.factories import make_app
from tests.support.tasks import FakeClock, FakeTask
from workers.applier import Applier
from workers.apply.messages import Outcome, apply_messages, prepare

Apply = Callable[..., Outcome]
BATCH = 2500
"""The calls of one batch at the receiver's limit (MAX_BATCH_CALLS)."""


def count(conn: Connection, sql: str, **params: Any) -> int:
    return int(conn.scalar(text(sql), params) or 0)


def defined(conn: Connection, scope: str = "user") -> set[str]:
    return set(
        conn.scalars(text("SELECT name FROM attribute_definitions WHERE scope = :s"), {"s": scope})
    )


def an_hour_later(conn: Connection) -> None:
    """As if the definitions made so far were made 61 minutes ago: the window has moved on."""
    for table in ("attribute_definitions", "event_definitions"):
        conn.execute(text(f"UPDATE {table} SET created_at = created_at - interval '61 minutes'"))  # noqa: S608 (fixed names)


def budget(conn: Connection, app_id: int, n: int | None) -> None:
    conn.execute(
        text("UPDATE apps SET definition_budget = :n WHERE id = :a"), {"n": n, "a": app_id}
    )


def test_two_full_batches_of_made_up_names_leave_the_caps_room_for_a_later_name(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    # Before the budget, these two batches defined 1,000 user attributes and 1,000 event names,
    # the default caps, and `plan` was dropped for good.
    apply(*[{"type": "identify", "userId": "x", "traits": {f"t{i}": "v"}} for i in range(BATCH)])
    apply(*[{"type": "track", "userId": "x", "event": f"E{i}"} for i in range(BATCH)])
    assert len(defined(conn)) == BUDGET_DEFAULT
    assert count(conn, "SELECT count(*) FROM event_definitions") == BUDGET_DEFAULT
    refused = "SELECT sum(count) FROM ignored_values WHERE reason = 'over_budget' AND scope = :s"
    assert count(conn, refused, s="user") == BATCH - BUDGET_DEFAULT
    assert count(conn, refused, s="event") == BATCH - BUDGET_DEFAULT

    outcome = apply({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}})
    assert outcome.ignored[("user", "", "plan", "over_budget")] == 1  # this hour's budget is spent
    an_hour_later(conn)
    outcome = apply({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}})
    assert "plan" in defined(conn)
    assert not outcome.ignored
    assert count(conn, "SELECT count(*) FROM attribute_definitions") < 1000  # the cap has room


def test_names_refused_by_the_budget_are_counted_per_name_and_then_together(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    budget(conn, app_id, 2)
    outcome = apply({"type": "identify", "userId": "u1", "traits": {"a": 1, "b": 2, "c": 3}})
    assert defined(conn) == {"a", "b"}
    assert outcome.ignored[("user", "", "c", "over_budget")] == 1
    apply({"type": "identify", "userId": "u1", "traits": {"c": 3, "d": 4}})
    rows = conn.execute(
        text("SELECT name, count FROM ignored_values WHERE reason = 'over_budget' ORDER BY name")
    ).all()
    assert [tuple(r) for r in rows] == [("c", 2), ("d", 1)]
    # Sender-named, like over_cap: past IGNORED_NAMES_KEPT names they count under `*`.
    apply({"type": "identify", "userId": "u1", "traits": {f"n{i}": 1 for i in range(150)}})
    assert count(conn, "SELECT count(*) FROM ignored_values WHERE reason = 'over_budget'") == (
        IGNORED_NAMES_KEPT + 1
    )
    assert count(conn, "SELECT sum(count) FROM ignored_values WHERE reason = 'over_budget'") == 153


def test_each_scope_has_its_own_budget(apply: Apply, conn: Connection, app_id: int) -> None:
    budget(conn, app_id, 1)
    apply(
        {"type": "identify", "userId": "u1", "traits": {"a": 1, "b": 2}},
        {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"c": 1, "d": 2}},
        {"type": "track", "userId": "u1", "event": "First", "properties": {"e": 1, "f": 2}},
        {"type": "track", "userId": "u1", "event": "Second", "properties": {"g": 1}},
    )
    assert defined(conn, "user") == {"a"}
    assert defined(conn, "company") == {"c"}
    # Event properties share one budget across the app's events.
    assert defined(conn, "event") == {"e"}
    assert set(conn.scalars(text("SELECT name FROM event_definitions"))) == {"First"}
    reasons = {
        (scope, event, name)
        for scope, event, name in conn.execute(
            text("SELECT scope, event, name FROM ignored_values WHERE reason = 'over_budget'")
        )
    }
    assert reasons == {
        ("user", "", "b"),
        ("company", "", "d"),
        ("event", "First", "f"),
        ("event", "Second", ""),  # the event name itself: the track was not recorded
    }


def test_the_cap_is_counted_before_the_budget(apply: Apply, conn: Connection, app_id: int) -> None:
    conn.execute(text("UPDATE apps SET max_user_attributes = 1 WHERE id = :a"), {"a": app_id})
    budget(conn, app_id, 1)
    outcome = apply({"type": "identify", "userId": "u1", "traits": {"a": 1, "b": 2}})
    assert outcome.ignored[("user", "", "b", "over_cap")] == 1


def test_operators_definitions_never_count_and_are_never_limited(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    budget(conn, app_id, 2)
    for i in range(5):  # made just now, as `attributes define` makes them
        conn.execute(
            text(
                "INSERT INTO attribute_definitions (app_id, scope, event, name, type, origin) "
                "VALUES (:a, 'user', '', :n, 'string', 'operator')"
            ),
            {"a": app_id, "n": f"op{i}"},
        )
        conn.execute(
            text(
                "INSERT INTO event_definitions (app_id, name, origin) VALUES (:a, :n, 'operator')"
            ),
            {"a": app_id, "n": f"Op{i}"},
        )
    apply(
        {"type": "identify", "userId": "u1", "traits": {"a": 1, "b": 2, "c": 3}},
        {"type": "track", "userId": "u1", "event": "E1"},
        {"type": "track", "userId": "u1", "event": "E2"},
        {"type": "track", "userId": "u1", "event": "E3"},
    )
    assert defined(conn) == {"op0", "op1", "op2", "op3", "op4", "a", "b"}
    assert count(conn, "SELECT count(*) FROM event_definitions WHERE origin = 'traffic'") == 2


def test_a_budget_of_zero_leaves_defining_to_operators(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    budget(conn, app_id, 0)
    outcome = apply({"type": "identify", "userId": "u1", "traits": {"a": 1}})
    assert defined(conn) == set()
    assert outcome.ignored[("user", "", "a", "over_budget")] == 1


def test_the_setting_is_the_budget_of_apps_without_their_own(conn: Connection, app_id: int) -> None:
    apply_messages(
        conn,
        [
            prepare(
                envelope(app_id, [{"type": "identify", "userId": "u", "traits": {"a": 1, "b": 2}}])
            )
        ],
        suppression=SUPPRESSION,
        definition_budget=1,
    )
    assert defined(conn) == {"a"}
    budget(conn, app_id, 3)  # the app's own budget wins
    apply_envelope(
        conn, envelope(app_id, [{"type": "identify", "userId": "u", "traits": {"c": 1, "d": 2}}])
    )
    assert defined(conn) == {"a", "c", "d"}


def test_a_worker_applies_definition_budget_and_counts_refusals_by_scope(
    settings: Settings, clean_db: Engine
) -> None:
    app_id = make_app(clean_db, "budgeted")
    applier = Applier(dataclasses.replace(settings, definition_budget=2), clock=FakeClock())
    name = "userdest_names_over_budget_total"
    before = REGISTRY.get_sample_value(name, {"scope": "user"}) or 0.0
    call = {"type": "identify", "userId": "u", "traits": {"a": 1, "b": 2, "c": 3, "d": 4}}
    try:
        applier.apply(FakeTask(queue="ingest"), sealed(envelope(app_id, [call])))
    finally:
        applier.close()
    with clean_db.connect() as conn:
        assert defined(conn) == {"a", "b"}
    assert (REGISTRY.get_sample_value(name, {"scope": "user"}) or 0.0) - before == 2


@pytest.mark.parametrize("scope", ["user", "event_names"])
def test_two_concurrent_transactions_never_pass_the_budget_together(
    clean_db: Engine, scope: str
) -> None:
    app_id = make_app(clean_db, "raced", definition_budget=3)

    def calls(prefix: str, user: str) -> list[dict[str, Any]]:
        if scope == "user":
            traits = {f"{prefix}{i}": "v" for i in range(3)}
            return [{"type": "identify", "userId": user, "traits": traits}]
        return [{"type": "track", "userId": user, "event": f"{prefix}{i}"} for i in range(3)]

    first = clean_db.connect()
    first.begin()
    apply_envelope(first, envelope(app_id, calls("a", "u1")))  # holds the definitions' lock
    failures: list[BaseException] = []

    def second() -> None:
        try:
            with clean_db.begin() as conn:
                apply_envelope(conn, envelope(app_id, calls("b", "u2")))
        except BaseException as exc:  # pragma: no cover (reported below)
            failures.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    try:
        # The second has read the definitions (the first's not committed yet) and waits for the lock.
        with clean_db.connect() as watcher:
            for _ in range(600):
                if watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                ):
                    break
                watcher.execute(text("SELECT pg_sleep(0.05)"))
            else:
                pytest.fail("the second transaction never waited for the definitions' lock")
        first.commit()
    finally:
        first.close()
        thread.join()
    assert not failures, failures
    with clean_db.connect() as conn:
        if scope == "user":
            names = defined(conn)
        else:
            names = set(conn.scalars(text("SELECT name FROM event_definitions")))
        refused = count(conn, "SELECT sum(count) FROM ignored_values WHERE reason = 'over_budget'")
    assert names == {"a0", "a1", "a2"}
    assert refused == 3
