"""Deleting definitions an app no longer wants: an attribute with its values, an event name with its
occurrences. `userdest attributes delete` and `userdest events definitions delete` run these.

The definition goes first, in a transaction of its own, so traffic stops writing under it (a name
traffic sends again is a new name, defined again within the app's cap and budget). What was stored
under it then goes in bounded batches, each its own short transaction, so a large app is never
locked for the length of the whole sweep: profiles and companies `SWEEP_BATCH` at a time, in id
order; events `EVENT_BATCH` occurrences at a time, partition by partition. An interrupted delete is
finished by running it again: the sweep does not need the definition to be there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, text

from shared.attributes import ATTRIBUTE_TIME_PREFIX
from shared.tenancy import TenancyError

SWEEP_BATCH = 1000
"""Profiles (or companies) of the app one transaction of an attribute's sweep looks at."""
EVENT_BATCH = 5000
"""Occurrences of an event one transaction deletes."""

_TABLES = {"user": ("users", "profile"), "company": ("companies", "company")}
"""Where each scope's values live, and the change feed's name for a row there."""


@dataclass(frozen=True, slots=True)
class AttributeDeleted:
    origin: str | None
    """Who had made the definition (`traffic`, `operator`); None if it was gone already."""
    values_removed: int
    """Profiles or companies that lost a value (or the time of one) of the attribute."""


@dataclass(frozen=True, slots=True)
class EventDeleted:
    origin: str | None
    """Who had made the event name; None if it was gone already."""
    occurrences_deleted: int
    attributes_deleted: int
    """The event's attribute definitions (its properties' types), deleted with it."""


def app_id(conn: Connection, name: str) -> int:
    found = conn.scalar(text("SELECT id FROM apps WHERE name = :n"), {"n": name})
    if found is None:
        raise TenancyError(f"no app named {name!r}")
    return int(found)


def delete_attribute(
    engine: Engine, app: str, scope: str, event: str, name: str, batch: int = SWEEP_BATCH
) -> AttributeDeleted:
    """Delete the attribute `name` of `scope` (of `event` in the event scope), then its values:
    from every profile (user) or company (company) of the app, with the times kept for them, and
    each profile or company changed goes into the change feed (`updated`, `attributes.NAME`).
    An event's recorded properties stay as they were sent: history is not rewritten."""
    with engine.begin() as conn:
        found = app_id(conn, app)
        origin = conn.scalar(
            text(
                "DELETE FROM attribute_definitions "
                "WHERE app_id = :app AND scope = :scope AND event = :event AND name = :name "
                "RETURNING origin"
            ),
            {"app": found, "scope": scope, "event": event, "name": name},
        )
    removed = 0 if scope == "event" else _sweep_values(engine, found, scope, name, batch)
    return AttributeDeleted(origin=origin, values_removed=removed)


def _sweep_values(engine: Engine, app: int, scope: str, name: str, batch: int) -> int:
    table, entity = _TABLES[scope]
    key = ATTRIBUTE_TIME_PREFIX + name
    # One window of the app's rows by id; those holding the value or its time locked in id order
    # (as workers lock them, so the two never deadlock), cleaned, and told to the change feed.
    # field_times is stored packed, {time: [names]}; older rows have {name: time}.
    sweep = text(
        f"WITH win AS (SELECT id FROM {table} WHERE app_id = :app AND id > :after "  # noqa: S608 (fixed names)
        "  ORDER BY id LIMIT :n), "
        f"hit AS (SELECT t.id FROM {table} t JOIN win ON win.id = t.id "
        "  WHERE t.attributes ? :name OR t.field_times ? :key "
        "  OR jsonb_path_exists(t.field_times, '$.*[*] ? (@ == $k)', jsonb_build_object('k', :key)) "
        "  ORDER BY t.id FOR UPDATE OF t), "
        f"done AS (UPDATE {table} t SET attributes = t.attributes - :name, "
        "  field_times = (SELECT coalesce(jsonb_object_agg(e.key, CASE jsonb_typeof(e.value) "
        "    WHEN 'array' THEN e.value - :key ELSE e.value END), '{}') "
        "    FROM jsonb_each(t.field_times - :key) AS e "
        "    WHERE NOT (jsonb_typeof(e.value) = 'array' AND e.value - :key = '[]')), "
        "  updated_at = now() "
        f"  FROM hit WHERE t.id = hit.id RETURNING t.id, {_live(table)} AS live), "
        "fed AS (INSERT INTO changes (app_id, entity, entity_pk, kind, fields) "
        "  SELECT :app, :entity, id, 'updated', CAST(:fields AS jsonb) FROM done WHERE live "
        "  ORDER BY id) "
        "SELECT (SELECT max(id) FROM win), (SELECT count(*) FROM done)"
    )
    params: dict[str, Any] = {
        "app": app,
        "n": batch,
        "name": name,
        "key": key,
        "entity": entity,
        "fields": orjson.dumps([f"attributes.{name}"]).decode(),
    }
    after, removed = 0, 0
    while True:
        with engine.begin() as conn:
            last, changed = conn.execute(sweep, {**params, "after": after}).one()
        removed += int(changed)
        if last is None:
            return removed
        after = int(last)


def _live(table: str) -> str:
    """Whether a swept row is one the change feed names: a profile merged away is not."""
    return "t.merged_into IS NULL" if table == "users" else "true"


def delete_event(engine: Engine, app: str, name: str, batch: int = EVENT_BATCH) -> EventDeleted:
    """Delete the event name `name`: its occurrences, in batches, then the name and its attribute
    definitions in one transaction (with any occurrence recorded since the batches)."""
    with engine.begin() as conn:
        found = app_id(conn, app)
        row = conn.execute(
            text("SELECT id, origin FROM event_definitions WHERE app_id = :app AND name = :name"),
            {"app": found, "name": name},
        ).first()
        partitions = list(
            conn.scalars(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = CAST('events' AS regclass) ORDER BY c.relname"
                )
            )
        )
        quote = conn.dialect.identifier_preparer.quote
    deleted = 0
    if row is not None:
        for partition in partitions:
            # By tuple address: the event's index finds a batch, the delete goes straight to it.
            step = text(
                f"DELETE FROM {quote(partition)} WHERE ctid = ANY(ARRAY("  # noqa: S608 (a partition's name, quoted)
                f"SELECT ctid FROM {quote(partition)} WHERE event_id = :id LIMIT :n))"
            )
            while True:
                with engine.begin() as conn:
                    gone = int(conn.execute(step, {"id": row.id, "n": batch}).rowcount)
                deleted += gone
                if gone == 0:
                    break
    with engine.begin() as conn:
        if row is not None:
            # Occurrences recorded since the batches go with the name (ON DELETE CASCADE). Locking
            # the name first waits for the workers recording one (each holds the row's key share
            # until it commits) and keeps new ones out, so the count below is exact.
            conn.execute(
                text("SELECT id FROM event_definitions WHERE id = :id FOR UPDATE"), {"id": row.id}
            )
            late = conn.scalar(
                text("SELECT count(*) FROM events WHERE event_id = :id"), {"id": row.id}
            )
            conn.execute(text("DELETE FROM event_definitions WHERE id = :id"), {"id": row.id})
            deleted += int(late or 0)
        attributes = conn.execute(
            text(
                "DELETE FROM attribute_definitions "
                "WHERE app_id = :app AND scope = 'event' AND event = :name"
            ),
            {"app": found, "name": name},
        ).rowcount
    return EventDeleted(
        origin=None if row is None else row.origin,
        occurrences_deleted=deleted,
        attributes_deleted=int(attributes),
    )
