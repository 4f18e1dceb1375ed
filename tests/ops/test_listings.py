"""`userdest events list` and `userdest attributes ignored`: what traffic sent that is otherwise
invisible to an operator."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, text

from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.cli import invoker, ok, one_line_error
from tests.support.envelopes import envelope
from tests.support.factories import make_app
from tests.support.fixtures import fixture


def apply(engine: Engine, app_id: int, *calls: Any) -> None:
    with engine.begin() as conn:
        apply_envelope(conn, envelope(app_id, list(calls)))


def track(event: str, i: int, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "userId": f"u{i}",
        "properties": properties,
        "timestamp": f"2026-11-28T10:00:0{i}Z",
    }


def test_events_list_counts_each_name(clean_db: Engine, settings: Settings) -> None:
    app_id = make_app(clean_db, "shop")
    apply(
        clean_db,
        app_id,
        track("Signed Up", 1),
        track("Order Completed", 2),
        track("Order Completed", 3),
        fixture("server-track"),
    )
    run = invoker(settings)
    listed = orjson.loads(ok(run("events", "list", "--app", "shop", "--json")).stdout)
    assert listed == [
        {
            "event": "Order Completed",
            "count": 2,
            "last_at": "2026-11-28T10:00:03.000Z",
            "origin": "traffic",
        },
        {
            "event": "Signed Up",
            "count": 1,
            "last_at": "2026-11-28T10:00:01.000Z",
            "origin": "traffic",
        },
        {
            "event": "Subscription Renewed",
            "count": 1,
            "last_at": "2026-11-28T10:00:00.000Z",
            "origin": "traffic",
        },
    ]
    table = ok(run("events", "list", "--app", "shop")).stdout
    assert "Order Completed" in table and "Subscription Renewed" in table
    make_app(clean_db, "empty")
    assert "no events" in ok(run("events", "list", "--app", "empty")).stdout
    assert "no app named" in one_line_error(run("events", "list", "--app", "nope"))


def test_attributes_ignored_lists_values_by_attribute_and_reason(
    clean_db: Engine, settings: Settings
) -> None:
    app_id = make_app(clean_db, "shop")
    run = invoker(settings)
    ok(run("attributes", "define", "--app", "shop", "--scope", "user", "seats", "integer"))
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE apps SET max_event_names = 1 WHERE id = :a"), {"a": app_id})
    identify = {"type": "identify", "userId": "u1"}
    apply(
        clean_db,
        app_id,
        {**identify, "traits": {"seats": "many"}},
        {**identify, "traits": {"seats": 2.5}},
        {**identify, "traits": {"seats": "3"}},
        track("First", 1),
        track("Second", 2),
    )
    listed = orjson.loads(ok(run("attributes", "ignored", "--app", "shop", "--json")).stdout)
    assert [(r["scope"], r["event"], r["name"], r["reason"], r["count"]) for r in listed] == [
        ("user", None, "seats", "uncoercible", 2),
        ("event", "Second", None, "over_cap", 1),
    ]
    assert all(r["last_at"] for r in listed)
    table = ok(run("attributes", "ignored", "--app", "shop")).stdout
    assert "uncoercible" in table and "seats" in table
    make_app(clean_db, "empty")
    assert "nothing ignored" in ok(run("attributes", "ignored", "--app", "empty")).stdout


def test_attributes_ignored_shows_values_stored_cut_and_refused(
    clean_db: Engine, settings: Settings
) -> None:
    """A 400-character note and a products list on a track: before, the note was cut and the list
    became a fragment of JSON while this listing said "nothing ignored"."""
    app_id = make_app(clean_db, "shop")
    products = [
        {"product_id": f"p-{i}", "name": "Monopoly: 3rd Edition", "price": 19} for i in range(5)
    ]
    apply(clean_db, app_id, track("Order Completed", 1, note="n" * 400, products=products))
    listed = orjson.loads(
        ok(invoker(settings)("attributes", "ignored", "--app", "shop", "--json")).stdout
    )
    assert sorted((r["scope"], r["event"], r["name"], r["reason"], r["count"]) for r in listed) == [
        ("event", "Order Completed", "note", "truncated", 1),
        ("event", "Order Completed", "products", "json_too_long", 1),
    ]
