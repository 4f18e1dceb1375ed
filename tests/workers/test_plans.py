"""The lookups' plans with no statistics at all (no ANALYZE ever ran, autovacuum off): the
hot-path identity probe and the read side's user lookups use the identities' primary key with the
kind in it, and never read the app's identities one by one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.orm import Session

from shared import readmodel
from shared.attributes import Caps
from shared.timeparse import utcnow
from tests.support.db import SUPPRESSION
from tests.support.envelopes import envelope
from tests.support.scratchdb import scratch_database
from workers.apply import store
from workers.apply.call import parse_call

IDS = 20_000


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with scratch_database("plans") as (_, eng):
        with eng.begin() as conn:
            for table in ("identities", "users", "memberships"):
                conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            conn.execute(text("INSERT INTO apps (id, name) VALUES (1, 'shop'), (2, 'other')"))
            # As after `db upgrade` on a new database: statistics of the empty tables, then rows.
            conn.execute(text("ANALYZE identities, users"))
            conn.execute(
                text(
                    "INSERT INTO users (id, app_id, user_id) "
                    "SELECT g, 1 + g % 2, 'u' || g FROM generate_series(1, :n) g"
                ),
                {"n": IDS},
            )
            conn.execute(
                text(
                    "INSERT INTO identities (app_id, kind, value, user_pk) "
                    "SELECT 1 + g % 2, k, CASE k WHEN 'user' THEN 'u' ELSE 'a' END || g, g "
                    "FROM generate_series(1, :n) g, (VALUES ('user'), ('anonymous')) AS v(k)"
                ),
                {"n": IDS},
            )
        with eng.connect() as conn:
            assert conn.scalar(
                text("SELECT reltuples FROM pg_class WHERE relname = 'identities'")
            ) in (-1, 0)  # the statistics know nothing of the rows: the planner guesses
        yield eng


def _captured(conn: Connection, run: Callable[[], Any]) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def keep(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if "identities" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    event.listen(conn, "before_cursor_execute", keep)
    try:
        run()
    finally:
        event.remove(conn, "before_cursor_execute", keep)
    assert seen
    return seen


def _plans(conn: Connection, statements: list[tuple[str, Any]]) -> list[str]:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    plans = []
    for statement, params in statements:
        cursor.execute("EXPLAIN " + statement, params)
        plans.append("\n".join(row[0] for row in cursor.fetchall()))
    return plans


def _assert_probes(plans: list[str]) -> None:
    for plan in plans:
        assert "Seq Scan on identities" not in plan, plan
        assert "pk_identities" in plan, plan
        for line in plan.splitlines():
            if "Index Cond" in line and "value" in line:
                assert "kind" in line, plan


def test_the_hot_path_probes_each_id_by_primary_key(engine: Engine) -> None:
    calls = [
        parse_call(i, raw, raw["messageId"], env, utcnow())
        for env in [
            envelope(
                1,
                [
                    {"type": "track", "event": "E", "userId": f"u{i}", "anonymousId": f"a{i}",
                     "messageId": f"m{i}"}
                    for i in range(1, 200, 2)
                ],
            )
        ]
        for i, raw in enumerate(env.calls)
    ]  # fmt: skip
    with engine.connect() as conn:
        statements = _captured(conn, lambda: store.load(conn, 1, Caps(), calls, SUPPRESSION))
        plans = _plans(conn, statements)
        _assert_probes(plans)
        # One probe per id by construction, not a bitmap over ranges the planner sized by guess.
        assert all("Nested Loop" in plan and "Bitmap" not in plan for plan in plans), plans
        conn.rollback()


@pytest.mark.parametrize(
    "read",
    [
        lambda s: readmodel.user_profile(s, 1, "u4"),
        lambda s: readmodel.user_profile(s, 1, "a4"),
        lambda s: readmodel.user_events(s, 1, "a6"),
        lambda s: readmodel.find_user(s, 1, "a8"),
    ],
)
def test_read_side_user_lookups_name_the_kind(
    engine: Engine, read: Callable[[Session], Any]
) -> None:
    with engine.connect() as conn:
        session = Session(bind=conn)
        statements = _captured(conn, lambda: read(session))
        _assert_probes(_plans(conn, statements))
        session.close()
