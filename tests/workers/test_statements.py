"""A message costs a fixed number of SQL statements, whatever its number of calls (STYLE 10)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import Connection, event, text

from tests.support.apply import apply_envelope
from tests.support.envelopes import envelope


def mixed_calls(n: int, seed: int) -> list[dict[str, Any]]:
    """The benchmark's mix: 60% track, 25% page, 10% identify, 5% group, over a few users."""
    rng = random.Random(seed)
    calls: list[dict[str, Any]] = []
    for i in range(n):
        user = f"user-{rng.randrange(20)}"
        kind = rng.choices(["track", "page", "identify", "group"], weights=[60, 25, 10, 5])[0]
        call: dict[str, Any] = {"type": kind, "userId": user, "anonymousId": f"anon-{user}"}
        if kind == "track":
            call |= {"event": f"Event {i % 5}", "properties": {"amount": str(i), "sku": f"s{i}"}}
        elif kind == "page":
            call |= {"properties": {"url": f"https://example.com/{i}", "title": "T"}}
        elif kind == "identify":
            call |= {"traits": {"email": f"{user}@example.com", "plan": "pro", "logins": i}}
        else:
            call |= {"groupId": f"g{i % 3}", "traits": {"name": "Acme", "employees": 10}}
        calls.append(call)
    return calls


@pytest.mark.parametrize("warm", [False, True], ids=["new-users", "known-users"])
def test_a_batch_of_100_mixed_calls_costs_a_fixed_number_of_statements(
    conn: Connection, app_id: int, warm: bool
) -> None:
    conn.execute(
        text(
            "INSERT INTO attribute_definitions (app_id, scope, name, type, origin) VALUES (:a, 'user', 'logins', 'integer', 'operator')"
        ),
        {"a": app_id},
    )
    if warm:
        apply_envelope(conn, envelope(app_id, mixed_calls(100, seed=1)))
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(conn, "before_cursor_execute", count)
    try:
        outcome = apply_envelope(conn, envelope(app_id, mixed_calls(100, seed=2)))
    finally:
        event.remove(conn, "before_cursor_execute", count)
    assert sum(outcome.applied.values()) == 100
    # app, claim, definitions, locks, ids, profiles, 2 for companies, savepoint and release, and
    # one statement per kind of write.
    print(f"\n{len(statements)} statements for 100 calls ({'known' if warm else 'new'} users)")
    assert len(statements) <= 22, "\n".join(s.split("\n")[0][:90] for s in statements)
