"""The read model over rows written straight through the ORM: shapes, order, limits, scoping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from shared import readmodel
from shared.models import (
    ApiKey,
    AttributeDefinition,
    Company,
    Identity,
    Membership,
    TrustedDomain,
)
from shared.readmodel import NotFound
from tests.support.readmodel import (
    COMPANY_KEYS,
    DEFINITION_KEYS,
    EVENT_KEYS,
    KEY_KEYS,
    PAGEVIEW_KEYS,
    PROFILE_KEYS,
    T0,
    make_user,
    seed,
)


@pytest.fixture
def data(clean_db: Engine, db: Session) -> dict[str, Any]:
    # Emptied first: CLI tests commit their apps, and app names are unique.
    return seed(db)


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement sent while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_user_profile_shape_and_values(db: Session, data: dict[str, Any]) -> None:
    profile = readmodel.user_profile(db, data["shop"].id, "u1")
    assert set(profile) == PROFILE_KEYS
    assert profile["user_id"] == "u1"
    assert profile["anonymous_ids"] == ["anon-a", "anon-b"]
    assert profile["email"] == "ada@example.com"
    assert profile["gender"] == "female"
    assert profile["phone"] is None
    assert profile["page_views"] == 3
    assert profile["first_seen"] == "2024-03-01T12:00:00.000Z"
    assert profile["last_seen"] == "2024-03-01T14:00:00.000Z"
    assert profile["attributes"] == {"plan": "pro", "seats": 3}
    assert profile["companies"] == [
        {"group_id": "beta", "name": "Beta", "member_since": "2024-03-01T12:00:00.000Z"},
        {"group_id": "acme", "name": "Acme", "member_since": "2024-03-02T12:00:00.000Z"},
    ]


def test_user_profile_by_anonymous_id(db: Session, data: dict[str, Any]) -> None:
    assert readmodel.user_profile(db, data["shop"].id, "anon-b")["user_id"] == "u1"
    visitor = readmodel.user_profile(db, data["shop"].id, "anon-z")
    assert visitor["user_id"] is None
    assert visitor["anonymous_ids"] == ["anon-c", "anon-z"]
    assert visitor["first_seen"] is None
    assert visitor["attributes"] == {}
    assert visitor["companies"][0]["group_id"] == "acme"


def test_a_user_id_wins_over_an_anonymous_id_of_the_same_value(
    db: Session, data: dict[str, Any]
) -> None:
    make_user(db, data["shop"], "anon-a")  # someone whose userId is ada's anonymous id
    assert readmodel.user_profile(db, data["shop"].id, "anon-a")["user_id"] == "anon-a"


def test_apps_do_not_see_each_other(db: Session, data: dict[str, Any]) -> None:
    assert readmodel.user_profile(db, data["other"].id, "u1")["email"] == "someone-else@example.com"
    with pytest.raises(NotFound):
        readmodel.user_profile(db, data["other"].id, "anon-a")
    with pytest.raises(NotFound):
        readmodel.company_profile(db, data["other"].id, "acme")
    assert readmodel.user_events(db, data["other"].id, "u1") == []


@pytest.mark.parametrize(
    "query",
    [readmodel.user_profile, readmodel.user_events, readmodel.user_pageviews],
)
def test_unknown_user(db: Session, data: dict[str, Any], query: Any) -> None:
    with pytest.raises(NotFound, match="nobody"):
        query(db, data["shop"].id, "nobody")


def test_events_newest_first(db: Session, data: dict[str, Any]) -> None:
    events = readmodel.user_events(db, data["shop"].id, "anon-a")
    assert all(set(e) == EVENT_KEYS for e in events)
    assert [e["message_id"] for e in events] == ["e3", "e2", "e1"]
    assert {k: v for k, v in events[0].items() if k != "cursor"} == {
        "event": "Order Completed",
        "properties": {"total": 9.5},
        "timestamp": "2024-03-01T14:00:00.000Z",
        "message_id": "e3",
    }
    limited = readmodel.user_events(db, data["shop"].id, "u1", limit=2)
    assert [e["message_id"] for e in limited] == ["e3", "e2"]
    assert readmodel.user_events(db, data["shop"].id, "anon-z") == []


def test_pageviews_newest_first(db: Session, data: dict[str, Any]) -> None:
    views = readmodel.user_pageviews(db, data["shop"].id, "u1")
    assert all(set(v) == PAGEVIEW_KEYS for v in views)
    assert [v["message_id"] for v in views] == ["p3", "p2", "p1"]
    assert {k: v for k, v in views[0].items() if k != "cursor"} == {
        "kind": "screen",
        "url": "https://shop.example.com/p3",
        "path": "/p3",
        "title": "Title p3",
        "referrer": "https://search.example.com/",
        "name": "Home",
        "timestamp": "2024-03-01T12:09:00.000Z",
        "message_id": "p3",
    }
    assert [v["message_id"] for v in readmodel.user_pageviews(db, data["shop"].id, "u1", 1)] == [
        "p3"
    ]


def test_company_profile(db: Session, data: dict[str, Any]) -> None:
    company = readmodel.company_profile(db, data["shop"].id, "acme")
    assert set(company) == COMPANY_KEYS
    assert company["name"] == "Acme"
    assert company["employees"] == 10
    assert company["city"] == "Paris"
    assert company["description"] is None
    assert company["attributes"] == {"tier": "gold"}
    # ada by her userId, the visitor by its first anonymous id; in the order they were created.
    assert company["users"] == ["u1", "anon-c"]
    assert company["next_cursor"] is None
    assert readmodel.company_profile(db, data["shop"].id, "beta")["users"] == ["u1"]
    with pytest.raises(NotFound, match="nope"):
        readmodel.company_profile(db, data["shop"].id, "nope")


def test_a_company_without_members(db: Session, data: dict[str, Any]) -> None:
    db.add(Company(app_id=data["shop"].id, group_id="empty"))
    db.flush()
    company = readmodel.company_profile(db, data["shop"].id, "empty")
    assert company["users"] == []
    assert company["attributes"] == {}


def test_a_profile_is_a_handful_of_statements(
    db: Session, data: dict[str, Any], statements: list[str]
) -> None:
    shop = data["shop"]
    for n in range(20):
        company = Company(app_id=shop.id, group_id=f"c{n}", name=f"C{n}")
        db.add(company)
        db.flush()
        db.add(Membership(company_id=company.id, user_pk=data["ada"].id, member_since=T0))
        db.add(Identity(app_id=shop.id, kind="anonymous", value=f"x{n}", user_pk=data["ada"].id))
    db.flush()
    shop_id = shop.id
    db.expire_all()  # nothing may come from the identity map
    statements.clear()
    profile = readmodel.user_profile(db, shop_id, "u1")
    assert len(profile["companies"]) == 22
    assert len(profile["anonymous_ids"]) == 22
    # The fourth: the profiles merged into it whose history has not moved yet.
    assert len(statements) <= 4
    statements.clear()
    assert len(readmodel.company_profile(db, shop_id, "acme")["users"]) == 2
    assert len(statements) <= 4


def test_attribute_list(db: Session, data: dict[str, Any]) -> None:
    shop = data["shop"]
    db.add_all(
        [
            AttributeDefinition(
                app_id=shop.id, scope="event", event="Order Completed", name="total",
                type="float", origin="traffic",
            ),
            AttributeDefinition(
                app_id=shop.id, scope="user", event="", name="plan", type="fixed",
                choices=["free", "pro"], origin="operator",
            ),
            AttributeDefinition(
                app_id=shop.id, scope="company", event="", name="tier", type="string",
                origin="traffic",
            ),
            AttributeDefinition(
                app_id=shop.id, scope="user", event="", name="age", type="integer",
                origin="traffic",
            ),
        ]
    )  # fmt: skip
    db.flush()
    listed = readmodel.attribute_list(db, shop.id)
    assert all(set(d) == DEFINITION_KEYS for d in listed)
    assert [(d["scope"], d["name"]) for d in listed] == [
        ("user", "age"),
        ("user", "plan"),
        ("company", "tier"),
        ("event", "total"),
    ]
    assert listed[1] == {
        "scope": "user",
        "event": None,
        "name": "plan",
        "type": "fixed",
        "choices": ["free", "pro"],
        "origin": "operator",
    }
    assert listed[3]["event"] == "Order Completed"
    assert readmodel.attribute_list(db, data["other"].id) == []


def test_key_domain_and_app_lists(db: Session, data: dict[str, Any]) -> None:
    shop = data["shop"]
    db.add_all(
        [
            ApiKey(id="key_a", app_id=shop.id, key_hash="a" * 64, prefix="ud_aaaaaaa"),
            ApiKey(
                id="key_b", app_id=shop.id, key_hash="b" * 64, prefix="ud_bbbbbbb", revoked_at=T0
            ),
            TrustedDomain(app_id=shop.id, host="*.example.com"),
        ]
    )
    db.flush()
    keys = readmodel.key_list(db, shop.id)
    assert all(set(k) == KEY_KEYS for k in keys)
    assert {k["key_id"]: k["revoked_at"] for k in keys} == {
        "key_a": None,
        "key_b": "2024-03-01T12:00:00.000Z",
    }
    assert [d["host"] for d in readmodel.domain_list(db, shop.id)] == ["*.example.com"]
    apps = {a["name"]: a for a in readmodel.app_list(db)}
    assert apps["shop"]["active_keys"] == 1
    assert apps["shop"]["trusted_domains"] == 1
    assert apps["other"]["webhook_secret_set"] is False
