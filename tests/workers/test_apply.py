"""Applying calls to real Postgres: every rule of docs/contract.md that needs a database."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from shared import readmodel
from shared.attributes import IGNORED_NAMES_KEPT
from shared.calls import check_call
from shared.envelope import Envelope
from tests.support.db import SUPPRESSION
from tests.support.envelopes import envelope
from tests.support.factories import make_app
from tests.support.fixtures import fixture
from tests.support.readmodel import shown_profile
from workers.apply import store
from workers.apply.messages import APPLY, Outcome, apply_messages, prepare

Apply = Callable[..., Outcome]


def count(conn: Connection, sql: str, **params: Any) -> int:
    return int(conn.scalar(text(sql), params) or 0)


def define(
    conn: Connection, app_id: int, scope: str, name: str, type_: str, event: str = "", **kw: Any
) -> None:
    conn.execute(
        text(
            "INSERT INTO attribute_definitions (app_id, scope, event, name, type, choices, multiple, origin) "
            "VALUES (:a, :s, :e, :n, :t, CAST(:c AS jsonb), :m, 'operator')"
        ),
        {
            "a": app_id,
            "s": scope,
            "e": event,
            "n": name,
            "t": type_,
            "c": kw.get("choices"),
            "m": kw.get("multiple", False),
        },
    )


def identify(
    user_id: str | None = None,
    anonymous_id: str | None = None,
    ts: str = "2026-11-28T10:00:00Z",
    **traits: Any,
) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "identify", "traits": traits, "timestamp": ts}
    if user_id:
        call["userId"] = user_id
    if anonymous_id:
        call["anonymousId"] = anonymous_id
    return call


def page(
    user_id: str | None = None,
    anonymous_id: str | None = None,
    ts: str = "2026-11-28T10:00:00Z",
    url: str = "https://shop.example.com/",
) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "page", "properties": {"url": url}, "timestamp": ts}
    if user_id:
        call["userId"] = user_id
    if anonymous_id:
        call["anonymousId"] = anonymous_id
    return call


def test_reference_example_defined_number_converts_undefined_becomes_string(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    define(conn, app_id, "user", "custom_integer", "float")  # "number" in User.com's words
    apply(identify("u1", custom_integer="123", custom_integer_new=999))
    attrs = shown_profile(conn, app_id, "u1")["attributes"]
    assert attrs["custom_integer"] == 123
    assert attrs["custom_integer_new"] == "999"
    origin = conn.execute(
        text(
            "SELECT type, origin FROM attribute_definitions WHERE app_id = :a AND name = 'custom_integer_new'"
        ),
        {"a": app_id},
    ).one()
    assert tuple(origin) == ("string", "traffic")


def test_uncoercible_value_is_ignored_counted_and_keeps_the_stored_one(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    define(conn, app_id, "user", "logins", "integer")
    apply(identify("u1", ts="2026-11-28T10:00:00Z", logins=3))
    outcome = apply(identify("u1", ts="2026-11-28T11:00:00Z", logins="many", plan="pro"))
    p = shown_profile(conn, app_id, "u1")
    assert p["attributes"] == {"logins": 3, "plan": "pro"}
    assert outcome.ignored[("user", "", "logins", "uncoercible")] == 1
    assert (
        count(
            conn, "SELECT count FROM ignored_values WHERE app_id = :a AND name = 'logins'", a=app_id
        )
        == 1
    )


def test_operator_definitions_are_never_changed_by_traffic(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    define(conn, app_id, "user", "vip", "boolean")
    apply(identify("u1", vip="yes"), identify("u2", vip={"not": "a boolean"}))
    row = conn.execute(
        text("SELECT type, origin FROM attribute_definitions WHERE name = 'vip'")
    ).one()
    assert tuple(row) == ("boolean", "operator")
    assert shown_profile(conn, app_id, "u1")["attributes"] == {"vip": True}
    assert shown_profile(conn, app_id, "u2")["attributes"] == {}


def test_browser_identify_fixture_maps_traits_and_context(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(fixture("browser-identify.json"))
    p = shown_profile(conn, app_id, "97980cfea0067")
    assert (p["email"], p["first_name"], p["last_name"]) == ("zofia@example.com", "Zofia", "Nowak")
    assert (p["gender"], p["country"], p["region"], p["city"]) == (
        "female",
        "Poland",
        "Mazowieckie",
        "Warszawa",
    )
    assert p["phone"] == "+48 600 100 200"
    assert p["anonymous_ids"] == ["507f191e810c19729de860ea"]
    assert p["browser_family"] == "Chrome"
    assert p["device_type"] == "desktop"
    assert (p["language"], p["resolution"], p["ip_address"]) == (
        "pl-PL",
        "2560x1440",
        "198.51.100.23",
    )
    assert (p["timezone"], p["current_url"]) == ("Europe/Warsaw", "https://www.example.com/welcome")
    assert p["attributes"] == {
        "createdAt": "2026-11-28T09:15:00Z",
        "plan": "trial",
        "logins": "1",
        "newsletter": "true",
    }


def test_page_counters_with_out_of_order_timestamps(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(page(anonymous_id="a1", ts="2026-11-28T10:00:00Z"))
    apply(
        page(anonymous_id="a1", ts="2026-11-28T08:00:00Z"),
        page(anonymous_id="a1", ts="2026-11-28T12:00:00Z"),
    )
    apply(page(anonymous_id="a1", ts="2026-11-28T09:00:00Z"))
    p = shown_profile(conn, app_id, "a1")
    assert p["page_views"] == 4
    assert p["first_seen"] == "2026-11-28T08:00:00.000Z"
    assert p["last_seen"] == "2026-11-28T12:00:00.000Z"
    assert count(conn, "SELECT count(*) FROM page_views WHERE user_pk = :pk", pk=p["pk"]) == 4


def test_page_fixture_records_the_view(apply: Apply, conn: Connection, app_id: int) -> None:
    apply(fixture("browser-page.json"))
    view = conn.execute(text("SELECT * FROM page_views")).mappings().one()
    assert (view["kind"], view["name"], view["category"]) == ("page", "Pricing", "Marketing")
    assert (view["path"], view["title"], view["referrer"], view["search"]) == (
        "/pricing",
        "Pricing - Example",
        "https://www.google.com/",
        "?plan=pro",
    )
    assert view["message_id"] == "ajs-next-1f2e3d4c5b6a79887766554433221100"
    assert (
        shown_profile(conn, app_id, "507f191e810c19729de860ea")["current_url"]
        == "https://www.example.com/pricing?plan=pro"
    )


def test_screen_is_a_page_view_of_kind_screen(apply: Apply, conn: Connection, app_id: int) -> None:
    apply(fixture("android-screen.json"))
    p = shown_profile(conn, app_id, "6f1e8f5a-2b1c-4d3e-9f80-1a2b3c4d5e6f")
    assert p["page_views"] == 1
    assert (p["device_type"], p["os"], p["resolution"]) == ("mobile", "Android 14", "1080x2400")
    assert conn.scalar(text("SELECT kind || ':' || name FROM page_views")) == "screen:Cart"


def test_same_message_id_twice_counts_once(apply: Apply, conn: Connection, app_id: int) -> None:
    call = {**page(anonymous_id="a1"), "messageId": "m-1"}
    first = apply(call, dict(call))  # twice in one batch
    second = apply(dict(call))  # and redelivered later
    assert first.duplicates == 1 and second.duplicates == 1
    assert shown_profile(conn, app_id, "a1")["page_views"] == 1


def test_message_ids_are_per_app(apply: Apply, conn: Connection, app_id: int) -> None:
    other = make_app(conn, "other")
    call = {**page(anonymous_id="a1"), "messageId": "m-1"}
    apply(call)
    apply(envelope(other, [dict(call)]))
    assert count(conn, "SELECT count(*) FROM users WHERE page_views = 1") == 2


def test_older_identify_never_overwrites_a_newer_one(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(identify("u1", ts="2026-11-28T12:00:00Z", email="new@example.com", plan="pro"))
    apply(
        identify("u1", ts="2026-11-28T09:00:00Z", email="old@example.com", plan="free", phone="123")
    )
    p = shown_profile(conn, app_id, "u1")
    assert p["email"] == "new@example.com"
    assert p["attributes"]["plan"] == "pro"
    assert p["phone"] == "123"  # never written before: the older call may fill it


def test_null_clears_an_attribute_and_a_field(apply: Apply, conn: Connection, app_id: int) -> None:
    apply(identify("u1", ts="2026-11-28T10:00:00Z", email="a@example.com", plan="pro"))
    apply(identify("u1", ts="2026-11-28T11:00:00Z", email=None, plan=None))
    p = shown_profile(conn, app_id, "u1")
    assert p["email"] is None and p["attributes"] == {}


def test_anonymous_history_is_carried_into_the_identified_profile(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(
        page(anonymous_id="a1", ts="2026-11-28T09:00:00Z"),
        page(anonymous_id="a1", ts="2026-11-28T09:05:00Z"),
    )
    apply(identify("u1", "a1", ts="2026-11-28T09:10:00Z", email="z@example.com"))
    p = shown_profile(conn, app_id, "u1")
    assert p["user_id"] == "u1" and p["anonymous_ids"] == ["a1"]
    assert p["page_views"] == 2
    assert count(conn, "SELECT count(*) FROM users") == 1


def test_merge_of_two_existing_profiles(apply: Apply, conn: Connection, app_id: int) -> None:
    define(conn, app_id, "user", "score", "integer")
    apply(
        identify("u1", ts="2026-11-28T10:00:00Z", email="u1@example.com"),
        page("u1", ts="2026-11-28T10:00:00Z"),
    )
    apply(
        page(anonymous_id="a1", ts="2026-11-27T10:00:00Z"),
        identify(
            anonymous_id="a1",
            ts="2026-11-27T10:00:00Z",
            phone="555",
            score=5,
            email="anon@example.com",
        ),
        {
            "type": "track",
            "anonymousId": "a1",
            "event": "Viewed",
            "timestamp": "2026-11-27T10:01:00Z",
        },
        {
            "type": "group",
            "anonymousId": "a1",
            "groupId": "g1",
            "timestamp": "2026-11-27T10:02:00Z",
        },
    )
    apply(page("u1", "a1", ts="2026-11-28T11:00:00Z"))
    p = shown_profile(conn, app_id, "a1")
    assert p["user_id"] == "u1"
    assert p["page_views"] == 3
    assert p["first_seen"] == "2026-11-27T10:00:00.000Z"
    assert p["last_seen"] == "2026-11-28T11:00:00.000Z"
    assert p["email"] == "u1@example.com"  # the target's own value stays
    assert p["phone"] == "555" and p["attributes"] == {
        "score": 5
    }  # empty fields filled from the source
    assert count(conn, "SELECT count(*) FROM users WHERE merged_into IS NULL") == 1
    # The history moves in the background, in bounded batches, and the merged-away row goes.
    while store.move_merged(conn, limit=1):
        pass
    assert count(conn, "SELECT count(*) FROM users") == 1
    assert shown_profile(conn, app_id, "a1")["pk"] == p["pk"]
    assert count(conn, "SELECT count(*) FROM events WHERE user_pk = :pk", pk=p["pk"]) == 1
    assert count(conn, "SELECT count(*) FROM page_views WHERE user_pk = :pk", pk=p["pk"]) == 3
    assert count(conn, "SELECT count(*) FROM memberships WHERE user_pk = :pk", pk=p["pk"]) == 1


def test_an_identified_profile_is_never_merged_away(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(identify("alice", "device-1", email="alice@example.com"))
    apply(page("bob", "device-1"))  # bob signs in on alice's device
    alice, bob = shown_profile(conn, app_id, "alice"), shown_profile(conn, app_id, "bob")
    assert alice["pk"] != bob["pk"]
    assert alice["anonymous_ids"] == ["device-1"] and bob["anonymous_ids"] == []
    assert (alice["page_views"], bob["page_views"]) == (0, 1)
    assert bob["email"] is None


def test_placeholder_ids_are_treated_as_absent(apply: Apply, conn: Connection, app_id: int) -> None:
    apply(page("u1", "undefined"), page("u2", '"null"'), page("u3", "0"))
    assert count(conn, "SELECT count(*) FROM identities WHERE kind = 'anonymous'") == 0
    assert count(conn, "SELECT count(*) FROM users") == 3


def test_alias_merges_previous_into_user(apply: Apply, conn: Connection, app_id: int) -> None:
    apply(
        page(anonymous_id="507f191e810c19729de860ea"),
        identify("97980cfea0067", email="z@example.com"),
    )
    apply(fixture("alias.json"))
    p = shown_profile(conn, app_id, "97980cfea0067")
    assert p["anonymous_ids"] == ["507f191e810c19729de860ea"]
    assert p["page_views"] == 1 and p["email"] == "z@example.com"
    assert count(conn, "SELECT count(*) FROM users WHERE merged_into IS NULL") == 1


def test_a_merge_does_not_move_history_in_the_applying_transaction(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    # A 118-byte alias moved 25,000 rows in the request's transaction, at every such alias.
    apply(page(anonymous_id="anon-1"), identify("known", email="k@example.com"))
    source = shown_profile(conn, app_id, "anon-1")["pk"]
    conn.execute(
        text(
            "INSERT INTO page_views (app_id, user_pk, kind, occurred_at, message_id) "
            "SELECT :a, :u, 'page', now(), 'm' || g FROM generate_series(1, 2500) AS g"
        ),
        {"a": app_id, "u": source},
    )
    apply({"type": "alias", "previousId": "anon-1", "userId": "known"})
    target = shown_profile(conn, app_id, "known")
    assert shown_profile(conn, app_id, "anon-1")["pk"] == target["pk"] != source
    # Nothing of the history moved with the merge itself: it is the tombstone's until moved.
    assert count(conn, "SELECT count(*) FROM page_views WHERE user_pk = :s", s=source) == 2501
    assert count(conn, "SELECT merged_into FROM users WHERE id = :s", s=source) == target["pk"]
    # Readers see it on the target at once.
    with Session(bind=conn) as session:
        assert len(readmodel.user_pageviews(session, app_id, "known", limit=None)) == 2501
        assert readmodel.user_profile(session, app_id, "anon-1")["user_id"] == "known"
    # The background move: bounded batches, then the tombstone goes.
    moves = []
    while moved := store.move_merged(conn, limit=1000):
        moves.append(moved)
    assert max(moves) <= 1000 + 2  # page views, plus an identity and the last round
    assert count(conn, "SELECT count(*) FROM page_views WHERE user_pk = :t", t=target["pk"]) == 2501
    assert count(conn, "SELECT count(*) FROM users WHERE id = :s", s=source) == 0
    # A later merge into another profile again moves nothing in its own transaction.
    apply(identify("other"))
    apply({"type": "alias", "previousId": "known", "userId": "other"})
    assert count(conn, "SELECT count(*) FROM page_views WHERE user_pk = :t", t=target["pk"]) == 2501
    with Session(bind=conn) as session:
        assert len(readmodel.user_pageviews(session, app_id, "other", limit=None)) == 2501


@pytest.mark.parametrize(
    ("existing", "expect_user_id", "expect_anon"),
    [
        ("previous-only", "new-id", ["prev"]),
        ("user-only", "new-id", ["prev"]),
        ("neither", "new-id", ["prev"]),
    ],
)
def test_alias_when_only_one_or_neither_exists(
    apply: Apply,
    conn: Connection,
    app_id: int,
    existing: str,
    expect_user_id: str,
    expect_anon: list[str],
) -> None:
    if existing == "previous-only":
        apply(page(anonymous_id="prev"))
    elif existing == "user-only":
        apply(page("new-id"))
    apply({"type": "alias", "previousId": "prev", "userId": "new-id"})
    p = shown_profile(conn, app_id, "new-id")
    assert p["user_id"] == expect_user_id and p["anonymous_ids"] == expect_anon
    assert shown_profile(conn, app_id, "prev")["pk"] == p["pk"]
    assert count(conn, "SELECT count(*) FROM users") == 1


def test_alias_of_a_changed_user_id_keeps_the_old_id_working(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(identify("old-id", email="x@example.com"))
    apply({"type": "alias", "previousId": "old-id", "userId": "new-id"})
    apply(page("old-id"))
    p = shown_profile(conn, app_id, "new-id")
    assert p["user_id"] == "new-id" and p["page_views"] == 1 and p["email"] == "x@example.com"


def test_group_with_membership(apply: Apply, conn: Connection, app_id: int) -> None:
    define(conn, app_id, "company", "plan", "fixed", choices='["free", "pro", "enterprise"]')
    later = {
        **fixture("group.json"),
        "messageId": "g-2",
        "timestamp": "2026-11-29T09:20:00.000Z",
    }
    apply(later, fixture("group.json"))
    company = conn.execute(text("SELECT * FROM companies")).mappings().one()
    assert (company["group_id"], company["name"], company["employees"]) == (
        "0e8c78ea9d97a7b8185e8632",
        "Initech",
        329,
    )
    assert (company["email"], company["phone"], company["description"]) == (
        "office@initech.example",
        "+1 555 0100",
        "Software for banks",
    )
    assert (company["country"], company["region"], company["city"]) == ("USA", "TX", "Austin")
    assert company["attributes"] == {
        "industry": "Technology",
        "plan": "enterprise",
        "website": "https://initech.example",
        "createdAt": "2019-03-01T00:00:00Z",
    }
    membership = conn.execute(text("SELECT * FROM memberships")).mappings().one()
    assert membership["user_pk"] == shown_profile(conn, app_id, "97980cfea0067")["pk"]
    assert membership["member_since"].isoformat() == "2026-11-28T09:20:00+00:00"


def test_track_records_typed_properties_and_defines_new_ones(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    define(conn, app_id, "event", "total", "float", event="Order Completed")
    define(conn, app_id, "event", "revenue", "float", event="Order Completed")
    apply(fixture("ios-track.json"), fixture("server-track.json"))
    props = conn.scalar(
        text(
            "SELECT e.properties FROM events e JOIN event_definitions d ON d.id = e.event_id WHERE d.name = 'Order Completed'"
        )
    )
    assert props["total"] == 27.5 and props["revenue"] == 25.0
    assert props["currency"] == "EUR"
    assert props["products"] == '[{"sku":"45790-32","price":19.0,"quantity":1}]'
    names = set(conn.scalars(text("SELECT name FROM event_definitions")))
    assert names == {"Order Completed", "Subscription Renewed"}
    renewed = conn.execute(
        text(
            "SELECT name, type, origin FROM attribute_definitions WHERE event = 'Subscription Renewed' ORDER BY name"
        )
    ).all()
    assert [tuple(r) for r in renewed] == [
        ("amount", "string", "traffic"),
        ("plan", "string", "traffic"),
        ("renewed_at", "string", "traffic"),
        ("seats", "string", "traffic"),
    ]


def test_engage_audience_identify_and_track(apply: Apply, conn: Connection, app_id: int) -> None:
    define(conn, app_id, "user", "order_completed_last_30days", "boolean")
    apply(fixture("engage-audience-identify.json"), fixture("engage-audience-track.json"))
    p = shown_profile(conn, app_id, "97980cfea0067")
    assert p["attributes"] == {"order_completed_last_30days": True}
    assert p["email"] == "zofia@example.com"
    exited = {
        **fixture("engage-audience-identify.json"),
        "messageId": "exit",
        "timestamp": "2026-11-29T12:00:00.000Z",
    }
    exited["traits"] = {"order_completed_last_30days": False}
    apply(exited)
    assert shown_profile(conn, app_id, "97980cfea0067")["attributes"] == {
        "order_completed_last_30days": False
    }
    assert count(conn, "SELECT count(*) FROM events") == 1


def test_webhook_forwarded_call_uses_its_corrected_timestamp(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(fixture("webhook-forwarded.json"), received_at="2026-11-28T13:00:00.000Z")
    occurred = conn.scalar(text("SELECT occurred_at FROM events"))
    assert occurred.isoformat() == "2026-11-28T09:15:59.500000+00:00"


def test_a_bad_call_in_a_good_batch(apply: Apply, conn: Connection, app_id: int) -> None:
    def crashing_identify(state: Any, call: Any) -> None:
        if call.user_id == "boom":
            raise RuntimeError("worker code crashed on this call")
        APPLY["identify"](state, call)

    calls = [
        page(anonymous_id="a1"),
        {"type": "track", "anonymousId": "a1"},  # no event name
        identify("boom", email="x@example.com"),
        "not even an object",
        identify("u2", email="u2@example.com"),
        page(anonymous_id="a1", ts="2026-11-28T10:05:00Z"),
    ]
    outcome = apply_messages(
        conn,
        [prepare(envelope(app_id, calls))],
        appliers={**APPLY, "identify": crashing_identify},
        suppression=SUPPRESSION,
    )
    assert shown_profile(conn, app_id, "a1")["page_views"] == 2
    assert shown_profile(conn, app_id, "u2")["email"] == "u2@example.com"
    letters = conn.execute(
        text("SELECT reason, error, call FROM dead_letters ORDER BY reason")
    ).all()
    assert [r.reason for r in letters] == ["apply_failed", "missing_event", "not_an_object"]
    assert "worker code crashed" in letters[0].error and letters[0].call["userId"] == "boom"
    assert sum(outcome.dead_letters.values()) == 3
    assert outcome.applied == {"page": 2, "identify": 1}
    # The crashed call's messageId was not claimed, so a dead-letter replay after a fix applies it.
    apply(
        letters[0].call
        | {
            "messageId": conn.scalar(
                text("SELECT message_id FROM dead_letters WHERE reason = 'apply_failed'")
            )
        }
    )
    assert shown_profile(conn, app_id, "boom")["email"] == "x@example.com"


def test_rejected_calls_from_the_receiver_become_dead_letters_once(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    env = envelope(
        app_id,
        [page(anonymous_id="a1")],
        rejected=[
            {
                "index": 1,
                "call": {"type": "page"},
                "errors": [{"code": "missing_user_id", "message": "no id"}],
            }
        ],
    )
    apply(env)
    apply(Envelope.from_dict(env.to_dict()))  # redelivered
    row = conn.execute(text("SELECT reason, error, attempts, call FROM dead_letters")).one()
    assert tuple(row) == ("missing_user_id", "no id", 2, {"type": "page"})
    assert shown_profile(conn, app_id, "a1")["page_views"] == 1


def test_a_batchs_defaults_are_stored_once_for_all_its_dead_letters(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    # 2,400 bad calls sharing a 100 KB context once stored 239 MB (the context in every
    # letter's meta). Random text, so Postgres's compression cannot hide a copy.
    context = {"library": {"name": "analytics.js"}, "blob": secrets.token_urlsafe(30_000)}
    rejected = [
        {"index": i, "call": {}, "errors": [{"code": "missing_user_id", "message": "no id"}]}
        for i in range(200)
    ]
    env = envelope(app_id, [], defaults={"context": context}, rejected=rejected)
    request_bytes = len(json.dumps(env.to_dict()))
    apply(env)
    apply(envelope(app_id, [], defaults={"context": context}, rejected=rejected[:3]))
    stored = count(
        conn,
        "SELECT (SELECT sum(pg_column_size(call) + pg_column_size(meta)) FROM dead_letters)"
        " + (SELECT sum(pg_column_size(defaults)) FROM dead_letter_defaults)",
    )
    assert count(conn, "SELECT count(*) FROM dead_letters") == 203
    assert count(conn, "SELECT count(*) FROM dead_letter_defaults") == 1
    assert stored < 1.5 * request_bytes
    assert count(conn, "SELECT count(*) FROM dead_letters WHERE meta ? 'defaults'") == 0


def test_names_past_the_cap_do_not_grow_ignored_values_without_bound(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    # Each new name past the cap was a new row: 10,000 names, 9,990 rows.
    conn.execute(text("UPDATE apps SET max_user_attributes = 2 WHERE id = :a"), {"a": app_id})
    for round_ in range(3):
        apply(identify("u1", **{f"n{round_}_{i}": "v" for i in range(150)}))
    apply(identify("u1", **{"x" * 65: "v", "y" * 66: "v"}))  # badly named
    rows = count(conn, "SELECT count(*) FROM ignored_values WHERE reason = 'over_cap'")
    assert rows == IGNORED_NAMES_KEPT + 1  # the first ones by name, the rest under `*`
    total = count(conn, "SELECT sum(count) FROM ignored_values WHERE reason = 'over_cap'")
    assert total == 3 * 150 - 2  # every ignored value still counted
    assert count(conn, "SELECT count FROM ignored_values WHERE name = 'n0_10'") == 1
    before = count(conn, "SELECT count(*) FROM ignored_values")
    apply(identify("u1", **{f"again_{i}": "v" for i in range(50)}))
    assert count(conn, "SELECT count(*) FROM ignored_values") == before


def test_batch_defaults_merge_under_each_call(apply: Apply, conn: Connection, app_id: int) -> None:
    env = envelope(
        app_id,
        [{"type": "identify", "userId": "u1", "context": {"timezone": "UTC"}}],
        defaults={"context": {"locale": "fr-FR", "timezone": "Europe/Paris"}},
    )
    apply(env)
    p = shown_profile(conn, app_id, "u1")
    assert (p["language"], p["timezone"]) == ("fr-FR", "UTC")


def test_cap_on_user_attributes_ignores_and_counts_new_names(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    conn.execute(text("UPDATE apps SET max_user_attributes = 2 WHERE id = :a"), {"a": app_id})
    outcome = apply(identify("u1", a="1", b="2", c="3"))
    assert shown_profile(conn, app_id, "u1")["attributes"] == {"a": "1", "b": "2"}
    assert outcome.ignored[("user", "", "c", "over_cap")] == 1


def test_cap_on_event_names(apply: Apply, conn: Connection, app_id: int) -> None:
    conn.execute(text("UPDATE apps SET max_event_names = 1 WHERE id = :a"), {"a": app_id})
    apply(
        {"type": "track", "userId": "u1", "event": "First"},
        {"type": "track", "userId": "u1", "event": "Second"},
        {"type": "track", "userId": "u1", "event": "First"},
    )
    assert count(conn, "SELECT count(*) FROM events") == 2
    assert count(conn, "SELECT count(*) FROM event_definitions") == 1


def test_key_last_used_is_written_by_the_worker_at_most_once_a_minute(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    key = f"key_{uuid.uuid4().hex[:8]}"  # the throttle is per process: a key no test used before
    conn.execute(
        text("INSERT INTO api_keys (id, app_id, key_hash, prefix) VALUES (:k, :a, :k, 'ud_x')"),
        {"k": key, "a": app_id},
    )
    apply(envelope(app_id, [page("u1")], key_id=key))
    first = conn.scalar(text("SELECT last_used_at FROM api_keys WHERE id = :k"), {"k": key})
    assert first is not None
    conn.execute(text("UPDATE api_keys SET last_used_at = NULL WHERE id = :k"), {"k": key})
    apply(envelope(app_id, [page("u1")], key_id=key))
    assert conn.scalar(text("SELECT last_used_at FROM api_keys WHERE id = :k"), {"k": key}) is None


def test_nul_characters_never_fail_a_call(apply: Apply, conn: Connection, app_id: int) -> None:
    define(conn, app_id, "user", "blob", "json")
    outcome = apply(
        identify("u1", blob={"k\u0000": ["\u0000"]}, email="a\u0000@example.com"),
        {"type": "track", "userId": "u1", "event": "E\u0000", "properties": {"p": "\u0000"}},
        {
            "type": "page",
            "userId": "u1\u0000",
            "messageId": "m\u0000",
            "properties": {"title": "t\u0000", "x": "\u0000"},
        },
    )
    assert outcome.applied == {"identify": 1, "track": 1, "page": 1}
    assert not outcome.dead_letters
    p = shown_profile(conn, app_id, "u1")
    assert p["attributes"]["blob"] == {"k\ufffd": ["\ufffd"]}
    assert "\u0000" not in (p["email"] or "")


LONG = secrets.token_urlsafe(4000)
"""An id that neither fits a btree index entry (~2.7 KB) nor compresses to fit one (a JWT, say)."""


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "track", "userId": LONG, "event": "E"},
        {"type": "page", "anonymousId": LONG},
        {"type": "track", "userId": "u9", "event": LONG},
        {"type": "group", "userId": "u9", "groupId": LONG},
    ],
    ids=["user-id", "anonymous-id", "event", "group-id"],
)
def test_a_value_too_long_for_an_index_fails_its_call_alone(
    apply: Apply, conn: Connection, app_id: int, bad: dict[str, Any]
) -> None:
    """Postgres refuses index entries over ~2.7 KB: a permanent error, not one to retry."""
    outcome = apply(identify("good", email="g@example.com"), bad)
    assert outcome.applied == {"identify": 1}
    assert shown_profile(conn, app_id, "good")["email"] == "g@example.com"
    assert list(conn.scalars(text("SELECT reason FROM dead_letters"))) == ["apply_failed"]


@pytest.mark.parametrize("existing", ["neither", "user-only"])
def test_an_aliased_previous_id_also_works_as_a_user_id(
    apply: Apply, conn: Connection, app_id: int, existing: str
) -> None:
    if existing == "user-only":
        apply(page("newU"))
    apply({"type": "alias", "previousId": "oldU", "userId": "newU"})
    apply(identify("oldU", email="old@example.com"), page(anonymous_id="oldU"))
    p = shown_profile(conn, app_id, "newU")
    assert (p["user_id"], p["email"]) == ("newU", "old@example.com")
    assert count(conn, "SELECT count(*) FROM users") == 1


def test_a_merge_does_not_bring_back_a_field_a_newer_call_cleared(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(
        identify(
            anonymous_id="anonR", ts="2026-01-01T00:00:00Z", email="stale@example.com", plan="old"
        )
    )
    apply(identify("userR", ts="2026-02-01T00:00:00Z", email="keep@example.com", plan="pro"))
    apply(identify("userR", ts="2026-03-01T00:00:00Z", email=None, plan=None))
    apply(identify("userR", "anonR", ts="2026-03-02T00:00:00Z"))  # merges anonR into userR
    p = shown_profile(conn, app_id, "userR")
    assert p["anonymous_ids"] == ["anonR"]
    assert p["email"] is None and p["attributes"] == {}
    times = conn.scalar(text("SELECT field_times FROM users WHERE id = :pk"), {"pk": p["pk"]})
    assert store.unpack_times(times)["email"] == "2026-03-01T00:00:00.000Z"
    # A replay of the February call cannot bring it back either.
    apply(identify("userR", ts="2026-02-01T00:00:00Z", email="keep@example.com"))
    assert shown_profile(conn, app_id, "userR")["email"] is None


@pytest.mark.parametrize(
    "call",
    [
        {"type": "alias", "previousId": "anon-1"},
        {"type": "alias", "userId": "u1"},
        {"type": "group", "userId": "u1"},
        {"type": "track", "userId": "u1", "event": " "},
        {"type": "identify", "userId": "u1", "timestamp": "yesterday"},
        {"type": "visit", "userId": "u1"},
    ],
)
def test_a_call_the_receiver_refuses_is_dead_lettered_with_the_receivers_code(
    apply: Apply, conn: Connection, call: dict[str, Any]
) -> None:
    # However it reached the queue (an old message, a hand-made export), a worker names a bad call
    # exactly as the receiver would have refused it: one contract, one code.
    receiver_codes = [e["code"] for e in check_call(call, None)]
    assert receiver_codes
    apply(call)
    assert list(conn.scalars(text("SELECT reason FROM dead_letters"))) == receiver_codes[:1]
