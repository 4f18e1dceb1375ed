"""Loading a message's state from Postgres and writing it back, in a fixed number of statements.

Concurrency: before reading any profile, a transaction takes an advisory lock on every id its calls
name (sorted, so two transactions never wait on each other in a cycle), then locks the profile rows
in primary-key order. Two workers creating the same new user therefore serialise on the id's lock,
and the second finds the first's profile. New names go in with `ON CONFLICT DO NOTHING`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from shared import dedupe, erasure
from shared.attributes import (
    BUDGET_DEFAULT,
    BUDGET_WINDOW_SQL,
    IGNORED_NAMES_KEPT,
    SENDER_NAMED_REASONS,
    Caps,
)
from shared.calls import DELETION
from shared.db import array_literal, json_dumps
from shared.ids import lock_key, normalize_id
from shared.models import (
    CANONICAL_PROFILES,
    COMPANY_FIELDS,
    PAGE_FIELDS,
    PROFILE_FIELDS,
)
from workers.apply.attributes import Definition, Definitions
from workers.apply.call import Call
from workers.apply.state import (
    BatchState,
    CompanyState,
    IdKey,
    Profile,
    Record,
    Snapshot,
)
from workers.coerce import clears


class UnknownApp(LookupError):
    """The message names an app that no longer exists."""


class ProfileVanished(RuntimeError):
    """A profile was merged away by a concurrent transaction between two reads; load again."""


def prune_processed(conn: Connection, days: int, limit: int = dedupe.PRUNE_BATCH) -> int:
    """Forget up to `limit` messageIds applied more than `days` ago; returns how many went.

    A worker's occasional share of the work; `userdest maintenance run` finishes it (ops/maintenance.py).
    """
    return dedupe.prune_batch(conn, days, limit)


def id_keys(calls: Iterable[Call]) -> set[IdKey]:
    keys: set[IdKey] = set()
    for call in calls:
        if call.user_id is not None:
            keys.add(("user", call.user_id))
        if call.anonymous_id is not None:
            keys.add(("anonymous", call.anonymous_id))
        if call.type == "alias":
            previous = normalize_id(call.body.get("previousId"))
            if previous is not None:
                keys.update({("user", previous), ("anonymous", previous)})
    return keys


def claim(conn: Connection, app_id: int, message_ids: list[str]) -> set[str]:
    """Insert the dedupe records; the ids returned are the ones never applied before."""
    if not message_ids:
        return set()
    by_key = {dedupe.key_hex(app_id, m): m for m in message_ids}
    rows = conn.execute(
        text(
            "INSERT INTO processed_messages (key) "
            "SELECT k FROM unnest(CAST(:keys AS uuid[])) AS k ORDER BY k "
            "ON CONFLICT DO NOTHING RETURNING key"
        ),
        {"keys": array_literal(sorted(by_key))},
    )
    return {by_key[r[0].hex] for r in rows}


def load(
    conn: Connection, app_id: int, caps: Caps, calls: list[Call], suppression: erasure.Suppression
) -> BatchState:
    """Lock and read everything `calls` will touch: profiles, companies, definitions; and which of
    their ids and contacts belong to erased people."""
    keys = id_keys(calls)
    locks = sorted({lock_key(app_id, kind, value) for kind, value in keys})
    probe = _Probe.of(app_id, keys | _contacts(calls), suppression)  # worked out before the locks
    definitions = _lock_and_load_definitions(conn, app_id, caps, calls, locks)
    if _defines_new_names(definitions, calls):
        # New names count against the app's caps and its budget: one definer at a time, reading
        # the definitions and the budget used again once it holds the lock (each statement sees
        # what committed before it), so that concurrent workers never pass either together.
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(app_id, "definitions", "")}
        )
        definitions = _lock_and_load_definitions(conn, app_id, caps, calls, [])
    state = BatchState(app_id=app_id, definitions=definitions)
    # Merged-away profiles are rare and short-lived (move_merged empties them): the first read
    # assumes there are none, and is made again following merge chains if it meets one.
    for attempt in range(4):
        try:
            _load_profiles(conn, state, probe, follow_merges=attempt > 0)
            break
        except ProfileVanished:
            state.ids.clear()
            state.profiles.clear()
            state.before.clear()
            state.suppressed.clear()
    else:
        raise ProfileVanished("profiles kept moving under concurrent merges")
    _load_companies(conn, state, calls)
    return state


def _defines_new_names(defs: Definitions, calls: list[Call]) -> bool:
    """Whether applying `calls` may define an event name or attribute the app does not have yet.

    A name past its scope's cap or budget, too long, or sent only as null defines nothing, so it
    does not count: an app that keeps sending new names past its cap or its budget must not
    serialise its workers.
    """
    for call in calls:
        if call.type == "identify":
            scope, event, values = "user", "", call.traits()[1]
        elif call.type == "group":
            scope, event, values = "company", "", call.traits()[1]
        elif call.type == "track":
            if defs.may_define_event(call.event):
                return True
            scope, event, values = "event", call.event, call.obj("properties")
        else:
            continue
        if any(
            not (value is None or (scope != "event" and clears(value)))
            and defs.may_define(scope, event, name)
            for name, value in values.items()
        ):
            return True
    return False


def _contacts(calls: list[Call]) -> set[IdKey]:
    """The emails and phones `calls` give (an erased person's, with a new id, must not come back)."""
    found: set[IdKey] = set()
    for call in calls:
        found |= erasure.contact_keys(call.body)
    return found


@dataclass(frozen=True, slots=True)
class _Probe:
    """The parameters of the identity and suppression probe: every id and contact of a group,
    with its suppression key, computed before the transaction takes its locks."""

    app_id: int
    kinds: str
    values: str
    skeys: str

    @classmethod
    def of(cls, app_id: int, keys: set[IdKey], suppression: erasure.Suppression) -> _Probe:
        # Contacts ride along: their identity probe finds nothing (no identity has their kinds).
        ordered = sorted(keys)
        return cls(
            app_id,
            array_literal(kind for kind, _ in ordered),
            array_literal(value for _, value in ordered),
            array_literal(suppression.key(app_id, k, v) for k, v in ordered),
        )


def _load_profiles(
    conn: Connection, state: BatchState, probe: _Probe, *, follow_merges: bool
) -> None:
    # One primary-key probe per id, whatever the statistics say: LIMIT 1 in a LATERAL subquery
    # keeps the planner from flattening it into a join that could scan the app's identities. The
    # same round trip says which ids belong to erased people.
    probed = conn.execute(
        text(
            "SELECT k.kind, k.value, i.user_pk, s.gone IS NOT NULL "
            "FROM unnest(CAST(:kinds AS text[]), CAST(:values AS text[]), CAST(:skeys AS uuid[])) "
            "AS k(kind, value, skey) "
            "LEFT JOIN LATERAL (SELECT user_pk FROM identities "
            "WHERE app_id = :app AND kind = k.kind AND value = k.value LIMIT 1) AS i ON true "
            "LEFT JOIN LATERAL (SELECT true AS gone FROM suppressed_ids "
            "WHERE app_id = :app AND key = k.skey LIMIT 1) AS s ON true"
        ),
        {"app": probe.app_id, "kinds": probe.kinds, "values": probe.values, "skeys": probe.skeys},
    ).all()
    rows = [(kind, value, pk) for kind, value, pk, _ in probed if pk is not None]
    state.suppressed.update((kind, value) for kind, value, _, gone in probed if gone)
    # An identity may still name a profile merged away: it answers for the profile it was merged
    # into (until the background move points the identity there too).
    canonical = _canonical(conn, {pk for _, _, pk in rows}) if follow_merges else {}
    for kind, value, pk in rows:
        state.ids[kind, value] = canonical.get(pk, pk)
    pks = sorted(set(state.ids.values()))
    if not pks:
        return
    columns = ", ".join(PROFILE_FIELDS)
    found = conn.execute(
        text(
            f"SELECT id, user_id, page_views, first_seen, last_seen, attributes, field_times, "  # noqa: S608 (fixed column names)
            f"merged_into, {columns} FROM users WHERE id = ANY(CAST(:pks AS bigint[])) "
            "ORDER BY id FOR UPDATE"
        ),
        {"pks": array_literal(pks)},
    )
    # Positional rows: reading 1,815 profiles by column name took 48 ms, by position 29 ms.
    for pk, user_id, page_views, first_seen, last_seen, attributes, times, merged, *fields in found:
        if merged is not None:
            raise ProfileVanished("a profile read was merged away (before or meanwhile)")
        profile = state.profiles[pk] = Profile(
            pk=pk,
            fields=dict(zip(PROFILE_FIELDS, fields, strict=True)),
            attributes=dict(attributes),
            field_times=unpack_times(times),
            user_id=user_id,
            page_views=page_views,
            first_seen=first_seen,
            last_seen=last_seen,
        )
        state.before["profile", profile.pk] = snapshot(profile)
    if len(state.profiles) != len(pks):
        raise ProfileVanished("an identity pointed at a profile merged away meanwhile")


def _canonical(conn: Connection, pks: set[int]) -> dict[int, int]:
    """Each of `pks` that was merged away, to the profile it lives on in now (chains followed)."""
    if not pks:
        return {}
    rows = conn.execute(CANONICAL_PROFILES, {"pks": sorted(pks)}).all()
    return {int(row[0]): int(row[1]) for row in rows}


def suppressed(state: BatchState, call: Call) -> bool:
    """Whether `call` names an erased person (by any of its ids, or the email or phone it gives)."""
    if not state.suppressed:
        return False
    keys = id_keys([call]) | erasure.contact_keys(call.body)
    return not keys.isdisjoint(state.suppressed)


def record_skipped(conn: Connection, app_id: int, calls: list[Call]) -> None:
    """Remember that `calls` were skipped as an erased person's (`messages show` says so)."""
    if calls:
        conn.execute(
            text(
                "INSERT INTO skipped_messages (key, app_id, reason) SELECT k, :app, 'suppressed' "
                "FROM unnest(CAST(:keys AS uuid[])) AS k ON CONFLICT DO NOTHING"
            ),
            {"app": app_id, "keys": [dedupe.key(app_id, c.message_id) for c in calls]},
        )


def erase_requested(
    conn: Connection, state: BatchState, calls: list[Call], suppression: erasure.Suppression
) -> None:
    """Apply the message's deletion requests before anything else: erase everything held about
    the person their ids name (the locks on those ids are held since `load`) and suppress every id
    and contact they had. The other calls of the message naming them are then skipped like any
    later call."""
    for call in calls:
        if call.type != DELETION:
            continue
        named = id_keys([call])
        pks = {state.find(state.ids[key]) for key in named if key in state.ids}
        person = erasure.find(conn, state.app_id, named, [pk for pk in pks if pk > 0])
        erased = erasure.erase(conn, person, suppression)
        state.suppressed.update(erased.ids)
        gone = pks | set(person.pks)
        for pk in gone:
            state.profiles.pop(pk, None)
        for key in [k for k, pk in state.ids.items() if state.find(pk) in gone]:
            del state.ids[key]


def _load_companies(conn: Connection, state: BatchState, calls: list[Call]) -> None:
    group_ids = sorted(
        {g for c in calls if c.type == "group" and (g := normalize_id(c.body.get("groupId")))}
    )
    if not group_ids:
        return
    params = {"app": state.app_id, "gids": group_ids}
    created = conn.scalars(
        text(
            "INSERT INTO companies (app_id, group_id) SELECT :app, g "
            "FROM unnest(CAST(:gids AS text[])) AS g ORDER BY g ON CONFLICT DO NOTHING RETURNING id"
        ),
        params,
    )
    state.new_companies.update(created)
    columns = ", ".join(COMPANY_FIELDS)
    rows = conn.execute(
        text(
            f"SELECT id, group_id, attributes, field_times, {columns} FROM companies "  # noqa: S608 (fixed column names)
            "WHERE app_id = :app AND group_id = ANY(:gids) ORDER BY group_id FOR UPDATE"
        ),
        params,
    ).mappings()
    for row in rows:
        company = state.companies[row["group_id"]] = CompanyState(
            pk=row["id"],
            fields={name: row[name] for name in COMPANY_FIELDS},
            attributes=dict(row["attributes"]),
            field_times=unpack_times(row["field_times"]),
            group_id=row["group_id"],
        )
        state.before["company", company.pk] = snapshot(company)


def app_caps(conn: Connection, app_id: int, default_budget: int = BUDGET_DEFAULT) -> Caps:
    """The app's caps on definitions and its budget of new names (its own, else `default_budget`,
    DEFINITION_BUDGET in a worker); raises UnknownApp if the app was deleted."""
    row = conn.execute(
        text(
            "SELECT max_user_attributes, max_company_attributes, max_event_names, "
            "max_event_attributes, coalesce(definition_budget, :budget) FROM apps WHERE id = :app"
        ),
        {"app": app_id, "budget": default_budget},
    ).first()
    if row is None:
        raise UnknownApp(f"app {app_id} does not exist")
    return Caps(*row)


def _lock_and_load_definitions(
    conn: Connection, app_id: int, caps: Caps, calls: list[Call], locks: list[int]
) -> Definitions:
    """Take the advisory locks of the calls' ids, and read the app's user and company definitions,
    those of the events in `calls`, every event name with its id, and how many names traffic
    defined in the budget's window, by scope: one round trip.

    The definitions do not depend on the locks; the profiles, read by the next statement (with a
    snapshot taken after the locks were granted), do.
    """
    defs = Definitions(caps=caps)
    events = sorted({c.event for c in calls if c.type == "track"})
    attributes, event_ids, used, names_used, _ = conn.execute(
        text(
            "SELECT (SELECT coalesce(json_agg(json_build_array(scope, event, name, type, choices, "  # noqa: S608 (constants)
            "multiple)), '[]') FROM attribute_definitions "
            "WHERE app_id = :app AND (scope <> 'event' OR event = ANY(:events))), "
            "(SELECT coalesce(json_object_agg(name, id), '{}') FROM event_definitions "
            "WHERE app_id = :app), "
            f"{_BUDGET_USED}, "
            "(SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:locks AS bigint[])) AS k)"
        ),
        {"app": app_id, "events": events, "locks": locks},
    ).one()
    for scope, event, name, type_, choices, multiple in attributes:
        defs.add(scope, event, name, Definition(type_, choices, multiple))
    defs.event_ids.update(event_ids)
    defs.budget_used.update(used)
    defs.budget_used["event_names"] = names_used
    return defs


# Traffic's definitions made within the budget's window: the attributes by scope, then the event
# names. Operators' never count. Each is an index range scan (ix_*_traffic) of at most a few
# budgets' worth of rows.
_BUDGET_USED = (
    "(SELECT coalesce(json_object_agg(scope, n), '{}') FROM (SELECT scope, count(*) AS n "  # noqa: S608 (constants)
    "FROM attribute_definitions WHERE app_id = :app AND origin = 'traffic' "
    f"AND created_at > now() - {BUDGET_WINDOW_SQL} GROUP BY scope) AS used), "
    "(SELECT count(*) FROM event_definitions WHERE app_id = :app AND origin = 'traffic' "
    f"AND created_at > now() - {BUDGET_WINDOW_SQL})"
)


def _write_rows(conn: Connection, sql: str, rows: list[dict[str, Any]], **params: Any) -> None:
    """Run `sql` once for all `rows`, passed as one jsonb parameter `:rows` that the statement
    unpacks with jsonb_to_recordset: one statement for N rows (STYLE 10). Nothing to write, no
    statement."""
    if rows:
        conn.execute(text(sql), {**params, "rows": json_dumps(rows)})


def _update_rows(
    conn: Connection, table: str, assignments: str, record: str, rows: list[dict[str, Any]]
) -> None:
    """One UPDATE of `table` for every row (each with its `id`), touching `updated_at`."""
    _write_rows(
        conn,
        f"UPDATE {table} AS t SET {assignments}, updated_at = now() "  # noqa: S608 (fixed names)
        f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({record}) WHERE t.id = r.id",
        rows,
    )


_PAGE_COLUMNS = ", ".join(PAGE_FIELDS)
_INSERT_PAGE_VIEWS = (
    f"INSERT INTO page_views (app_id, user_pk, kind, {_PAGE_COLUMNS}, properties, occurred_at, "  # noqa: S608 (fixed column names)
    f"message_id) SELECT :app, r.user_pk, r.kind, {', '.join(f'r.{c}' for c in PAGE_FIELDS)}, "
    "r.properties, r.occurred_at, r.message_id FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r("
    f"user_pk bigint, kind text, {', '.join(f'{c} text' for c in PAGE_FIELDS)}, "
    "properties jsonb, occurred_at timestamptz, message_id text)"
)
"""Every page view of a flush in one statement (STYLE 10), not one INSERT per row."""
_INSERT_EVENTS = (
    "INSERT INTO events (app_id, user_pk, event_id, properties, occurred_at, message_id) "
    "SELECT :app, r.user_pk, r.event_id, r.properties, r.occurred_at, r.message_id "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(user_pk bigint, event_id bigint, "
    "properties jsonb, occurred_at timestamptz, message_id text)"
)
"""Every event occurrence of a flush in one statement."""


def write_history(
    conn: Connection, app_id: int, page_views: list[dict[str, Any]], events: list[dict[str, Any]]
) -> None:
    """A flush's page views and events, one statement per table: `python -m bench.history`
    measures it against one INSERT per row."""
    _write_rows(conn, _INSERT_PAGE_VIEWS, page_views, app=app_id)
    _write_rows(conn, _INSERT_EVENTS, events, app=app_id)


def flush(conn: Connection, state: BatchState, key_ids: Iterable[str | None] = ()) -> None:
    """Write the state back: new profiles, merges, profile and company updates, new rows."""
    real = _insert_new_profiles(conn, state)

    def pk(temp: int) -> int:
        found = state.find(temp)
        return real.get(found, found)

    for source, target in state.merges:
        _merge_rows(conn, source, pk(target))
    _update_profiles(conn, state, pk)
    _write_identities(conn, state, pk)
    _update_companies(conn, state)
    _write_memberships(conn, state, pk)
    event_ids = _write_definitions(conn, state)
    write_history(
        conn,
        state.app_id,
        [
            {**r, "user_pk": pk(r["user_pk"]), "properties": lean_properties(r)}
            for r in state.page_views
        ],
        [{**r, "user_pk": pk(r["user_pk"]), "event_id": event_ids[n]} for n, r in state.events],
    )
    _count_ignored(conn, state)
    _record_changes(conn, state, pk)
    due = sorted({k for k in key_ids if k is not None and _key_use_due(k)})
    if due:
        conn.execute(
            text("UPDATE api_keys SET last_used_at = now() WHERE id = ANY(:keys)"), {"keys": due}
        )


def snapshot(record: Record) -> Snapshot:
    """A profile's or company's values: its fields (a profile's counters and times among them) and
    its custom attributes, copied; the change feed names the latter `attributes.<name>`."""
    fields = {**record.fields}
    if isinstance(record, Profile):
        fields.update(
            user_id=record.user_id,
            page_views=record.page_views,
            first_seen=record.first_seen,
            last_seen=record.last_seen,
        )
    return fields, {**record.attributes}


def _changed(state: BatchState, entity: str, record: Record, new: bool) -> list[str] | None:
    """The names of the values the message changed (set ones, for a new record); None if none."""
    fields, attributes = snapshot(record)
    if new:
        names = [k for k, v in fields.items() if v is not None]
        names += [f"attributes.{k}" for k, v in attributes.items() if v is not None]
    else:
        old_fields, old_attributes = state.before.get((entity, record.pk), ({}, {}))
        names = _differ(fields, old_fields)
        names += [f"attributes.{k}" for k in _differ(attributes, old_attributes)]
    return sorted(names) if names or new else None


def _differ(after: dict[str, Any], before: dict[str, Any]) -> list[str]:
    return [k for k in after.keys() | before.keys() if after.get(k) != before.get(k)]


def _record_changes(conn: Connection, state: BatchState, pk: Any) -> None:
    """The message's profile and company changes into the change feed: one INSERT, in the flush's
    transaction, so a change is in the feed exactly when it is in the tables."""
    rows: list[dict[str, Any]] = [
        {"entity": "profile", "entity_pk": source, "kind": "merged", "into_pk": pk(target)}
        for source, target in state.merges
    ]
    for profile in state.profiles.values():
        if profile.dirty or profile.new:
            fields = _changed(state, "profile", profile, profile.new)
            if fields is not None:
                kind = "created" if profile.new else "updated"
                rows.append(
                    {
                        "entity": "profile",
                        "entity_pk": pk(profile.pk),
                        "kind": kind,
                        "fields": fields,
                    }
                )
    for company in state.companies.values():
        new = company.pk in state.new_companies
        if company.dirty or new:
            fields = _changed(state, "company", company, new)
            if fields is not None:
                kind = "created" if new else "updated"
                rows.append(
                    {"entity": "company", "entity_pk": company.pk, "kind": kind, "fields": fields}
                )
    _write_rows(
        conn,
        "INSERT INTO changes (app_id, entity, entity_pk, kind, fields, into_pk) "
        "SELECT :app, r.entity, r.entity_pk, r.kind, r.fields, r.into_pk "
        # In the list's order (merges first), so ids follow what the message did.
        "FROM ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) "
        "AS (entity text, entity_pk bigint, kind text, fields jsonb, into_pk bigint)) "
        "WITH ORDINALITY AS r(entity, entity_pk, kind, fields, into_pk, n) ORDER BY r.n",
        rows,
        app=state.app_id,
    )


def pack_times(field_times: dict[str, str]) -> dict[str, list[str]]:
    """`field_times` as stored: each event time once, with the names it last wrote.

    One identify writes a dozen fields at one time; keyed by name, the same 24-character time was
    stored a dozen times (59 % of a profile row).
    """
    packed: dict[str, list[str]] = {}
    for name, when in sorted(field_times.items()):
        packed.setdefault(when, []).append(name)
    return packed


def unpack_times(stored: dict[str, Any]) -> dict[str, str]:
    """Name to event time, from the stored form (or the older one, name to time)."""
    times: dict[str, str] = {}
    for key, value in stored.items():
        if isinstance(value, list):
            times.update(dict.fromkeys(value, key))
        else:
            times[key] = value
    return times


def lean_properties(row: dict[str, Any]) -> dict[str, Any]:
    """A page view's properties without those its columns already hold, exactly as sent."""
    properties: dict[str, Any] = row["properties"]
    return {
        key: value
        for key, value in properties.items()
        if not (key in PAGE_FIELDS and isinstance(value, str) and value == row.get(key))
    }


KEY_USE_EVERY = 60.0
"""Seconds between two writes of one key's last_used_at by one worker process."""
_key_used: dict[str, float] = {}


def _key_use_due(key_id: str) -> bool:
    """True at most once a minute per key and process: last_used_at is a hint, not a log."""
    now = time.monotonic()
    if now < _key_used.get(key_id, 0.0):
        return False
    _key_used[key_id] = now + KEY_USE_EVERY
    return True


def _insert_new_profiles(conn: Connection, state: BatchState) -> dict[int, int]:
    new = sorted((p for p in state.profiles.values() if p.new), key=lambda p: -p.pk)
    if not new:
        return {}
    ids = conn.scalars(
        text("SELECT nextval('users_id_seq') FROM generate_series(1, :n)"), {"n": len(new)}
    ).all()
    real = {p.pk: i for p, i in zip(new, ids, strict=True)}
    _write_rows(
        conn,
        "INSERT INTO users (id, app_id, user_id) SELECT r.id, :app, r.user_id "
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id bigint, user_id text)",
        [{"id": real[p.pk], "user_id": p.user_id} for p in new],
        app=state.app_id,
    )
    return real


def _merge_rows(conn: Connection, source: int, target: int) -> None:
    """Merge an existing profile into `target` at a cost that does not grow with its
    history: the profile stays as a tombstone naming `target`, its counters and fields are already
    folded into `target` (BatchState.merge), and its page views, events, memberships and
    identities move later, in bounded batches (move_merged). Readers follow `merged_into`."""
    conn.execute(
        text("UPDATE users SET merged_into = :t, user_id = NULL, updated_at = now() WHERE id = :s"),
        {"s": source, "t": target},
    )


MOVE_BATCH = 1000
"""Rows of one table a background move takes in one transaction."""


def move_merged(conn: Connection, limit: int = MOVE_BATCH) -> int:
    """Move up to `limit` rows of each kind of one merged-away profile's history to the profile it
    lives on now; drop the tombstone once it is empty. Returns the rows moved (0: nothing to do).

    SKIP LOCKED lets every worker move at once, each its own tombstone.
    """
    row = conn.execute(
        text(
            "SELECT id FROM users WHERE merged_into IS NOT NULL ORDER BY id LIMIT 1 "
            "FOR UPDATE SKIP LOCKED"
        )
    ).first()
    if row is None:
        return 0
    source = int(row[0])
    target = _canonical(conn, {source})[source]
    params = {"s": source, "t": target, "n": limit}
    moved = 0
    for table in ("page_views", "events"):
        result = conn.execute(
            text(
                f"UPDATE {table} SET user_pk = :t WHERE id IN ("  # noqa: S608 (fixed table names)
                f"SELECT id FROM {table} WHERE user_pk = :s LIMIT :n)"
            ),
            params,
        )
        moved += int(result.rowcount)
    result = conn.execute(
        text(
            "WITH gone AS (DELETE FROM memberships WHERE ctid IN ("
            "  SELECT ctid FROM memberships WHERE user_pk = :s LIMIT :n) "
            "  RETURNING company_id, member_since) "
            "INSERT INTO memberships (company_id, user_pk, member_since) "
            "SELECT company_id, :t, member_since FROM gone ORDER BY company_id "
            "ON CONFLICT (company_id, user_pk) DO UPDATE "
            "SET member_since = LEAST(memberships.member_since, EXCLUDED.member_since)"
        ),
        params,
    )
    moved += int(result.rowcount)
    result = conn.execute(
        text(
            "UPDATE identities SET user_pk = :t WHERE (app_id, kind, value) IN ("
            "SELECT app_id, kind, value FROM identities WHERE user_pk = :s LIMIT :n)"
        ),
        params,
    )
    moved += int(result.rowcount)
    if moved == 0:
        # Empty: tombstones merged into this one now name its target, and it goes.
        conn.execute(text("UPDATE users SET merged_into = :t WHERE merged_into = :s"), params)
        conn.execute(text("DELETE FROM users WHERE id = :s"), params)
        return 1
    return moved


_PROFILE_RECORD = ", ".join(
    ["id bigint", "user_id text", "page_views bigint", "first_seen timestamptz",
     "last_seen timestamptz", "attributes jsonb", "field_times jsonb"]
    + [f"{name} text" for name in PROFILE_FIELDS]
)  # fmt: skip
_PROFILE_SET = ", ".join(
    f"{c} = r.{c}"
    for c in (
        "user_id",
        "page_views",
        "first_seen",
        "last_seen",
        "attributes",
        "field_times",
        *PROFILE_FIELDS,
    )
)


def _update_profiles(conn: Connection, state: BatchState, pk: Any) -> None:
    rows = [
        {
            **p.fields,
            "id": pk(p.pk),
            "user_id": p.user_id,
            "page_views": p.page_views,
            "first_seen": p.first_seen,
            "last_seen": p.last_seen,
            "attributes": p.attributes,
            "field_times": pack_times(p.field_times),
        }
        for p in sorted(state.profiles.values(), key=lambda p: pk(p.pk))
        if p.dirty
    ]
    _update_rows(conn, "users", _PROFILE_SET, _PROFILE_RECORD, rows)


def _write_identities(conn: Connection, state: BatchState, pk: Any) -> None:
    rows = [
        {"kind": kind, "value": value, "user_pk": pk(target)}
        for (kind, value), target in sorted(state.identity_writes.items())
    ]
    _write_rows(
        conn,
        "INSERT INTO identities (app_id, kind, value, user_pk) "
        "SELECT :app, r.kind, r.value, r.user_pk "
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(kind text, value text, user_pk bigint) "
        "ON CONFLICT (app_id, kind, value) DO UPDATE SET user_pk = EXCLUDED.user_pk",
        rows,
        app=state.app_id,
    )


_COMPANY_RECORD = ", ".join(
    ["id bigint", "attributes jsonb", "field_times jsonb", "employees bigint"]
    + [f"{name} text" for name in COMPANY_FIELDS if name != "employees"]
)
_COMPANY_SET = ", ".join(f"{c} = r.{c}" for c in ("attributes", "field_times", *COMPANY_FIELDS))


def _update_companies(conn: Connection, state: BatchState) -> None:
    rows = [
        {
            **c.fields,
            "id": c.pk,
            "attributes": c.attributes,
            "field_times": pack_times(c.field_times),
        }
        for c in sorted(state.companies.values(), key=lambda c: c.pk)
        if c.dirty
    ]
    _update_rows(conn, "companies", _COMPANY_SET, _COMPANY_RECORD, rows)


def _write_memberships(conn: Connection, state: BatchState, pk: Any) -> None:
    merged: dict[tuple[int, int], Any] = {}
    for (company, user), since in state.memberships.items():
        key = (company, pk(user))
        merged[key] = since if key not in merged else min(merged[key], since)
    _write_rows(
        conn,
        "INSERT INTO memberships (company_id, user_pk, member_since) SELECT r.c, r.u, r.s "
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(c bigint, u bigint, s timestamptz) "
        "ON CONFLICT (company_id, user_pk) DO UPDATE "
        "SET member_since = LEAST(memberships.member_since, EXCLUDED.member_since)",
        [{"c": c, "u": u, "s": s} for (c, u), s in sorted(merged.items())],
    )


def _write_definitions(conn: Connection, state: BatchState) -> dict[str, int]:
    defs = state.definitions
    if defs.new_events:
        names = sorted(set(defs.new_events))
        conn.execute(
            text(
                "INSERT INTO event_definitions (app_id, name, origin) "
                "SELECT :app, n, 'traffic' FROM unnest(CAST(:names AS text[])) AS n ORDER BY n "
                "ON CONFLICT DO NOTHING"
            ),
            {"app": state.app_id, "names": names},
        )
        for event_id, name in conn.execute(
            text(
                "SELECT id, name FROM event_definitions WHERE app_id = :app AND name = ANY(:names)"
            ),
            {"app": state.app_id, "names": names},
        ):
            defs.event_ids[name] = event_id
    _write_rows(
        conn,
        "INSERT INTO attribute_definitions (app_id, scope, event, name, type, origin) "
        "SELECT :app, r.s, r.e, r.n, 'string', 'traffic' "
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(s text, e text, n text) "
        "ON CONFLICT DO NOTHING",
        [{"s": s, "e": e, "n": n} for s, e, n in sorted(set(defs.new_attributes))],
        app=state.app_id,
    )
    return defs.event_ids


def _count_ignored(conn: Connection, state: BatchState) -> None:
    """Add the batch's ignored values to `ignored_values`. Names a definition gave are counted per
    name; names only the sender chose (over a cap, badly named) get a row of their own for the
    first IGNORED_NAMES_KEPT per scope and reason, and count under `*` after that."""
    _write_rows(
        conn,
        "INSERT INTO ignored_values (app_id, scope, event, name, reason, count) "
        "SELECT :app, x.s, x.e, x.n, x.r, sum(x.c) FROM ("
        "  SELECT r.s, r.r, r.c, k.keep, "
        "    CASE WHEN k.keep THEN r.e ELSE '*' END AS e, CASE WHEN k.keep THEN r.n ELSE '*' END AS n"
        "  FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
        "    AS r(s text, e text, n text, r text, c bigint, i bigint) "
        "  CROSS JOIN LATERAL (SELECT NOT (r.r = ANY(:named)) OR EXISTS ("
        "      SELECT 1 FROM ignored_values v WHERE v.app_id = :app AND v.scope = r.s "
        "      AND v.event = r.e AND v.name = r.n AND v.reason = r.r) OR ("
        "      SELECT count(*) FROM ignored_values v WHERE v.app_id = :app AND v.scope = r.s "
        "      AND v.reason = r.r) + r.i <= :kept AS keep) AS k"
        ") AS x GROUP BY x.s, x.e, x.n, x.r ORDER BY x.s, x.e, x.n, x.r "
        "ON CONFLICT (app_id, scope, event, name, reason) DO UPDATE "
        "SET count = ignored_values.count + EXCLUDED.count, last_at = now()",
        _ignored_rows(state.definitions.ignored),
        app=state.app_id,
        named=list(SENDER_NAMED_REASONS),
        kept=IGNORED_NAMES_KEPT,
    )


def _ignored_rows(ignored: Counter[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """One row per (scope, event, name, reason), with `i` its rank among its scope and reason."""
    rank: dict[tuple[str, str], int] = {}
    rows = []
    for (s, e, n, r), c in sorted(ignored.items()):
        rank[s, r] = rank.get((s, r), 0) + 1
        rows.append({"s": s, "e": e, "n": n, "r": r, "c": c, "i": rank[s, r]})
    return rows
