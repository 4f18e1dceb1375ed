"""The admin commands around the data: `apps delete`, `db current` and `db downgrade`."""

from __future__ import annotations

import orjson
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.settings import Settings
from shared.tenancy import create_key
from tests.support.cli import Invoke, invoker, ok, one_line_error
from tests.support.readmodel import seed
from tests.support.scratchdb import scratch_database


def _counts(engine: Engine, app_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: int(
                conn.scalar(text(f"SELECT count(*) FROM {table} WHERE app_id = :a"), {"a": app_id})  # noqa: S608 (a fixed table name)
            )
            for table in ("users", "identities", "companies", "events", "page_views", "api_keys")
        }


def test_apps_delete_takes_everything_the_app_owns_and_nothing_else(
    invoke: Invoke, clean_db: Engine
) -> None:
    with Session(clean_db) as session:
        seeded = seed(session)
        create_key(session, seeded["shop"])
        session.commit()
        shop_id, other_id = seeded["shop"].id, seeded["other"].id
    other_before = _counts(clean_db, other_id)

    answer = orjson.loads(ok(invoke("apps", "delete", "shop", "--yes", "--json")).stdout)

    assert answer["deleted"] == "shop" and answer["already_gone"] is False
    rows = answer["rows"]
    assert (rows["users"], rows["events"], rows["page_views"], rows["memberships"]) == (2, 3, 3, 3)
    assert rows["api_keys"] == 1 and rows["companies"] == 2
    assert set(_counts(clean_db, shop_id).values()) == {0}
    assert _counts(clean_db, other_id) == other_before
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM memberships")) == 0
        assert conn.scalar(text("SELECT name FROM apps")) == "other"


def test_apps_delete_needs_yes_and_deleting_again_is_done_already(
    invoke: Invoke, clean_db: Engine
) -> None:
    ok(invoke("apps", "create", "shop"))
    refused = invoke("apps", "delete", "shop")
    assert refused.exit_code == 2
    assert "add --yes" in one_line_error(refused)
    ok(invoke("apps", "delete", "shop", "--yes"))

    again = ok(invoke("apps", "delete", "shop", "--yes", "--json"))
    assert orjson.loads(again.stdout) == {"deleted": "shop", "rows": {}, "already_gone": True}
    assert "already gone" in again.stderr


def test_db_current_and_downgrade_then_upgrade() -> None:
    with scratch_database("dbcmd") as (settings, _engine):
        invoke = invoker(settings)
        current = orjson.loads(ok(invoke("db", "current", "--json")).stdout)
        assert current["revision"] == current["head"] and current["up_to_date"] is True
        head = current["head"]
        previous = f"{int(head) - 1:04d}"

        refused = invoke("db", "downgrade", previous)
        assert refused.exit_code == 2 and "add --yes" in one_line_error(refused)
        assert invoke("db", "downgrade", "nosuch", "--yes").exit_code == 2

        down = orjson.loads(ok(invoke("db", "downgrade", previous, "--yes", "--json")).stdout)
        assert (down["from"], down["revision"]) == (head, previous)
        behind = orjson.loads(ok(invoke("db", "current", "--json")).stdout)
        assert (behind["revision"], behind["up_to_date"]) == (previous, False)

        ok(invoke("db", "upgrade"))
        assert orjson.loads(ok(invoke("db", "current", "--json")).stdout)["up_to_date"] is True


def test_db_current_reads_the_database_it_is_given(settings: Settings) -> None:
    dead = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/userdest"}
    assert "cannot reach the database" in one_line_error(
        invoker(settings)("db", "current", env=dead)
    )
