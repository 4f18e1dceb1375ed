"""The documented JSON shapes of the read model, and a seeded database to read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from shared import readmodel
from shared.models import (
    App,
    Company,
    EventDefinition,
    EventOccurrence,
    Identity,
    Membership,
    PageView,
    User,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
"""The seeded history's first event time."""

PROFILE_KEYS = {
    "user_id",
    "anonymous_ids",
    "email",
    "first_name",
    "last_name",
    "phone",
    "gender",
    "country",
    "region",
    "city",
    "user_agent",
    "os",
    "device_name",
    "device_type",
    "language",
    "resolution",
    "ip_address",
    "browser_family",
    "browser_version",
    "timezone",
    "current_url",
    "page_views",
    "first_seen",
    "last_seen",
    "attributes",
    "companies",
}


EVENT_KEYS = {"event", "properties", "timestamp", "message_id", "cursor"}


PAGEVIEW_KEYS = {
    "kind",
    "url",
    "path",
    "title",
    "referrer",
    "name",
    "timestamp",
    "message_id",
    "cursor",
}


COMPANY_KEYS = {
    "next_cursor",
    "group_id",
    "name",
    "description",
    "email",
    "employees",
    "phone",
    "country",
    "region",
    "city",
    "attributes",
    "users",
}


DEFINITION_KEYS = {"scope", "event", "name", "type", "choices", "origin"}


KEY_KEYS = {"key_id", "label", "prefix", "scope", "created_at", "revoked_at", "last_used_at"}


def shown_profile(conn: Connection, app_id: int, id: str) -> dict[str, Any]:
    """The profile a userId or anonymousId names, as `userdest users show --json` shows it (merged
    profiles followed), plus its primary key as `pk` for counting the rows it owns."""
    with Session(bind=conn) as session:
        shown = readmodel.user_profile(session, app_id, id)
        shown["pk"] = readmodel.find_user(session, app_id, id).id
    return shown


def make_user(
    session: Session, app: App, user_id: str | None, *anonymous: str, **fields: Any
) -> User:
    user = User(app_id=app.id, user_id=user_id, **fields)
    session.add(user)
    session.flush()
    if user_id is not None:
        session.add(Identity(app_id=app.id, kind="user", value=user_id, user_pk=user.id))
    for value in anonymous:
        session.add(Identity(app_id=app.id, kind="anonymous", value=value, user_pk=user.id))
    session.flush()
    return user


def seed(session: Session) -> dict[str, Any]:
    """Two apps; in `shop` an identified user with history, an anonymous one and two companies."""
    shop, other = App(name="shop"), App(name="other")
    session.add_all([shop, other])
    session.flush()

    ada = make_user(
        session,
        shop,
        "u1",
        "anon-b",
        "anon-a",
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        gender="female",
        city="London",
        device_type="desktop",
        page_views=3,
        first_seen=T0,
        last_seen=T0 + timedelta(hours=2),
        attributes={"seats": 3, "plan": "pro"},
    )
    visitor = make_user(session, shop, None, "anon-z", "anon-c")
    make_user(session, other, "u1", email="someone-else@example.com")

    acme = Company(
        app_id=shop.id,
        group_id="acme",
        name="Acme",
        employees=10,
        city="Paris",
        attributes={"tier": "gold"},
    )
    beta = Company(app_id=shop.id, group_id="beta", name="Beta")
    session.add_all([acme, beta])
    session.flush()
    session.add_all(
        [
            Membership(company_id=acme.id, user_pk=ada.id, member_since=T0 + timedelta(days=1)),
            Membership(company_id=beta.id, user_pk=ada.id, member_since=T0),
            Membership(company_id=acme.id, user_pk=visitor.id, member_since=T0),
        ]
    )

    signed_up = EventDefinition(app_id=shop.id, name="Signed Up")
    ordered = EventDefinition(app_id=shop.id, name="Order Completed")
    session.add_all([signed_up, ordered])
    session.flush()
    session.add_all(
        [
            EventOccurrence(
                app_id=shop.id,
                user_pk=ada.id,
                event_id=signed_up.id,
                properties={},
                occurred_at=T0,
                message_id="e1",
            ),
            EventOccurrence(
                app_id=shop.id,
                user_pk=ada.id,
                event_id=ordered.id,
                properties={"total": 9.5},
                occurred_at=T0 + timedelta(hours=2),
                message_id="e3",
            ),
            EventOccurrence(
                app_id=shop.id,
                user_pk=ada.id,
                event_id=ordered.id,
                properties={"total": 20.0},
                occurred_at=T0 + timedelta(hours=1),
                message_id="e2",
            ),
        ]
    )
    for minutes, kind, message_id in ((5, "page", "p2"), (1, "page", "p1"), (9, "screen", "p3")):
        session.add(
            PageView(
                app_id=shop.id,
                user_pk=ada.id,
                kind=kind,
                url=f"https://shop.example.com/{message_id}",
                path=f"/{message_id}",
                title=f"Title {message_id}",
                referrer="https://search.example.com/",
                name="Home" if kind == "screen" else None,
                properties={},
                occurred_at=T0 + timedelta(minutes=minutes),
                message_id=message_id,
            )
        )
    session.flush()
    return {"shop": shop, "other": other, "ada": ada, "visitor": visitor}
