"""The read side of userdest: apps, keys, definitions, profiles, events and page views as dicts.

Every function takes a session and an app id and answers JSON-ready values (times as ISO-8601 UTC
strings) in a handful of statements, however large the profile. The CLI formats the answers; the
shapes are the ones docs/cli.md gives for `--json`.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import Select, and_, case, func, select, text, true, tuple_
from sqlalchemy.orm import Session

from shared import erasure, search
from shared.ids import normalize_id
from shared.models import (
    CANONICAL_PROFILES,
    COMPANY_FIELDS,
    FAMILY_PROFILES,
    MERGED_FAMILY,
    PAGE_FIELDS,
    PROFILE_FIELDS,
    ApiKey,
    App,
    AttributeDefinition,
    Company,
    EventDefinition,
    EventOccurrence,
    Identity,
    IgnoredValue,
    Membership,
    PageView,
    TrustedDomain,
    User,
)
from shared.timeparse import iso


class NotFound(LookupError):
    """The app knows no user, company or key by that id; the message is one line for an operator."""


class _Definition(Protocol):
    scope: str
    event: str
    name: str
    type: str
    choices: list[Any] | None
    origin: str


class BadCursor(NotFound):
    """A cursor this read model did not make (or made for another list)."""


DEFAULT_LIMIT = 100
"""Rows a list answers when no --limit is given: every read is bounded."""


def encode_cursor(*values: Any) -> str:
    """An opaque cursor for keyset pagination: the sort key of the last row shown."""
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type) -> tuple[Any, ...]:
    """The sort key in `cursor`, each value checked against `kinds`; BadCursor otherwise."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if len(values) != len(kinds):
            raise ValueError
        return tuple(
            datetime.fromisoformat(v) if k is datetime else k(v) if type(v) is k else _bad()
            for v, k in zip(values, kinds, strict=True)
        )
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadCursor(f"not a cursor of this list: {cursor[:40]!r}") from None


def _bad() -> Any:
    raise ValueError


def _time_page(
    stmt: Select[Any],
    time: Any,
    id_: Any,
    limit: int | None,
    after: str | None,
    span: tuple[datetime | None, datetime | None] = (None, None),
) -> Select[Any]:
    """`stmt` newest first from just after the row `after` names, at most `limit` rows, within
    `span` (since, until; either end open)."""
    since, until = span
    if since is not None:
        stmt = stmt.where(time >= since)
    if until is not None:
        stmt = stmt.where(time < until)
    if after is not None:
        when, row_id = decode_cursor(after, datetime, int)
        stmt = stmt.where(tuple_(time, id_) < tuple_(when, row_id))
    return stmt.order_by(time.desc(), id_.desc()).limit(limit)


def _time_cursor(when: datetime, row_id: int) -> str:
    return encode_cursor(when.isoformat(), row_id)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _sorted_attributes(attributes: dict[str, Any] | None) -> dict[str, Any]:
    return dict(sorted((attributes or {}).items()))


def app_caps(app: App) -> dict[str, int | None]:
    """The app's caps on definitions and its budget of new names per scope and hour (null: the
    workers' DEFINITION_BUDGET), by the names `apps caps` takes."""
    return {
        "user_attributes": app.max_user_attributes,
        "company_attributes": app.max_company_attributes,
        "event_names": app.max_event_names,
        "event_attributes": app.max_event_attributes,
        "budget": app.definition_budget,
    }


def app_list(session: Session) -> list[dict[str, Any]]:
    """Every app with its count of live keys and trusted domains, and its caps, by name."""
    live_keys = (
        select(func.count(ApiKey.id))
        .where(ApiKey.app_id == App.id, ApiKey.revoked_at.is_(None))
        .scalar_subquery()
    )
    domains = select(func.count(TrustedDomain.id)).where(TrustedDomain.app_id == App.id)
    rows = session.execute(
        select(
            App,
            live_keys.label("keys"),
            domains.scalar_subquery().label("domains"),
        ).order_by(App.name)
    )
    return [
        {
            "name": row.App.name,
            "created_at": iso(row.App.created_at),
            "active_keys": row.keys,
            "trusted_domains": row.domains,
            "webhook_secret_set": row.App.webhook_secret is not None,
            "caps": app_caps(row.App),
        }
        for row in rows
    ]


