"""The change feed as workers write it: created with the fields set, updated with the names of
the fields that changed, merged, erased; nothing when a call changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text

from tests.workers.test_apply import define, identify, page
from workers.apply.messages import Outcome

Apply = Callable[..., Outcome]


def feed(conn: Connection) -> list[tuple[str, str, Any, Any]]:
    rows = conn.execute(
        text("SELECT entity, kind, fields, into_pk FROM changes ORDER BY xid, id")
    ).all()
    return [(r.entity, r.kind, r.fields, r.into_pk) for r in rows]


def test_profile_changes_name_their_fields(apply: Apply, conn: Connection, app_id: int) -> None:
    define(conn, app_id, "user", "plan", "string")
    apply(identify("u1", email="ada@example.com", plan="free"))
    apply(identify("u1", plan="pro"))
    apply(identify("u1", plan="pro"))  # the same values, at the same time: no change
    assert feed(conn) == [
        ("profile", "created", ["attributes.plan", "email", "page_views", "user_id"], None),
        ("profile", "updated", ["attributes.plan"], None),
    ]  # fmt: skip


def test_merges_and_companies_are_recorded(apply: Apply, conn: Connection, app_id: int) -> None:
    apply(identify("u1", email="u1@example.com"))
    apply(page(anonymous_id="a1"), {"type": "group", "anonymousId": "a1", "groupId": "g1",
                                     "traits": {"name": "Acme"}, "timestamp": "2026-11-28T10:00:00Z"})  # fmt: skip
    conn.execute(text("DELETE FROM changes"))
    apply(page("u1", "a1", ts="2026-11-28T11:00:00Z"))
    source = conn.scalar(text("SELECT id FROM users WHERE merged_into IS NOT NULL"))
    target = conn.scalar(text("SELECT id FROM users WHERE user_id = 'u1'"))
    kinds = feed(conn)
    assert ("profile", "merged", None, target) in kinds
    assert any(k[:2] == ("profile", "updated") for k in kinds)
    assert source is not None


def test_a_new_company_is_created_once(apply: Apply, conn: Connection, app_id: int) -> None:
    group = {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme"},
             "timestamp": "2026-11-28T10:00:00Z"}  # fmt: skip
    apply(group)
    apply({**group, "traits": {"name": "Acme Inc"}, "timestamp": "2026-11-28T11:00:00Z"})
    companies = [k for k in feed(conn) if k[0] == "company"]
    assert companies == [("company", "created", ["name"], None), ("company", "updated", ["name"], None)]  # fmt: skip
