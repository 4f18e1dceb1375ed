"""The same 20,000-call workload always leaves the same tables.

A seeded workload in the bench's mix (bench/workload.py) over 400 users is applied by
`apply_messages` in groups of five messages of 100 calls, as workers apply them. It includes event
times out of order, merges of existing profiles by alias, retries of calls already applied, and
calls the workers refuse. Then every table that calls write is read back, normalised, and hashed:

- generated numbers (`id`, `user_pk`, `company_id`, `event_id`, `merged_into`) become what they
  stand for (a profile's ids and contacts, a company's groupId, an event's name), so the digest does
  not depend on the order in which rows were inserted;
- times Postgres stamps (`created_at`, `updated_at`, `ingested_at`, `processed_at`, `last_at`,
  change-feed `xid`/`at`) and the dedupe keys (hashes of the app's number) are left out.

The expected digests were recorded from the code before any change to how calls are applied. A
faster apply path must leave them unchanged; a deliberate change of behaviour rewrites them:
`.venv/bin/python -m tests.workers.test_apply_equality` prints the current digests as JSON (paste
them into tests/workers/apply_digests.json with the reason in the commit message).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from bench.workload import DEFINED, generate
from ops.cli.attributes import define_attribute
from shared.models import App
from tests.support.db import SUPPRESSION
from tests.support.envelopes import envelope
from workers.apply.messages import apply_messages, prepare

EXPECTED = Path(__file__).with_name("apply_digests.json")
CALLS = 20_000
USERS = 400
PER_MESSAGE = 100
PER_GROUP = 5

VOLATILE = {"id", "app_id", "created_at", "updated_at", "ingested_at", "processed_at", "last_at",
            "xid", "at", "key"}  # fmt: skip


def workload() -> list[list[dict[str, Any]]]:
    """The messages, in queue order."""
    rng = random.Random(20261205)
    calls = generate(20261205, USERS, CALLS)
    # Anonymous visits of 40 users under ids of their own, merged into them later by alias.
    for k in range(40):
        calls.insert(k * 50, {"type": "page", "anonymousId": f"pre-{k}", "messageId": f"pre-{k}",
                              "timestamp": "2026-01-04T08:00:00.000Z",
                              "properties": {"url": "https://www.example.com/welcome"}})  # fmt: skip
        calls.insert(k * 400 + 300, {"type": "alias", "userId": f"user-{k:05d}",
                                     "previousId": f"pre-{k}", "messageId": f"alias-{k}"})  # fmt: skip
    # Calls a worker refuses, and retries of 300 calls already sent.
    calls += [
        {"type": "track", "userId": f"user-{k:05d}", "messageId": f"bad-{k}"} for k in range(20)
    ]
    calls += rng.sample(calls[:10_000], 300)
    messages = [calls[i : i + PER_MESSAGE] for i in range(0, len(calls), PER_MESSAGE)]
    # Every other message reversed: its event times arrive newest first.
    return [list(reversed(m)) if i % 2 else m for i, m in enumerate(messages)]


def apply_workload(engine: Engine) -> int:
    with Session(engine) as session:
        app = App(name="equality")
        session.add(app)
        session.flush()
        for a in DEFINED:
            choices = list(a.choices) if a.choices else None
            define_attribute(session, app, a.scope, a.event, a.name, a.type, choices, False)
        session.commit()
        app_id = app.id
    messages = workload()
    for i in range(0, len(messages), PER_GROUP):
        group = [prepare(envelope(app_id, m)) for m in messages[i : i + PER_GROUP]]
        with engine.begin() as conn:
            apply_messages(conn, group, suppression=SUPPRESSION)
    return app_id


def _profiles(conn: Connection) -> dict[int, str]:
    """Each profile's number to a stable name: its sorted ids, else its email."""
    names: dict[int, list[str]] = {}
    for pk, kind, value in conn.execute(text("SELECT user_pk, kind, value FROM identities")):
        names.setdefault(pk, []).append(f"{kind}:{value}")
    out = {}
    for pk, email in conn.execute(text("SELECT id, email FROM users")):
        out[pk] = ",".join(sorted(names.get(pk, []))) or f"email:{email}"
    return out


def _rows(conn: Connection, sql: str, profiles: dict[int, str]) -> list[str]:
    companies = dict(conn.execute(text("SELECT id, group_id FROM companies")).all())
    events = dict(conn.execute(text("SELECT id, name FROM event_definitions")).all())
    rows = []
    for (row,) in conn.execute(text(sql)):
        row = {k: v for k, v in row.items() if k not in VOLATILE}
        for key in ("user_pk", "merged_into"):
            if row.get(key) is not None:
                row[key] = profiles.get(row[key], "?")
        if "company_id" in row:
            row["company_id"] = companies.get(row["company_id"], "?")
        if "event_id" in row:
            row["event_id"] = events.get(row["event_id"], "?")
        rows.append(json.dumps(row, sort_keys=True, default=str))
    return sorted(rows)


TABLES = {
    "users": "SELECT row_to_json(t) FROM users t",
    "identities": "SELECT row_to_json(t) FROM identities t",
    "events": "SELECT row_to_json(t) FROM events t",
    "page_views": "SELECT row_to_json(t) FROM page_views t",
    "companies": "SELECT row_to_json(t) FROM companies t",
    "memberships": "SELECT row_to_json(t) FROM memberships t",
    "attribute_definitions": "SELECT row_to_json(t) FROM attribute_definitions t",
    "event_definitions": "SELECT row_to_json(t) FROM event_definitions t",
    "ignored_values": "SELECT row_to_json(t) FROM ignored_values t",
    "dead_letters": "SELECT json_build_object('reason', reason, 'call', call, 'message_id', "
    "message_id) FROM dead_letters",
    "processed_messages": "SELECT json_build_object('count', count(*)) FROM processed_messages",
    "changes": "SELECT json_build_object('entity', entity, 'kind', kind, 'fields', fields) "
    "FROM changes",
}


def digests(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        profiles = _profiles(conn)
        return {
            name: hashlib.sha256("\n".join(_rows(conn, sql, profiles)).encode()).hexdigest()
            for name, sql in TABLES.items()
        }


def test_the_workload_leaves_the_recorded_tables(clean_db: Engine) -> None:
    apply_workload(clean_db)
    found = digests(clean_db)
    expected = json.loads(EXPECTED.read_text())
    changed = sorted(name for name in TABLES if found[name] != expected.get(name))
    assert not changed, f"tables that differ from the recorded run: {changed}"


if __name__ == "__main__":
    from tests.support.scratchdb import scratch_database

    with scratch_database("equality") as (_settings, engine):
        apply_workload(engine)
        print(json.dumps(digests(engine), indent=2))
