"""Nothing silently changed: a value cut or refused on its way into a profile or an event is counted
where operators look (`userdest attributes ignored`), and a standard trait in a shape no field
takes is mapped where it can be and kept as a custom attribute."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from ops.cli.attributes import define_attribute
from shared import readmodel
from shared.models import App
from tests.support.fixtures import fixture
from tests.support.readmodel import shown_profile
from workers.apply.messages import Outcome

Apply = Callable[..., Outcome]

NOTE = "Please leave the parcel with the neighbour at number 12. " * 7  # 399 characters
PRODUCTS = [
    {
        "product_id": "507f1f77bcf86cd799439011",
        "sku": "45790-32",
        "name": "Monopoly: 3rd Edition",
        "price": 19,
        "quantity": 1,
        "category": "Games",
        "url": "https://www.example.com/product/path",
        "image_url": "https://www.example.com/product/path.jpg",
    },
    {
        "product_id": "505bd76785ebb509fc183733",
        "sku": "46493-32",
        "name": "Uno Card Game",
        "price": 3,
        "quantity": 2,
        "category": "Games",
    },
]
"""An `Order Completed` products list as Segment's e-commerce spec shows it (well over 255 characters
of JSON)."""


def order_completed(**properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "properties": {"order_id": "50314b8e9bcf000000000000", "total": 27.5, **properties},
        "context": {"library": {"name": "analytics.js", "version": "next-1.70.0"}},
    }


def ignored(conn: Connection, app_id: int) -> list[tuple[Any, ...]]:
    with Session(bind=conn) as session:
        rows = readmodel.ignored_list(session, app_id)
    return sorted((r["scope"], r["event"], r["name"], r["reason"], r["count"]) for r in rows)


def events(conn: Connection, app_id: int, id: str) -> list[dict[str, Any]]:
    with Session(bind=conn) as session:
        return readmodel.user_events(session, app_id, id, limit=None)


def test_a_long_string_is_stored_cut_and_the_cut_is_counted(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(order_completed(note=NOTE))
    [event] = events(conn, app_id, "u1")
    assert event["properties"]["note"] == NOTE[:255]
    assert ignored(conn, app_id) == [("event", "Order Completed", "note", "truncated", 1)]


def test_a_list_too_long_for_a_string_attribute_is_refused_whole_not_cut(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(order_completed(products=PRODUCTS))
    [event] = events(conn, app_id, "u1")
    assert "products" not in event["properties"]  # never a fragment of JSON that does not parse
    assert ignored(conn, app_id) == [("event", "Order Completed", "products", "json_too_long", 1)]


def test_a_list_that_fits_is_json_text_that_parses(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(order_completed(coupons=["SPRING", "VIP10"]))
    [event] = events(conn, app_id, "u1")
    assert orjson.loads(event["properties"]["coupons"]) == ["SPRING", "VIP10"]
    assert ignored(conn, app_id) == []


def test_a_json_attribute_keeps_the_list_whole(apply: Apply, conn: Connection, app_id: int) -> None:
    with Session(bind=conn) as session:
        app = session.get_one(App, app_id)
        define_attribute(session, app, "event", "Order Completed", "products", "json", None, False)
        session.flush()
    apply(order_completed(products=PRODUCTS))
    [event] = events(conn, app_id, "u1")
    assert event["properties"]["products"] == PRODUCTS
    assert ignored(conn, app_id) == []


def test_a_long_trait_is_cut_and_counted(apply: Apply, conn: Connection, app_id: int) -> None:
    apply({"type": "identify", "userId": "u1", "traits": {"bio": "x" * 300}})
    assert shown_profile(conn, app_id, "u1")["attributes"] == {"bio": "x" * 255}
    assert ignored(conn, app_id) == [("user", None, "bio", "truncated", 1)]


def test_rudderstack_addresses_fill_the_fields_from_the_first_and_are_kept(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    call = fixture("rudderstack-js-identify-addresses")
    apply(call)
    profile = shown_profile(conn, app_id, "user-id")
    assert (profile["country"], profile["region"], profile["city"]) == ("Belgium", None, "Brussels")
    addresses = call["context"]["traits"]["address"]
    assert orjson.loads(profile["attributes"]["address"]) == addresses
    assert ignored(conn, app_id) == []


def test_an_address_as_text_is_kept_as_a_custom_attribute(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply({"type": "identify", "userId": "u1", "traits": {"address": "Hauptstr. 1, 10115 Berlin"}})
    profile = shown_profile(conn, app_id, "u1")
    assert profile["attributes"] == {"address": "Hauptstr. 1, 10115 Berlin"}
    assert profile["city"] is None


def test_a_name_object_gives_first_and_last_name_and_is_kept(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    name = {"given_name": "Zofia", "family_name": "Nowak"}
    apply({"type": "identify", "userId": "u1", "traits": {"name": name}})
    profile = shown_profile(conn, app_id, "u1")
    assert (profile["first_name"], profile["last_name"]) == ("Zofia", "Nowak")
    assert orjson.loads(profile["attributes"]["name"]) == name


def test_a_standard_value_no_field_takes_is_counted(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply({"type": "identify", "userId": "u1", "traits": {"gender": "nonbinary"}})
    apply({"type": "group", "userId": "u1", "groupId": "g1", "traits": {"employees": -3}})
    assert shown_profile(conn, app_id, "u1")["gender"] is None
    assert ignored(conn, app_id) == [
        ("company", None, "employees", "uncoercible", 1),
        ("user", None, "gender", "uncoercible", 1),
    ]
