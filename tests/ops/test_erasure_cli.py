"""`userdest users delete` and `users export`, and keyset pages that hold under concurrent inserts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared import readmodel
from shared.envelope import Envelope
from shared.settings import Settings
from tests.support.apply import apply_envelope
from tests.support.cli import invoker, ok, writes_private_files
from tests.support.envelopes import envelope

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _apply(engine: Engine, env: Envelope) -> None:
    with engine.begin() as conn:
        apply_envelope(conn, env)


@pytest.fixture
def shop(clean_db: Engine) -> int:
    with clean_db.begin() as conn:
        return int(conn.scalar(text("INSERT INTO apps (name) VALUES ('shop') RETURNING id")))


def _person(engine: Engine, app_id: int, user: str, anon: str) -> None:
    _apply(
        engine,
        envelope(
            app_id,
            [
                {"type": "identify", "userId": user, "anonymousId": anon,
                 "traits": {"email": f"{user}@example.com", "plan": "pro"}},
                {"type": "track", "userId": user, "event": "Signed In"},
                {"type": "page", "anonymousId": anon,
                 "properties": {"url": "https://x.example/p", "title": "P", "extra": 1}},
                {"type": "group", "userId": user, "groupId": "g1"},
            ],
        ),
    )  # fmt: skip


def _count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(sql), params) or 0)


def test_users_export_holds_everything_about_the_person(
    clean_db: Engine, settings: Settings, shop: int
) -> None:
    _person(clean_db, shop, "u1", "a1")
    result: Result = ok(invoker(settings)("users", "export", "--app", "shop", "a1"))
    data = orjson.loads(result.stdout)
    assert data["profile"]["user_id"] == "u1" and data["profile"]["email"] == "u1@example.com"
    assert {(i["kind"], i["value"]) for i in data["identities"]} == {
        ("user", "u1"),
        ("anonymous", "a1"),
    }
    assert [e["event"] for e in data["events"]] == ["Signed In"]
    (view,) = data["page_views"]
    # The properties as sent, though the columns hold url and title only once.
    assert view["properties"] == {"url": "https://x.example/p", "title": "P", "extra": 1}
    assert data["profile"]["companies"][0]["group_id"] == "g1"


def test_users_export_out_is_private_and_never_written_through_a_link(
    clean_db: Engine, settings: Settings, shop: int, tmp_path: Path
) -> None:
    _person(clean_db, shop, "u1", "a1")
    run = invoker(settings)
    writes_private_files(
        lambda out: run("users", "export", "--app", "shop", "u1", "--out", str(out)), tmp_path
    )
    assert orjson.loads((tmp_path / "export.json").read_bytes())["profile"]["user_id"] == "u1"


def test_users_delete_removes_every_row_and_suppresses_later_calls(
    clean_db: Engine, settings: Settings, shop: int
) -> None:
    _person(clean_db, shop, "u1", "a1")
    _person(clean_db, shop, "u2", "a2")
    run = invoker(settings)
    refused = run("users", "delete", "--app", "shop", "u1")
    assert refused.exit_code != 0 and "--yes" in refused.stderr
    answer = orjson.loads(
        ok(run("users", "delete", "--app", "shop", "u1", "--yes", "--json")).stdout
    )
    assert answer["rows"]["users"] == 1 and answer["rows"]["events"] == 1
    for table, where in (
        ("users", "user_id = 'u1'"),
        ("identities", "value IN ('u1', 'a1')"),
        ("events", "message_id IS NOT NULL AND user_pk NOT IN (SELECT id FROM users)"),
        ("page_views", "user_pk NOT IN (SELECT id FROM users)"),
        ("memberships", "user_pk NOT IN (SELECT id FROM users)"),
    ):
        assert _count(clean_db, f"SELECT count(*) FROM {table} WHERE {where}") == 0, table  # noqa: S608
    assert _count(clean_db, "SELECT count(*) FROM users") == 1
    # The person's next calls, by either id, create nothing.
    _person(clean_db, shop, "u1", "a1")
    assert _count(clean_db, "SELECT count(*) FROM users") == 1
    gone = run("users", "show", "--app", "shop", "u1")
    assert gone.exit_code != 0


def test_event_pages_hold_under_concurrent_inserts(clean_db: Engine, shop: int) -> None:
    def track(i: int, when: datetime) -> dict[str, Any]:
        return {"type": "track", "userId": "u1", "event": "E", "messageId": f"m{i}",
                "timestamp": when.isoformat()}  # fmt: skip

    # Ten events, two of them at the same instant (the id breaks the tie).
    times = [T0 + timedelta(minutes=i) for i in range(9)] + [T0 + timedelta(minutes=4)]
    _apply(clean_db, envelope(shop, [track(i, t) for i, t in enumerate(times)]))
    seen: list[str] = []
    after = None
    with Session(clean_db) as session:
        first = readmodel.user_events(session, shop, "u1", limit=4)
    seen += [e["message_id"] for e in first]
    after = first[-1]["cursor"]
    # Meanwhile: a newer event and one older than the whole list arrive.
    _apply(
        clean_db,
        envelope(shop, [track(100, T0 + timedelta(hours=5)), track(101, T0 - timedelta(hours=5))]),
    )
    while True:
        with Session(clean_db) as session:
            page = readmodel.user_events(session, shop, "u1", limit=4, after=after)
        if not page:
            break
        seen += [e["message_id"] for e in page]
        after = page[-1]["cursor"]
    # Every event of the first read exactly once, newest first; the newer arrival is not mixed
    # into later pages, the older one is found at the end.
    assert len(seen) == len(set(seen))
    assert set(seen) == {f"m{i}" for i in range(10)} | {"m101"}
    assert seen[-1] == "m101"


def test_company_members_page_with_a_next_cursor(clean_db: Engine, shop: int) -> None:
    _apply(
        clean_db,
        envelope(shop, [{"type": "group", "userId": f"u{i}", "groupId": "g"} for i in range(7)]),
    )
    members: list[str] = []
    after = None
    with Session(clean_db) as session:
        while True:
            company = readmodel.company_profile(session, shop, "g", limit=3, after=after)
            members += company["users"]
            after = company["next_cursor"]
            if after is None:
                break
    assert sorted(members) == [f"u{i}" for i in range(7)] and len(members) == 7


def test_a_cursor_from_elsewhere_is_one_line(
    settings: Settings, clean_db: Engine, shop: int
) -> None:
    _person(clean_db, shop, "u1", "a1")
    result = invoker(settings)("users", "events", "--app", "shop", "u1", "--after", "garbage")
    assert result.exit_code != 0 and "not a cursor" in result.stderr
