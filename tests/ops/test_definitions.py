"""Deleting definitions (`attributes delete`, `events definitions delete`) and an app's caps and
budget (`apps caps`), through the CLI against the workers' own writes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from click.testing import Result
from sqlalchemy import Engine, text

from ops import definitions
from shared.attributes import BUDGET_DEFAULT, CAP_MAX
from tests.support.apply import apply_envelope
from tests.support.cli import Invoke, ok, one_line_error
from tests.support.envelopes import envelope
from tests.support.factories import make_app


def answer(result: Result) -> Any:
    return orjson.loads(ok(result).stdout)


def send(engine: Engine, app_id: int, *calls: dict[str, Any]) -> None:
    with engine.begin() as conn:
        apply_envelope(conn, envelope(app_id, list(calls)))


def identify(user: str, ts: str = "2026-11-28T10:00:00Z", **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": traits, "timestamp": ts}


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.fixture
def shop(clean_db: Engine) -> int:
    return make_app(clean_db, "shop")


def test_deleting_an_attribute_removes_it_from_every_profile_in_batches(
    clean_db: Engine, shop: int
) -> None:
    for i in range(5):
        send(clean_db, shop, identify(f"u{i}", plan="pro", seats=i))
    send(clean_db, shop, identify("u9", seats=9))  # never had a plan
    done = definitions.delete_attribute(clean_db, "shop", "user", "", "plan", batch=2)
    assert done == definitions.AttributeDeleted(origin="traffic", values_removed=5)
    assert rows(clean_db, "SELECT name FROM attribute_definitions") == [("seats",)]
    profiles = rows(clean_db, "SELECT user_id, attributes, field_times::text FROM users")
    assert sorted((u, a) for u, a, _ in profiles) == [
        *[(f"u{i}", {"seats": str(i)}) for i in range(5)],
        ("u9", {"seats": "9"}),
    ]
    assert not any("a.plan" in times for _, _, times in profiles)
    assert all("a.seats" in times for _, _, times in profiles)
    fed = rows(
        clean_db,
        "SELECT u.user_id, c.fields FROM changes c JOIN users u ON u.id = c.entity_pk "
        "WHERE c.kind = 'updated' ORDER BY u.user_id",
    )
    assert fed == [(f"u{i}", ["attributes.plan"]) for i in range(5)]


def test_a_deleted_attribute_is_a_new_name_when_traffic_sends_it_again(
    clean_db: Engine, shop: int, invoke: Invoke
) -> None:
    send(clean_db, shop, identify("u1", ts="2026-11-28T10:00:00Z", plan="pro"))
    answered = answer(invoke("attributes", "delete", "plan", "--app", "shop", "--yes", "--json"))
    assert answered == {
        "app": "shop",
        "scope": "user",
        "event": None,
        "name": "plan",
        "origin": "traffic",
        "values_removed": 1,
        "already_gone": False,
    }
    # An older call than the deleted value: its time went with it, so nothing holds the new value back.
    send(clean_db, shop, identify("u1", ts="2026-11-27T10:00:00Z", plan="free"))
    assert rows(clean_db, "SELECT attributes FROM users") == [({"plan": "free"},)]
    assert rows(clean_db, "SELECT name, origin FROM attribute_definitions") == [("plan", "traffic")]


def test_deleting_what_is_gone_says_so_and_still_sweeps_values_left_behind(
    clean_db: Engine, shop: int, invoke: Invoke
) -> None:
    send(clean_db, shop, identify("u1", plan="pro"))
    with clean_db.begin() as conn:  # as after a delete interrupted before its sweep
        conn.execute(text("DELETE FROM attribute_definitions"))
    result = invoke("attributes", "delete", "plan", "--app", "shop", "--yes", "--json")
    assert result.exit_code == 0
    assert "already gone" in result.stderr
    assert orjson.loads(result.stdout)["already_gone"] is True
    assert orjson.loads(result.stdout)["values_removed"] == 1
    assert rows(clean_db, "SELECT attributes FROM users") == [({},)]


def test_company_and_event_scopes(clean_db: Engine, shop: int, invoke: Invoke) -> None:
    send(
        clean_db,
        shop,
        {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"tier": "gold", "x": 1}},
        {"type": "track", "userId": "u1", "event": "Paid", "properties": {"coupon": "A"}},
    )
    company = answer(
        invoke("attributes", "delete", "tier", "--app", "shop", "--scope", "company", "--yes",
               "--json")
    )  # fmt: skip
    assert (company["origin"], company["values_removed"]) == ("traffic", 1)
    assert rows(clean_db, "SELECT attributes FROM companies") == [({"x": "1"},)]
    event = answer(
        invoke("attributes", "delete", "coupon", "--app", "shop", "--scope", "event",
               "--event", "Paid", "--yes", "--json")
    )  # fmt: skip
    assert (event["event"], event["origin"], event["values_removed"]) == ("Paid", "traffic", 0)
    assert rows(clean_db, "SELECT scope, name FROM attribute_definitions") == [("company", "x")]
    # What an event recorded stays as it was sent.
    assert rows(clean_db, "SELECT properties FROM events") == [({"coupon": "A"},)]
    assert "needs --event" in one_line_error(
        invoke("attributes", "delete", "coupon", "--app", "shop", "--scope", "event", "--yes")
    )


def test_deleting_an_event_name_deletes_its_occurrences_in_batches(
    clean_db: Engine, shop: int, invoke: Invoke
) -> None:
    send(
        clean_db,
        shop,
        *[{"type": "track", "userId": "u1", "event": "Spam", "properties": {"p": i}}
          for i in range(5)],
        {"type": "track", "userId": "u1", "event": "Paid"},
    )  # fmt: skip
    done = definitions.delete_event(clean_db, "shop", "Spam", batch=2)
    assert done == definitions.EventDeleted(
        origin="traffic", occurrences_deleted=5, attributes_deleted=1
    )
    assert rows(clean_db, "SELECT name FROM event_definitions") == [("Paid",)]
    assert rows(clean_db, "SELECT count(*) FROM events") == [(1,)]
    assert rows(clean_db, "SELECT count(*) FROM attribute_definitions") == [(0,)]
    again = invoke("events", "definitions", "delete", "Spam", "--app", "shop", "--yes", "--json")
    assert again.exit_code == 0 and orjson.loads(again.stdout)["already_gone"] is True
    send(clean_db, shop, {"type": "track", "userId": "u1", "event": "Spam"})  # a new name again
    assert rows(clean_db, "SELECT count(*) FROM events") == [(2,)]
    deleted = answer(
        invoke("events", "definitions", "delete", "Spam", "--app", "shop", "--yes", "--json")
    )
    assert deleted == {
        "app": "shop",
        "event": "Spam",
        "origin": "traffic",
        "occurrences_deleted": 1,
        "attributes_deleted": 0,
        "already_gone": False,
    }


def test_deleting_in_an_unknown_app_is_an_error(clean_db: Engine, invoke: Invoke) -> None:
    result = invoke("attributes", "delete", "plan", "--app", "nope", "--yes")
    assert result.exit_code == 1 and "no app named 'nope'" in one_line_error(result)
    result = invoke("events", "definitions", "delete", "E", "--app", "nope", "--yes")
    assert result.exit_code == 1 and "no app named 'nope'" in one_line_error(result)


def test_apps_caps_shows_and_changes_the_caps_and_the_budget(
    clean_db: Engine, shop: int, invoke: Invoke
) -> None:
    default = {
        "name": "shop",
        "user_attributes": 1000,
        "company_attributes": 1000,
        "event_names": 1000,
        "event_attributes": 200,
        "budget": None,
    }
    assert answer(invoke("apps", "caps", "shop", "--json")) == default
    changed = answer(
        invoke("apps", "caps", "shop", "--user-attributes", "2000", "--budget", "250", "--json")
    )
    assert changed == {**default, "user_attributes": 2000, "budget": 250}
    [listed] = answer(invoke("apps", "list", "--json"))
    assert listed["caps"] == {k: v for k, v in changed.items() if k != "name"}
    back = answer(invoke("apps", "caps", "shop", "--budget", "default", "--json"))
    assert back == {**default, "user_attributes": 2000}
    for bad in (["--budget", "lots"], ["--event-names", str(CAP_MAX + 1)], ["--budget", "-1"]):
        result = invoke("apps", "caps", "shop", *bad)
        assert result.exit_code == 2, result.output
    assert answer(invoke("apps", "caps", "shop", "--json")) == {**default, "user_attributes": 2000}
    assert invoke("apps", "caps", "nope").exit_code == 1


def test_raised_caps_and_budgets_take_effect_for_traffic(
    clean_db: Engine, shop: int, invoke: Invoke
) -> None:
    ok(invoke("apps", "caps", "shop", "--user-attributes", "1", "--budget", "1"))
    send(clean_db, shop, identify("u1", a=1, b=2))  # b is past the cap
    ok(invoke("apps", "caps", "shop", "--user-attributes", "3"))
    send(clean_db, shop, identify("u1", b=2, c=3))  # the budget of the hour is spent
    ok(invoke("apps", "caps", "shop", "--budget", str(BUDGET_DEFAULT)))
    send(clean_db, shop, identify("u1", b=2, c=3, d=4))  # the cap, 3, is reached at c
    assert rows(clean_db, "SELECT name FROM attribute_definitions ORDER BY name") == [
        ("a",),
        ("b",),
        ("c",),
    ]
    reasons = rows(clean_db, "SELECT name, reason, count FROM ignored_values ORDER BY name, reason")
    assert reasons == [
        ("b", "over_budget", 1),
        ("b", "over_cap", 1),
        ("c", "over_budget", 1),
        ("d", "over_cap", 1),
    ]


def test_operators_define_past_a_spent_budget(clean_db: Engine, shop: int, invoke: Invoke) -> None:
    ok(invoke("apps", "caps", "shop", "--budget", "0"))
    for name in ("plan", "seats", "region"):
        ok(invoke("attributes", "define", "--app", "shop", "--scope", "user", name, "string"))
    ok(invoke("attributes", "define", "--app", "shop", "--scope", "event", "--event", "Paid",
              "coupon", "string"))  # fmt: skip
    send(clean_db, shop, identify("u1", plan="pro", other="x"))
    assert rows(clean_db, "SELECT attributes FROM users") == [({"plan": "pro"},)]
    assert rows(clean_db, "SELECT name, reason FROM ignored_values") == [("other", "over_budget")]
