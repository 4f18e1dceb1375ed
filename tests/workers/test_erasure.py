"""Erasure: a Segment deletion request (a `delete` call from its webhook) removes every row held
about the person, and later calls naming any of their ids stay suppressed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Connection, text

from shared.erasure import suppressed
from tests.support.db import SUPPRESSION
from tests.support.envelopes import envelope
from workers.apply.messages import Outcome

Apply = Callable[..., Outcome]
CTX = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"}


def _history(apply: Apply, user: str, anon: str) -> None:
    apply(
        {"type": "identify", "userId": user, "anonymousId": anon, "context": CTX,
         "traits": {"email": f"{user}@example.com", "plan": "pro"}},
        {"type": "track", "userId": user, "event": "Order Completed",
         "properties": {"revenue": 10}},
        {"type": "page", "anonymousId": anon, "properties": {"url": "https://x.example/a"}},
        {"type": "group", "userId": user, "groupId": "g1", "traits": {"name": "G"}},
        {"type": "screen", "anonymousId": f"{anon}-2", "userId": user, "name": "Home"},
    )  # fmt: skip


def _rows(conn: Connection, app_id: int) -> dict[str, int]:
    counts = {}
    for table in ("users", "identities", "events", "page_views", "memberships", "dead_letters"):
        counts[table] = int(
            conn.scalar(
                text(f"SELECT count(*) FROM {table} WHERE app_id = :a")  # noqa: S608
                if table != "memberships"
                else text(
                    "SELECT count(*) FROM memberships m JOIN companies c ON c.id = m.company_id "
                    "WHERE c.app_id = :a"
                ),
                {"a": app_id},
            )
            or 0
        )
    return counts


def _dead_letter(conn: Connection, app_id: int, call: dict[str, Any], key: str) -> None:
    conn.execute(
        text(
            "INSERT INTO dead_letters (app_id, reason, error, call, dedupe_key) "
            "VALUES (:a, 'apply_failed', 'x', CAST(:c AS jsonb), :k)"
        ),
        {"a": app_id, "c": orjson.dumps(call).decode(), "k": key},
    )


def test_a_segment_delete_call_erases_every_row_of_the_person(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    _history(apply, "u1", "a1")
    _history(apply, "u2", "a2")  # somebody else, untouched
    _dead_letter(conn, app_id, {"type": "track", "userId": "u1", "event": "x"}, "k1")
    _dead_letter(conn, app_id, {"type": "page", "anonymousId": "a1-2"}, "k2")
    _dead_letter(conn, app_id, {"type": "page", "anonymousId": "a2"}, "k3")
    before = _rows(conn, app_id)

    out = apply(envelope(app_id, [{"type": "delete", "userId": "u1"}], source="webhook"))
    assert out.applied["delete"] == 1
    after = _rows(conn, app_id)
    assert after == {
        "users": before["users"] - 1,
        "identities": before["identities"] - 3,  # u1, a1, a1-2
        "events": before["events"] - 1,
        "page_views": before["page_views"] - 2,
        "memberships": before["memberships"] - 1,
        "dead_letters": before["dead_letters"] - 2,
    }
    assert after["users"] == 1 and after["events"] == 1 and after["page_views"] == 2
    assert suppressed(conn, app_id, [("user", "u1"), ("anonymous", "a1"), ("anonymous", "a1-2")], SUPPRESSION) == {
        ("user", "u1"), ("anonymous", "a1"), ("anonymous", "a1-2"),
    }  # fmt: skip
    # No text of the person's ids is left anywhere.
    for value in ("u1", "a1"):
        assert not conn.scalar(
            text("SELECT count(*) FROM identities WHERE app_id = :a AND value = :v"),
            {"a": app_id, "v": value},
        )


def test_later_calls_naming_an_erased_id_stay_suppressed(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    _history(apply, "u1", "a1")
    apply(envelope(app_id, [{"type": "delete", "anonymousId": "a1"}], source="webhook"))
    assert _rows(conn, app_id)["users"] == 0
    # Retries, replays and new calls by any of the person's ids: nothing comes back.
    _history(apply, "u1", "a1")
    apply({"type": "identify", "anonymousId": "a1-2", "traits": {"email": "x@example.com"}})
    apply({"type": "alias", "userId": "new-id", "previousId": "u1"})
    assert _rows(conn, app_id)["users"] == 0
    # A new person is applied as usual, in the same message as a suppressed call.
    apply(
        {"type": "track", "userId": "u1", "event": "E"},
        {"type": "track", "userId": "u9", "event": "E"},
    )
    rows = _rows(conn, app_id)
    assert rows["users"] == 1 and rows["events"] == 1


def test_a_delete_for_an_unknown_person_still_suppresses_the_id(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply(envelope(app_id, [{"type": "delete", "userId": "ghost"}], source="webhook"))
    apply({"type": "identify", "userId": "ghost", "traits": {"email": "g@example.com"}})
    assert _rows(conn, app_id)["users"] == 0


def test_a_delete_call_from_anywhere_but_the_webhook_erases_nothing(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    _history(apply, "u1", "a1")
    out = apply(envelope(app_id, [{"type": "delete", "userId": "u1"}], source="http"))
    assert out.dead_letters["deletion_not_allowed"] == 1
    assert _rows(conn, app_id)["users"] == 1


def test_erasure_takes_profiles_merged_in_whose_history_has_not_moved_yet(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    apply({"type": "page", "anonymousId": "anon-m", "properties": {"url": "https://x.example/"}})
    apply({"type": "identify", "userId": "known", "traits": {"email": "k@example.com"}})
    apply({"type": "alias", "previousId": "anon-m", "userId": "known"})
    # The merged-away profile is a tombstone still holding its page view (moved in background).
    assert _rows(conn, app_id)["users"] == 2
    apply(envelope(app_id, [{"type": "delete", "userId": "known"}], source="webhook"))
    rows = _rows(conn, app_id)
    assert rows["users"] == 0 and rows["page_views"] == 0 and rows["identities"] == 0
    apply({"type": "page", "anonymousId": "anon-m"})
    assert _rows(conn, app_id)["users"] == 0


def test_a_delete_call_erases_dead_letters_naming_the_person_by_a_quoted_or_padded_id(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    """The workers read `" u9 "` and `"\\"u9\\""` as u9: so does erasure."""
    _dead_letter(conn, app_id, {"type": "track", "userId": " u9 "}, "k-padded")
    _dead_letter(conn, app_id, {"type": "track", "userId": '"u9"'}, "k-quoted")
    _dead_letter(conn, app_id, {"type": "track", "userId": "u99"}, "k-other")
    apply(envelope(app_id, [{"type": "delete", "userId": "u9"}], source="webhook"))
    keys = conn.scalars(text("SELECT dedupe_key FROM dead_letters")).all()
    assert keys == ["k-other"]


def test_a_delete_call_suppresses_the_person_s_email_too(
    apply: Apply, conn: Connection, app_id: int
) -> None:
    _history(apply, "u1", "a1")
    apply(envelope(app_id, [{"type": "delete", "userId": "u1"}], source="webhook"))
    apply({"type": "identify", "anonymousId": "fresh", "traits": {"email": "U1@example.com"}})
    assert _rows(conn, app_id)["users"] == 0
