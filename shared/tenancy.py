"""Apps, API keys, trusted domains and webhook secrets: the operator's side of tenancy.

The receiver only reads through `load_auth_view()`; everything that writes is called by the CLI.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import idna
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.attributes import CAP_MAX
from shared.models import ApiKey, App, Base, Company, Membership, TrustedDomain
from shared.timeparse import utcnow

KEY_PREFIX = "ud_"


class TenancyError(LookupError):
    """An operator asked for an app, key or domain that does not exist or already exists."""


def hash_key(secret: str) -> str:
    """sha256 hex of an API key. Keys carry 192 random bits, so a fast hash is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def normalize_host(host: str) -> str:
    """A host as stored and compared: lower case, no scheme, port or trailing dot; an IDN as
    punycode (what browsers send in Origin and Referer)."""
    host = host.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].rsplit("@", 1)[-1]
    if host.startswith(
        "["
    ):  # [v6]:port, as URLs write IPv6; urlsplit's hostname drops the brackets
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:  # host:port; a bare IPv6 address has several colons and no port
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    if not host.isascii():
        wildcard = host.startswith("*.")
        try:
            host = idna.encode(host[2:] if wildcard else host, uts46=True).decode("ascii")
        except idna.IDNAError:
            return host  # not a name; valid_domain_entry() says so
        host = f"*.{host}" if wildcard else host
    return host


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_MAX_HOST = 253


def valid_domain_entry(entry: str) -> bool:
    """Whether a normalized entry is a host name, an IP address, or `*.` plus at least two labels
    (`*.example.com`; never `*.com`, which would trust a whole top-level domain)."""
    try:
        ipaddress.ip_address(entry)
    except ValueError:
        pass
    else:
        return True
    wildcard = entry.startswith("*.")
    name = entry[2:] if wildcard else entry
    labels = name.split(".")
    if not name or len(name) > _MAX_HOST or not all(_LABEL.fullmatch(x) for x in labels):
        return False
    return len(labels) >= 2 or not wildcard


def url_host(value: Any) -> str | None:
    """The host of an absolute URL as normalize_host() writes it; None where there is none."""
    if not isinstance(value, str) or "//" not in value:
        return None
    try:
        host = urlsplit(value.strip()).hostname
    except ValueError:
        return None
    return normalize_host(host) if host else None


def get_app(session: Session, name: str) -> App:
    app = session.scalar(select(App).where(App.name == name))
    if app is None:
        raise TenancyError(f"no app named {name!r}")
    return app


def new_app(session: Session, name: str) -> App:
    name = name.strip()
    if not name:
        raise TenancyError("an app name must not be empty")
    if session.scalar(select(App.id).where(App.name == name)) is not None:
        raise TenancyError(f"an app named {name!r} already exists")
    app = App(name=name)
    session.add(app)
    session.flush()
    return app


def delete_app(session: Session, app: App) -> dict[str, int]:
    """Delete the app and everything it owns; the rows deleted, by table.

    Every table below an app cascades from it; deleting table by table (children first) only adds
    the counts. The dedupe records of its calls are keyed by a hash, not the app, and go with the
    maintenance job's pruning after DEDUPE_DAYS.
    """

    def deleted(statement: Any) -> int:
        return int(getattr(session.execute(statement), "rowcount", 0) or 0)

    rows = {
        "memberships": deleted(
            delete(Membership).where(
                Membership.company_id.in_(select(Company.id).where(Company.app_id == app.id))
            )
        )
    }
    for table in reversed(Base.metadata.sorted_tables):
        if table.name != App.__tablename__ and "app_id" in table.c:
            rows[str(table.name)] = deleted(table.delete().where(table.c.app_id == app.id))
    session.execute(delete(App).where(App.id == app.id))
    return dict(sorted(rows.items()))


CAP_COLUMNS = {
    "user_attributes": "max_user_attributes",
    "company_attributes": "max_company_attributes",
    "event_names": "max_event_names",
    "event_attributes": "max_event_attributes",
    "budget": "definition_budget",
}
"""An app's caps and budget by the names operators give them, and their columns of `apps`."""


