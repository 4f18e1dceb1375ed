"""The read side of userdest: apps, keys, definitions, profiles, events and page views as dicts.

Every function takes a session and an app id and answers JSON-ready values (times as ISO-8601 UTC
strings) in a handful of statements, however large the profile. The CLI formats the answers; the
shapes are the ones SPEC section 6 fixes for `--json`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session

from shared.models import (
    CANONICAL_PROFILES,
    COMPANY_FIELDS,
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


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _sorted_attributes(attributes: dict[str, Any] | None) -> dict[str, Any]:
    return dict(sorted((attributes or {}).items()))


def app_list(session: Session) -> list[dict[str, Any]]:
    """Every app with its count of live keys and trusted domains, by name."""
    live_keys = (
        select(func.count(ApiKey.id))
        .where(ApiKey.app_id == App.id, ApiKey.revoked_at.is_(None))
        .scalar_subquery()
    )
    domains = select(func.count(TrustedDomain.id)).where(TrustedDomain.app_id == App.id)
    rows = session.execute(
        select(
            App.name,
            App.created_at,
            live_keys.label("keys"),
            domains.scalar_subquery().label("domains"),
            App.webhook_secret.is_not(None).label("signed"),
        ).order_by(App.name)
    )
    return [
        {
            "name": row.name,
            "created_at": iso(row.created_at),
            "active_keys": row.keys,
            "trusted_domains": row.domains,
            "webhook_secret_set": row.signed,
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
            "prefix": key.prefix,
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
    """Values the workers ignored, by attribute and reason (`uncoercible`: a value its type could
    not take; `over_cap`: a name past the app's cap; `bad_name`), most frequent first."""
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


def find_user(session: Session, app_id: int, id: str) -> User:
    """The profile answering to `id` as a userId, else as an anonymousId; NotFound if none."""
    # A value can name one profile as its userId and another as an anonymous id; the userId wins.
    user = session.scalar(
        select(User)
        .join(Identity, Identity.user_pk == User.id)
        .where(Identity.app_id == app_id, Identity.value == id)
        .order_by(case((Identity.kind == "user", 0), else_=1))
        .limit(1)
    )
    if user is None:
        raise NotFound(f"no user with userId or anonymousId {id!r}")
    if user.merged_into is not None:
        # Merged away: the identity still names it until the background move; show where it went.
        user = session.get_one(User, _canonical(session, [user.id])[user.id])
    return user


_FAMILY = text(
    "WITH RECURSIVE family(id) AS (SELECT CAST(:pk AS bigint) UNION "
    "SELECT u.id FROM users u JOIN family f ON u.merged_into = f.id) SELECT id FROM family"
)


def _family(session: Session, pk: int) -> list[int]:
    """The profile and every profile merged into it whose history has not moved yet."""
    return list(session.scalars(_FAMILY, {"pk": pk}))


def _canonical(session: Session, pks: list[int]) -> dict[int, int]:
    """Each profile to the one it lives on in now (itself unless merged away)."""
    return {int(a): int(b) for a, b in session.execute(CANONICAL_PROFILES, {"pks": pks})}


def user_profile(session: Session, app_id: int, id: str) -> dict[str, Any]:
    """The profile `id` names, with its anonymous ids and companies: three statements."""
    user = find_user(session, app_id, id)
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
    session: Session, app_id: int, id: str, limit: int | None = None
) -> list[dict[str, Any]]:
    """The profile's tracked events, newest first; all of them unless `limit` is given."""
    user = find_user(session, app_id, id)
    stmt = (
        select(
            EventDefinition.name,
            EventOccurrence.properties,
            EventOccurrence.occurred_at,
            EventOccurrence.message_id,
        )
        .join(EventDefinition, EventDefinition.id == EventOccurrence.event_id)
        .where(
            EventOccurrence.app_id == app_id,
            EventOccurrence.user_pk.in_(_family(session, user.id)),
        )
        .order_by(EventOccurrence.occurred_at.desc(), EventOccurrence.id.desc())
        .limit(limit)
    )
    return [
        {
            "event": row.name,
            "properties": row.properties,
            "timestamp": iso(row.occurred_at),
            "message_id": row.message_id,
        }
        for row in session.execute(stmt)
    ]


def user_pageviews(
    session: Session, app_id: int, id: str, limit: int | None = None
) -> list[dict[str, Any]]:
    """The profile's page and screen views, newest first; all of them unless `limit` is given."""
    user = find_user(session, app_id, id)
    views = session.scalars(
        select(PageView)
        .where(PageView.app_id == app_id, PageView.user_pk.in_(_family(session, user.id)))
        .order_by(PageView.occurred_at.desc(), PageView.id.desc())
        .limit(limit)
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
        }
        for view in views
    ]


def _member_ids(session: Session, pks: list[int]) -> list[tuple[int, str | None, str | None]]:
    """(pk, userId, first anonymous id) of each profile, its not yet moved ids included."""
    if not pks:
        return []
    rows = session.execute(
        text(
            "WITH RECURSIVE family(root, id) AS (SELECT id, id FROM users WHERE id = ANY(:pks) "
            "UNION SELECT f.root, u.id FROM users u JOIN family f ON u.merged_into = f.id) "
            "SELECT f.root, r.user_id, min(i.value) FILTER (WHERE i.kind = 'anonymous') "
            "FROM family f JOIN users r ON r.id = f.root "
            "LEFT JOIN identities i ON i.user_pk = f.id GROUP BY f.root, r.user_id"
        ),
        {"pks": pks},
    )
    return [(int(pk), user_id, anonymous_id) for pk, user_id, anonymous_id in rows]


def company_profile(session: Session, app_id: int, group_id: str) -> dict[str, Any]:
    """The company and its members (each by userId, else its first anonymousId): two statements."""
    company = session.scalar(
        select(Company).where(Company.app_id == app_id, Company.group_id == group_id)
    )
    if company is None:
        raise NotFound(f"no company with groupId {group_id!r}")
    linked = list(
        session.scalars(select(Membership.user_pk).where(Membership.company_id == company.id))
    )
    # A member merged away is shown as the profile it lives on in, by that one's ids.
    canonical = sorted(set(_canonical(session, linked).values())) if linked else []
    names = {
        user_id or anonymous_id for _, user_id, anonymous_id in _member_ids(session, canonical)
    }
    users = sorted(name for name in names if name)
    return {
        "group_id": company.group_id,
        **{name: getattr(company, name) for name in COMPANY_FIELDS},
        "attributes": _sorted_attributes(company.attributes),
        "users": users,
    }