def key_list(session: Session, app_id: int) -> list[dict[str, Any]]:
    """The app's API keys, oldest first: ids, prefixes and times, never a secret or its hash."""
    keys = session.scalars(
        select(ApiKey).where(ApiKey.app_id == app_id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return [
        {
            "key_id": key.id,
            "label": key.label,
            "prefix": key.prefix,
            "scope": key.scope,
            "created_at": iso(key.created_at),
            "revoked_at": _iso(key.revoked_at),
            "last_used_at": _iso(key.last_used_at),
        }
        for key in keys
    ]


def domain_list(session: Session, app_id: int) -> list[dict[str, Any]]:
    """The app's trusted domains by host; an empty list means the app trusts every host."""
    rows = session.execute(
        select(TrustedDomain.host, TrustedDomain.created_at)
        .where(TrustedDomain.app_id == app_id)
        .order_by(TrustedDomain.host)
    )
    return [{"host": row.host, "created_at": iso(row.created_at)} for row in rows]


def definition(row: _Definition) -> dict[str, Any]:
    """One attribute definition as `attributes list` shows it; `event` is null outside its scope."""
    return {
        "scope": row.scope,
        "event": row.event if row.scope == "event" else None,
        "name": row.name,
        "type": row.type,
        "choices": row.choices,
        "origin": row.origin,
    }


def attribute_list(session: Session, app_id: int) -> list[dict[str, Any]]:
    """The app's attribute definitions: user, then company, then event scope; by event and name."""
    scope_order = case({"user": 0, "company": 1, "event": 2}, value=AttributeDefinition.scope)
    rows = session.scalars(
        select(AttributeDefinition)
        .where(AttributeDefinition.app_id == app_id)
        .order_by(scope_order, AttributeDefinition.event, AttributeDefinition.name)
    )
    return [definition(row) for row in rows]


def event_list(session: Session, app_id: int) -> list[dict[str, Any]]:
    """The event names the app has seen, with how many occurrences each has and the last one's
    time; most frequent first. Names turned away by the cap are in `ignored_list`."""
    count = func.count(EventOccurrence.id)
    rows = session.execute(
        select(
            EventDefinition.name,
            EventDefinition.origin,
            count.label("count"),
            func.max(EventOccurrence.occurred_at).label("last_at"),
        )
        .outerjoin(EventOccurrence, EventOccurrence.event_id == EventDefinition.id)
        .where(EventDefinition.app_id == app_id)
        .group_by(EventDefinition.id)
        .order_by(count.desc(), EventDefinition.name)
    )
    return [
        {"event": r.name, "count": r.count, "last_at": iso(r.last_at), "origin": r.origin}
        for r in rows
    ]


def ignored_list(session: Session, app_id: int) -> list[dict[str, Any]]:
    """Values the workers ignored or stored changed, by attribute and reason (`uncoercible`: a
    value its type could not take; `truncated`: a string stored cut; `json_too_long`: an object or
    array too long for a string attribute; `unknown_choices`: a list that lost members not among
    the choices; `over_cap`: a name past the app's cap; `over_budget`: a new name past the app's
    budget for the hour; `bad_name`),
    most frequent first."""
    rows = session.scalars(
        select(IgnoredValue)
        .where(IgnoredValue.app_id == app_id)
        .order_by(
            IgnoredValue.count.desc(), IgnoredValue.scope, IgnoredValue.event, IgnoredValue.name
        )
    )
    return [
        {
            "scope": r.scope,
            "event": r.event or None,
            "name": r.name or None,
            "reason": r.reason,
            "count": r.count,
            "last_at": iso(r.last_at),
        }
        for r in rows
    ]


ID_KINDS = {"userId": "user", "anonymousId": "anonymous", "profileId": None}
"""What names a profile: its userId, one of its anonymous ids, or its number (`profile_id`, what
the change feed gives)."""


def find_user(session: Session, app_id: int, id: str, kind: str | None = None) -> User:
    """The profile answering to `id` as a userId, else as an anonymousId (or only as the `kind` of
    ID_KINDS given); NotFound if none. Erased people are not found: their rows are gone."""
    if kind == "profileId":
        return _by_number(session, app_id, id)
    # A value can name one profile as its userId and another as an anonymous id; the userId wins.
    # One primary-key probe per kind: without the kind, the lookup reads all the app's identities.
    for stored in ("user", "anonymous") if kind is None else (ID_KINDS[kind],):
        user = session.scalar(
            select(User)
            .join(Identity, Identity.user_pk == User.id)
            .where(Identity.app_id == app_id, Identity.kind == stored, Identity.value == id)
        )
        if user is not None:
            if user.merged_into is not None:
                # Merged away: the identity names it until the background move; show where it went.
                user = session.get_one(User, _canonical(session, [user.id])[user.id])
            return user
    raise NotFound(f"no user with userId or anonymousId {id!r}")


def _by_number(session: Session, app_id: int, id: str) -> User:
    user = session.get(User, int(id)) if id.isdigit() and len(id) < 19 else None
    if user is None or user.app_id != app_id:
        raise NotFound(f"no profile number {id!r}")
    if user.merged_into is not None:
        user = session.get_one(User, _canonical(session, [user.id])[user.id])
    return user


def _family(session: Session, pk: int) -> list[int]:
    """The profile and every profile merged into it whose history has not moved yet."""
    return list(session.scalars(FAMILY_PROFILES, {"pks": [pk]}))


def _canonical(session: Session, pks: list[int]) -> dict[int, int]:
    """Each profile to the one it lives on in now (itself unless merged away)."""
    return {int(a): int(b) for a, b in session.execute(CANONICAL_PROFILES, {"pks": pks})}


def identities_of(session: Session, app_id: int, user_pk: int) -> list[tuple[str, str]]:
    """Every (kind, value) the profile answers to."""
    rows = session.execute(
        select(Identity.kind, Identity.value)
        .where(Identity.app_id == app_id, Identity.user_pk.in_(_family(session, user_pk)))
        .order_by(Identity.kind, Identity.value)
    )
    return [(row.kind, row.value) for row in rows]


def user_profile(session: Session, app_id: int, id: str) -> dict[str, Any]:
    """The profile `id` names, with its anonymous ids and companies: three statements."""
    return user_document(session, app_id, find_user(session, app_id, id))


def user_document(session: Session, app_id: int, user: User) -> dict[str, Any]:
    """The profile `user`, with its anonymous ids and companies (what `users show --json` gives)."""
    family = _family(session, user.id)
    anonymous_ids = session.scalars(
        select(Identity.value).where(
            Identity.app_id == app_id, Identity.user_pk.in_(family), Identity.kind == "anonymous"
        )
    ).all()
    since = func.min(Membership.member_since).label("member_since")
    companies = session.execute(
        select(Company.group_id, Company.name, since)
        .join(Membership, Membership.company_id == Company.id)
        .where(Membership.user_pk.in_(family))
        .group_by(Company.id)
        .order_by(since, Company.group_id)
    )
    return {
        "user_id": user.user_id,
        "anonymous_ids": sorted(anonymous_ids),
        **{name: getattr(user, name) for name in PROFILE_FIELDS},
        "page_views": user.page_views,
        "first_seen": _iso(user.first_seen),
        "last_seen": _iso(user.last_seen),
        "attributes": _sorted_attributes(user.attributes),
        "companies": [
            {"group_id": row.group_id, "name": row.name, "member_since": iso(row.member_since)}
            for row in companies
        ],
    }


def user_events(
    session: Session,
    app_id: int,
    id: str,
    limit: int | None = DEFAULT_LIMIT,
    after: str | None = None,
    event: str | None = None,
    span: tuple[datetime | None, datetime | None] = (None, None),
) -> list[dict[str, Any]]:
    """The profile's tracked events (of the name `event` only, if given), newest first, from after
    the cursor `after`, within `span`; each carries the `cursor` that continues after it."""
    user = find_user(session, app_id, id)
    stmt = (
        select(
            EventDefinition.name,
            EventOccurrence.properties,
            EventOccurrence.occurred_at,
            EventOccurrence.message_id,
            EventOccurrence.id,
        )
        .join(EventDefinition, EventDefinition.id == EventOccurrence.event_id)
        .where(EventOccurrence.user_pk.in_(_family(session, user.id)))
    )
    if event is not None:
        stmt = stmt.where(EventDefinition.app_id == app_id, EventDefinition.name == event)
    stmt = _time_page(stmt, EventOccurrence.occurred_at, EventOccurrence.id, limit, after, span)
    return [
        {
            "event": row.name,
            "properties": row.properties,
            "timestamp": iso(row.occurred_at),
            "message_id": row.message_id,
            "cursor": _time_cursor(row.occurred_at, row.id),
        }
        for row in session.execute(stmt)
    ]


def user_pageviews(
    session: Session,
    app_id: int,
    id: str,
    limit: int | None = DEFAULT_LIMIT,
    after: str | None = None,
    span: tuple[datetime | None, datetime | None] = (None, None),
) -> list[dict[str, Any]]:
    """The profile's page and screen views, newest first, from after the cursor `after`, within
    `span`; each carries the `cursor` that continues after it."""
    user = find_user(session, app_id, id)
    stmt = _time_page(
        select(PageView).where(PageView.user_pk.in_(_family(session, user.id))),
        PageView.occurred_at,
        PageView.id,
        limit,
        after,
        span,
    )
    return [
        {
            "kind": view.kind,
            "url": view.url,
            "path": view.path,
            "title": view.title,
            "referrer": view.referrer,
            "name": view.name,
            "timestamp": iso(view.occurred_at),
            "message_id": view.message_id,
            "cursor": _time_cursor(view.occurred_at, view.id),
        }
        for view in session.scalars(stmt)
    ]


def _member_ids(session: Session, pks: list[int]) -> list[tuple[int, str | None, str | None]]:
    """(pk, userId, first anonymous id) of each profile, its not yet moved ids included."""
    if not pks:
        return []
    rows = session.execute(
        text(
            f"WITH RECURSIVE {MERGED_FAMILY} "  # noqa: S608 (a constant)
            "SELECT f.root, r.user_id, min(i.value) FILTER (WHERE i.kind = 'anonymous') "
            "FROM family f JOIN users r ON r.id = f.root "
            "LEFT JOIN identities i ON i.user_pk = f.id GROUP BY f.root, r.user_id"
        ),
        {"pks": pks},
    )
    return [(int(pk), user_id, anonymous_id) for pk, user_id, anonymous_id in rows]


def company_profile(
    session: Session,
    app_id: int,
    group_id: str,
    limit: int = DEFAULT_LIMIT,
    after: str | None = None,
) -> dict[str, Any]:
    """The company and a page of its members (each by userId, else its first anonymousId), in the
    order their links were made; `next_cursor` continues the list, null at its end."""
    company = session.scalar(
        select(Company).where(Company.app_id == app_id, Company.group_id == group_id)
    )
    if company is None:
        raise NotFound(f"no company with groupId {group_id!r}")
    stmt = (
        select(Membership.user_pk)
        .where(Membership.company_id == company.id)
        .order_by(Membership.user_pk)
        .limit(limit + 1)
    )
    if after is not None:
        stmt = stmt.where(Membership.user_pk > decode_cursor(after, int)[0])
    linked = list(session.scalars(stmt))
    page = linked[:limit]
    # A member merged away is shown as the profile it lives on in, by that one's ids.
    canonical = _canonical(session, page) if page else {}
    names = {
        pk: user_id or anonymous_id
        for pk, user_id, anonymous_id in _member_ids(session, sorted(set(canonical.values())))
    }
    users: list[str] = []
    for pk in page:
        name = names.get(canonical.get(pk, pk))
        if name and name not in users:
            users.append(name)
    return {
        "group_id": company.group_id,
        **{name: getattr(company, name) for name in COMPANY_FIELDS},
        "attributes": _sorted_attributes(company.attributes),
        "users": users,
        "next_cursor": encode_cursor(page[-1]) if len(linked) > limit else None,
    }


def person_of(session: Session, app_id: int, id: str, must_exist: bool = True) -> erasure.Person:
    """Everything held about the person `id` names, found as erasure finds it: the profile `id`
    names (as `find_user` does) and what links to it; else, for someone known only from dead
    letters, the letters naming `id` as a userId, anonymousId or email. NotFound if nothing,
    unless not `must_exist` (someone whose calls still wait in a queue): then the person of those
    ids alone."""
    try:
        pks, keys = [find_user(session, app_id, id).id], set()
    except NotFound:
        pks, keys = [], keys_of(id)
    person = erasure.find(session.connection(), app_id, keys, pks)
    if must_exist and not person.found:
        raise NotFound(f"no one with userId, anonymousId or email {id!r}")
    return person


def keys_of(id: str) -> set[erasure.IdKey]:
    """The ids and contact an operator's ID may be: a userId, an anonymousId, an email."""
    keys: set[erasure.IdKey] = set()
    value = normalize_id(id)
    if value is not None:
        keys |= {("user", value), ("anonymous", value)}
    email = erasure.normalize_email(id)
    if email is not None:
        keys.add(("email", email))
    return keys


def user_export(
    session: Session, app_id: int, id: str, must_exist: bool = True
) -> tuple[dict[str, Any], erasure.Person]:
    """Everything held in Postgres about the person `id` names (a subject access request): their
    profiles, every id and contact, event, page view, company link and dead letter naming them;
    and the person, whose ids and contacts find their calls still queued."""
    person = person_of(session, app_id, id, must_exist)
    pks = person.pks
    profiles = session.scalars(
        select(User).where(User.id.in_(pks), User.merged_into.is_(None)).order_by(User.id)
    ).all()
    identities = session.execute(
        select(Identity.kind, Identity.value, Identity.created_at)
        .where(Identity.app_id == app_id, Identity.user_pk.in_(pks))
        .order_by(Identity.kind, Identity.value)
    ).all()
    events = session.execute(
        select(
            EventDefinition.name,
            EventOccurrence.properties,
            EventOccurrence.occurred_at,
            EventOccurrence.message_id,
        )
        .join(EventDefinition, EventDefinition.id == EventOccurrence.event_id)
        .where(EventOccurrence.user_pk.in_(pks))
        .order_by(EventOccurrence.occurred_at.desc(), EventOccurrence.id.desc())
    )
    views = session.scalars(
        select(PageView)
        .where(PageView.user_pk.in_(pks))
        .order_by(PageView.occurred_at.desc(), PageView.id.desc())
    )
    letters = session.execute(
        text(
            "SELECT l.id, l.reason, l.created_at, l.call, d.defaults FROM dead_letters l "
            "LEFT JOIN dead_letter_defaults d ON d.digest = l.defaults_digest "
            "WHERE l.id = ANY(:ids) ORDER BY l.id"
        ),
        {"ids": person.letters},
    ).all()
    documents = [user_document(session, app_id, user) for user in profiles]
    document = {
        "profile": documents[0] if documents else None,
        "other_profiles": documents[1:],
        "identities": [
            {"kind": r.kind, "value": r.value, "created_at": iso(r.created_at)} for r in identities
        ],
        "ids_and_contacts": [
            {"kind": kind, "value": value} for kind, value in sorted(person.ids | person.contacts)
        ],
        "events": [
            {
                "event": r.name,
                "properties": r.properties,
                "timestamp": iso(r.occurred_at),
                "message_id": r.message_id,
            }
            for r in events
        ],
        "page_views": [
            {
                "kind": v.kind,
                **{c: getattr(v, c) for c in PAGE_FIELDS},
                # Stored without the values its columns hold (workers/apply/store.py).
                "properties": {
                    **{c: getattr(v, c) for c in PAGE_FIELDS if getattr(v, c) is not None},
                    **v.properties,
                },
                "timestamp": iso(v.occurred_at),
                "message_id": v.message_id,
                "received_at": iso(v.ingested_at),
            }
            for v in views
        ],
        "dead_letters": [
            {
                "id": r.id,
                "reason": r.reason,
                "created_at": iso(r.created_at),
                "call": r.call,
                "batch_defaults": r.defaults,
            }
            for r in letters
        ],
    }
    return document, person


def page_of(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """The page shape of every list: `rows` were read with `limit + 1`; each row's `cursor` goes,
    the last shown one's becomes `next_cursor` when there is more."""
    shown = rows[:limit]
    more = len(rows) > limit
    return {
        "data": [{k: v for k, v in row.items() if k != "cursor"} for row in shown],
        "next_cursor": shown[-1]["cursor"] if more else None,
        "has_more": more,
    }


def user_timeline(
    session: Session,
    app_id: int,
    id: str,
    limit: int = DEFAULT_LIMIT,
    after: str | None = None,
    event: str | None = None,
    span: tuple[datetime | None, datetime | None] = (None, None),
) -> list[dict[str, Any]]:
    """Events and page views together, newest first, each with its `type` (`track` or the view's
    kind) and the `cursor` that continues after it; `event` keeps events of that name only."""
    event_after = view_after = None
    if after is not None:
        when, source, row_id = decode_cursor(after, datetime, str, int)
        # One time line ordered by (time, source, id), events ("e") before views ("p") at a tie:
        # what follows the cursor in each kind, newest first.
        event_after = _time_cursor(when, row_id if source == "e" else 2**62)
        view_after = _time_cursor(when, row_id if source == "p" else 0)
    events = user_events(session, app_id, id, limit, event_after, event, span)
    views = (
        [] if event is not None else user_pageviews(session, app_id, id, limit, view_after, span)
    )
    rows: list[tuple[str, str, int, dict[str, Any]]] = []
    for row in events:
        row_id = decode_cursor(row["cursor"], datetime, int)[1]
        rows.append((row["timestamp"], "e", row_id, {"type": "track", **row}))
    for row in views:
        row_id = decode_cursor(row["cursor"], datetime, int)[1]
        rows.append((row["timestamp"], "p", row_id, {"type": row.pop("kind"), **row}))
    rows.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)
    out = []
    for timestamp, source, row_id, row in rows[:limit]:
        row["cursor"] = encode_cursor(timestamp, source, row_id)
        out.append(row)
    return out


def profile_summary(user: User) -> dict[str, Any]:
    """A profile as lists show it: its number, ids, name, contact and times."""
    return {
        "profile_id": user.id,
        "user_id": user.user_id,
        "email": user.email,
        "phone": user.phone,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "first_seen": _iso(user.first_seen),
        "last_seen": _iso(user.last_seen),
        "cursor": encode_cursor(user.id),
    }


def _profiles_page(
    session: Session, app_id: int, where: Any, limit: int, after: str | None
) -> list[dict[str, Any]]:
    stmt = select(User).where(User.app_id == app_id, User.merged_into.is_(None), where)
    if after is not None:
        stmt = stmt.where(User.id > decode_cursor(after, int)[0])
    return [profile_summary(u) for u in session.scalars(stmt.order_by(User.id).limit(limit))]


def users_by_contact(
    session: Session,
    app_id: int,
    field: str,
    value: str,
    limit: int = DEFAULT_LIMIT,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """The profiles whose `email` (any case) or `phone` is `value`, by number; several people may
    share one."""
    if field == "email":
        where = and_(User.email.is_not(None), func.lower(User.email) == value.strip().lower())
    else:
        where = and_(User.phone.is_not(None), User.phone == value.strip())
    return _profiles_page(session, app_id, where, limit, after)


def user_list(
    session: Session,
    app_id: int,
    where: Any = None,
    limit: int = DEFAULT_LIMIT,
    after: str | None = None,
) -> list[dict[str, Any]]:
    """The app's profiles matching the filter `where` (shared/search.py), by number."""
    condition = true() if where is None else search.condition(session, app_id, where)
    return _profiles_page(session, app_id, condition, limit, after)


def company_list(
    session: Session, app_id: int, limit: int = DEFAULT_LIMIT, after: str | None = None
) -> list[dict[str, Any]]:
    """The app's companies by number: groupId, name and member count."""
    members = select(func.count()).where(Membership.company_id == Company.id).scalar_subquery()
    stmt = select(Company.id, Company.group_id, Company.name, members.label("members")).where(
        Company.app_id == app_id
    )
    if after is not None:
        stmt = stmt.where(Company.id > decode_cursor(after, int)[0])
    return [
        {
            "group_id": r.group_id,
            "name": r.name,
            "members": r.members,
            "cursor": encode_cursor(r.id),
        }
        for r in session.execute(stmt.order_by(Company.id).limit(limit))
    ]