def set_caps(session: Session, app: App, changes: dict[str, int | None]) -> None:
    """Change the app's caps and budget named in `changes` (CAP_COLUMNS' names); a budget of None
    is the workers' DEFINITION_BUDGET. Each is 0 to CAP_MAX. Names already defined past a lowered
    cap stay; only new ones are refused."""
    for name, value in changes.items():
        if name not in CAP_COLUMNS:
            raise TenancyError(f"{name!r} is not a cap: use one of {', '.join(CAP_COLUMNS)}")
        if value is None and name != "budget":
            raise TenancyError(f"the {name} cap needs a number")
        if value is not None and not 0 <= value <= CAP_MAX:
            raise TenancyError(f"a cap or budget is 0 to {CAP_MAX}, got {value}")
        setattr(app, CAP_COLUMNS[name], value)
    session.flush()


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    api_key: str
    """The secret: shown once, never stored."""


KEY_SCOPES = ("write", "read")
"""What a key may do: `write` keys (public in browsers) send calls to the receiver, `read` keys read
profiles through the read API. A key has one scope, so a leaked write key reads nothing."""

KEY_LABEL_MAX = 200
"""The longest key label (the column's width)."""


def create_key(
    session: Session, app: App, label: str | None = None, scope: str = "write"
) -> NewKey:
    """A new key of the app with its scope, and an optional label saying what it is for."""
    if scope not in KEY_SCOPES:
        raise TenancyError(f"a key's scope is one of {', '.join(KEY_SCOPES)}")
    if label is not None:
        label = label.strip()
        if not label or len(label) > KEY_LABEL_MAX:
            raise TenancyError(f"a key label is 1 to {KEY_LABEL_MAX} characters")
    secret = KEY_PREFIX + secrets.token_urlsafe(24)
    key = ApiKey(
        id="key_" + secrets.token_hex(8),
        app_id=app.id,
        key_hash=hash_key(secret),
        prefix=secret[:10],
        label=label,
        scope=scope,
    )
    session.add(key)
    session.flush()
    return NewKey(key_id=key.id, api_key=secret)


def revoke_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise TenancyError(f"no API key with id {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def add_domain(session: Session, app: App, host: str) -> str:
    host = normalize_host(host)
    if not valid_domain_entry(host):
        raise TenancyError(
            f"{host!r} is not a host name, an IP address or *. plus at least two labels"
        )
    exists = session.scalar(
        select(TrustedDomain.id).where(TrustedDomain.app_id == app.id, TrustedDomain.host == host)
    )
    if exists is None:
        session.add(TrustedDomain(app_id=app.id, host=host))
        session.flush()
    return host


def remove_domain(session: Session, app: App, host: str) -> tuple[str, bool]:
    """Stop trusting `host`: the host as stored, and whether it was trusted until now."""
    host = normalize_host(host)
    domain = session.scalar(
        select(TrustedDomain).where(TrustedDomain.app_id == app.id, TrustedDomain.host == host)
    )
    if domain is None:
        return host, False
    session.delete(domain)
    return host, True


@dataclass(frozen=True, slots=True)
class AuthView:
    """What the receiver needs to know about one key: read-only, cached for a few seconds."""

    key_id: str
    key_hash: str
    app_id: int
    revoked: bool
    webhook_secret: str | None
    domains: tuple[str, ...]
    app_name: str = ""
    scope: str = "write"


def load_auth_view(session: Session, key_hash: str) -> AuthView | None:
    """The key with this hash, its app's webhook secret and trusted domains; None if unknown."""
    row = session.execute(
        select(
            ApiKey.id,
            ApiKey.key_hash,
            ApiKey.app_id,
            ApiKey.revoked_at,
            ApiKey.scope,
            App.webhook_secret,
            App.name,
        )
        .join(App, App.id == ApiKey.app_id)
        .where(ApiKey.key_hash == key_hash)
    ).first()
    if row is None:
        return None
    domains = session.scalars(
        select(TrustedDomain.host)
        .where(TrustedDomain.app_id == row.app_id)
        .order_by(TrustedDomain.host)
    ).all()
    revoked_at: datetime | None = row.revoked_at
    return AuthView(
        key_id=row.id,
        key_hash=row.key_hash,
        app_id=row.app_id,
        revoked=revoked_at is not None,
        webhook_secret=row.webhook_secret,
        domains=tuple(domains),
        app_name=row.name,
        scope=row.scope,
    )


def host_matches(host: str, trusted: tuple[str, ...] | list[str]) -> bool:
    """Exact entries match themselves; `*.example.com` matches sub-domains, not example.com."""
    host = normalize_host(host)
    for entry in trusted:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False
